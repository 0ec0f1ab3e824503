"""Step 6 of METHOD.md: what a freezing plan costs, from shapes (never timings).

Convention: a matrix product costs 2 FLOPs per multiply-add; a backward pass costs twice its
forward (input gradients + weight gradients, one forward each). Biases, norms, activations and the
softmax are ignored. The reference, "full fine-tuning", trains every block and the LM head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn
from transformers.pytorch_utils import Conv1D

# AdamW keeps exp_avg and exp_avg_sq per trainable parameter, plus its gradient: 3 fp32 tensors.
ADAMW_BYTES_PER_PARAM = 3 * 4


def _text_config(config):
    """The language model's part of an HF config (itself unless the model is multimodal)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_width(config) -> int:
    """Query heads * head dimension of an HF config (hidden_size unless the config sets head_dim)."""
    config = _text_config(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_attention_heads * head_dim


def block_flops(block: nn.Module, seq_len: int, attention_width: int) -> float:
    """Forward FLOPs of one dense transformer block on one sequence of `seq_len` tokens.

    2 * (weights of every nn.Linear / Conv1D inside) * seq_len for the projections, plus
    2 * 2 * seq_len**2 * attention_width for the attention scores (QK^T) and the weighted values,
    counted over the full square (no discount for the causal mask or sliding windows).
    """
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, (nn.Linear, Conv1D)))
    return float(2 * weights * seq_len + 4 * seq_len**2 * attention_width)


def head_flops(lm_head: nn.Module, seq_len: int, label_rows: int | None = None) -> float:
    """Forward FLOPs of the LM head (weight V x d) per sequence.

    2 * d * V * seq_len for a full language-model loss over every position; with `label_rows`,
    2 * d * label_rows at the prediction position only (classification over the label tokens' rows).
    """
    vocab, d = lm_head.weight.shape
    return float(2 * d * label_rows if label_rows is not None else 2 * d * vocab * seq_len)


def step_flops(
    block_flops: Sequence[float], head_flops: float, trained: Iterable[int], head_trained: bool,
    weight_grads: bool = True,
) -> tuple[float, float]:
    """FLOPs of one training step on one sequence: (recomputing every block, reusing cached frozen prefix).

    `block_flops` are the forward FLOPs F_1..F_L, `trained` the 0-based trained blocks (any subset).
    Backward runs from the head down to the lowest trained block m: input gradients for blocks >= m,
    weight gradients for trained blocks, and for the head its input gradient (plus its weight
    gradient when `head_trained`). For a suffix k+1..L this is sum F + 2 * sum_{l>k} F_l + head;
    with the frozen prefix's outputs cached, the forward of blocks below m drops out.
    `weight_grads=False` (LoRA): the trained blocks' base weights get no gradient; the adapters'
    own FLOPs (rank r << d) are neglected.
    """
    F = np.asarray(block_flops, dtype=float)
    trained = sorted(set(trained))
    lowest = trained[0] if trained else F.size
    backward = F[lowest:].sum() + weight_grads * F[trained].sum() + head_flops * (bool(trained) + head_trained)
    return float(F.sum() + head_flops + backward), float(F[lowest:].sum() + head_flops + backward)


