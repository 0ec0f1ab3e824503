"""Freezing per plan (which parameters get gradients).

Truncated backward: every parameter of the embeddings and frozen blocks has requires_grad=False
and the inputs are integer ids, so autograd records nothing below the first trained block: the
frozen prefix runs as if under torch.no_grad() and none of its activations are kept.
"""

from __future__ import annotations

from freezelab.errors import FreezelabError
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan


def check_plan(lm: LoadedModel, plan: Plan) -> None:
    """A FreezelabError unless `plan` fits `lm` (same depth, indices in range, a partition)."""
    L = lm.num_layers
    if plan.num_layers != L:
        model = plan.extras.get("model", "another model")
        raise FreezelabError(f"the plan was made for {plan.num_layers} blocks ({model}) but "
                             f"'{lm.name}' has {L}: make a plan for this model")
    bad = [i for i in plan.frozen + plan.trained if not 0 <= i < L]
    if bad:
        raise FreezelabError(f"block indices {bad} are out of range 0..{L - 1}")
    if sorted(plan.frozen + plan.trained) != list(range(L)):
        raise FreezelabError("frozen and trained blocks must partition 0..L-1 (each block exactly once)")
    if not plan.trained and not plan.train_final_norm and not plan.train_head:
        raise FreezelabError("the plan trains nothing")


def freeze(lm: LoadedModel, plan: Plan) -> int:
    """Set requires_grad per `plan`; returns the number of trainable parameters.

    Trained: the plan's blocks, the final norm (if `train_final_norm`), the embeddings (unless
    `freeze_embeddings`) and the head (if `train_head` and untied; a tied head follows the
    embeddings). A LoRA plan (`plan.lora`) trains only the adapter weights inside its blocks.
    """
    check_plan(lm, plan)
    blocks = lm.blocks
    lora = plan.lora is not None
    if lora and not any("lora_" in n for i in plan.trained for n, _ in blocks[i].named_parameters()):
        raise FreezelabError("the plan asks for LoRA but its trained blocks hold no adapters: "
                             "call freezelab.train.lora.ensure_lora(lm, plan) first (finetune does)")
    lm.model.requires_grad_(False)
    for i in plan.trained:
        for name, p in blocks[i].named_parameters():
            p.requires_grad_(not lora or "lora_" in name)
    if not plan.freeze_embeddings:
        for e in lm.embeddings:
            e.requires_grad_(True)
    if plan.train_final_norm:
        lm.final_norm.requires_grad_(True)
    if plan.train_head and not lm.tied:
        lm.lm_head.requires_grad_(True)
    return sum(p.numel() for p in lm.model.parameters() if p.requires_grad)


def cut_of(plan: Plan) -> int:
    """k such that blocks 0..k-1 are frozen and k..L-1 trained; FreezelabError if not contiguous."""
    k = min(plan.trained) if plan.trained else plan.num_layers
    if plan.frozen != list(range(k)):
        raise FreezelabError("the prefix cache needs a contiguous plan (frozen blocks 0..k-1)")
    return k