def cost_ratios(
    block_flops: Sequence[float], head_flops: float, head_trained: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, ratio_cached), each (L,): cost vs full fine-tuning of every cut k = 0..L-1 (blocks k+1..L trained).

    Full fine-tuning trains every block and the head, so cut 0 has ratio 1 when `head_trained`, and
    slightly less otherwise (the head's weight gradient is saved).
    """
    L = len(block_flops)
    full, _ = step_flops(block_flops, head_flops, range(L), True)
    steps = np.array([step_flops(block_flops, head_flops, range(k, L), head_trained) for k in range(L)])
    return steps[:, 0] / full, steps[:, 1] / full


def _unique_numel(modules: Iterable[nn.Module]) -> int:
    """Parameters of `modules`, each shared tensor counted once."""
    params = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in params.values())


def _model_flops(lm, seq_len: int, label_rows: int | None) -> tuple[list[float], float]:
    width = attention_width(lm.model.config)
    return [block_flops(b, seq_len, width) for b in lm.blocks], head_flops(lm.lm_head, seq_len, label_rows)


def _head_trained(lm, plan) -> bool:
    """Whether the head weight gets gradients: it follows the embedding when tied."""
    return not plan.freeze_embeddings if lm.tied else plan.train_head


@dataclass(frozen=True)
class Cost:
    """Cost of one optimizer step of a plan (`batch` sequences of `seq_len` tokens) and its memory."""

    flops_full: float  # full fine-tuning (every block and the head trained), FLOPs
    flops_step: float  # the plan, every block's forward recomputed, FLOPs
    flops_step_cached: float  # the plan, frozen prefix outputs cached and reused, FLOPs
    cost_ratio: float  # flops_step / flops_full
    cost_ratio_cached: float  # flops_step_cached / flops_full
    trainable_params: int
    total_params: int
    trainable_share: float  # trainable_params / total_params
    optimizer_state_bytes: int  # AdamW exp_avg + exp_avg_sq + gradient, fp32, per trainable parameter
    activation_bytes: float  # activations stored for backward by the trained blocks

    def to_dict(self) -> dict:
        return asdict(self)


def cost(lm, plan, seq_len: int, batch: int, label_rows: int | None = None) -> Cost:
    """FLOPs and memory of training `plan` on the loaded model `lm`.

    A LoRA plan (`plan.extras["lora"]`) trains the adapters instead of the blocks' weights.
    Trainable parameters: the trained blocks, the final norm (`plan.train_final_norm`), the
    embeddings (unless `plan.freeze_embeddings`) and the head (`plan.train_head`, untied heads only).
    Activation memory follows Korthikanti et al. (2022): seq_len * batch * h * (34 + 5 * a * seq_len / h)
    bytes per trained block in 16-bit (h hidden size, a heads), scaled by the model's dtype size / 2.
    """
    F, H = _model_flops(lm, seq_len, label_rows)
    full, _ = step_flops(F, H, range(len(F)), True)
    lora = bool(plan.extras.get("lora"))
    step, step_cached = step_flops(F, H, plan.trained, _head_trained(lm, plan), weight_grads=not lora)
    modules = [] if lora else [lm.blocks[i] for i in plan.trained]
    modules += [lm.final_norm] if plan.train_final_norm else []
    modules += [] if plan.freeze_embeddings else list(lm.embeddings)
    modules += [lm.lm_head] if plan.train_head and not lm.tied else []
    trainable, total = _unique_numel(modules), _unique_numel([lm.model])
    if lora:  # only the adapters inside the trained blocks (0 until they are injected)
        trainable += sum(p.numel() for i in plan.trained
                         for n, p in lm.blocks[i].named_parameters() if "lora_" in n)
    config = _text_config(lm.model.config)
    h, a = config.hidden_size, config.num_attention_heads
    dtype_bytes = next(lm.model.parameters()).element_size()
    per_block = seq_len * batch * h * (34 + 5 * a * seq_len / h) * dtype_bytes / 2
    return Cost(
        flops_full=full * batch,
        flops_step=step * batch,
        flops_step_cached=step_cached * batch,
        cost_ratio=step / full,
        cost_ratio_cached=step_cached / full,
        trainable_params=trainable,
        total_params=total,
        trainable_share=trainable / total,
        optimizer_state_bytes=ADAMW_BYTES_PER_PARAM * trainable,
        activation_bytes=per_block * len(plan.trained),
    )


def cut_cost_curve(
    lm, seq_len: int, label_rows: int | None = None, head_trained: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, ratio_cached) of every cut k = 0..L-1 on `lm`, each (L,), for `plan(cost_curve=...)`."""
    F, H = _model_flops(lm, seq_len, label_rows)
    return cost_ratios(F, H, head_trained)
