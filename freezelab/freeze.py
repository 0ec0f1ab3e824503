"""Freezing per plan, and running only the trainable suffix on cached frozen-prefix activations.

Truncated backward: every parameter of the embeddings and frozen blocks has requires_grad=False
and the inputs are integer ids, so autograd records nothing below the first trained block: the
frozen prefix runs as if under torch.no_grad() and none of its activations are kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .encode import Batch
from .errors import FreezelabError
from .models import LoadedModel
from .plan import Plan


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
    embeddings). A LoRA plan (`extras["lora"]`) trains only the adapter weights inside its blocks.
    """
    check_plan(lm, plan)
    blocks = lm.blocks
    lora = bool(plan.extras.get("lora"))
    if lora and not any("lora_" in n for i in plan.trained for n, _ in blocks[i].named_parameters()):
        raise FreezelabError("the plan asks for LoRA but its trained blocks hold no adapters: "
                             "call freezelab.lora.ensure_lora(lm, plan) first (finetune does)")
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


class _Stop(Exception):
    pass


def block_inputs(lm: LoadedModel, batch: Batch, k: int) -> torch.Tensor:
    """The input of block k+1 (0-based: `blocks[k]`), i.e. h_k, for the whole batch: (B, T, d).

    Runs embeddings and blocks 0..k-1 only (the forward stops there)."""
    got: list[torch.Tensor] = []

    def pre(_module, args, kwargs):
        got.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = lm.blocks[k].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            lm.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0]


@contextlib.contextmanager
def from_cache(lm: LoadedModel, k: int, h_k: torch.Tensor) -> Iterator[None]:
    """While active, a backbone forward skips blocks 0..k-1 and feeds `h_k` (B, T, d) to block k.

    The embeddings still run (a lookup), so masks and positions are built exactly as usual."""
    blocks = lm.blocks
    for b in blocks[:k]:
        b.forward = lambda *args, **kwargs: args[0] if args else kwargs["hidden_states"]

    def pre(_module, args, kwargs):
        return ((h_k, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h_k})

    handle = blocks[k].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for b in blocks[:k]:
            del b.forward


@dataclass
class PrefixCache:
    """h_k of each example, computed once and reused every epoch; in memory up to `max_bytes`,
    then on disk under `directory` (if given), else recomputed when needed."""

    k: int
    max_bytes: int = 2 * 1024**3
    directory: Path | None = None

    def __post_init__(self) -> None:
        self._mem: dict[int, torch.Tensor] = {}
        self._bytes = 0
        self.hits = self.misses = 0
        if self.directory is not None:
            self.directory = Path(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, i: int) -> Path:
        return self.directory / f"h{self.k}_{i}.pt"

    def _get(self, i: int) -> torch.Tensor | None:
        if i in self._mem:
            return self._mem[i]
        if self.directory is not None and self._path(i).exists():
            return torch.load(self._path(i))
        return None

    def _put(self, i: int, h: torch.Tensor) -> None:
        size = h.numel() * h.element_size()
        if self._bytes + size <= self.max_bytes:
            self._mem[i] = h
            self._bytes += size
        elif self.directory is not None:
            tmp = self._path(i).with_suffix(".tmp")
            torch.save(h, tmp)
            tmp.replace(self._path(i))

    def states(self, lm: LoadedModel, batch: Batch, index: list[int]) -> torch.Tensor:
        """(B, T, d) h_k for the batch whose rows are examples `index` (right-padded like `batch`)."""
        found = [self._get(i) for i in index]
        if any(h is None for h in found):
            self.misses += 1
            fresh = block_inputs(lm, batch, self.k)
            lengths = batch.attention_mask.sum(1).tolist()
            for row, (i, n) in enumerate(zip(index, lengths)):
                self._put(i, fresh[row, :n].detach().clone())
            return fresh
        self.hits += 1
        out = torch.zeros(len(index), batch.input_ids.shape[1], found[0].shape[-1],
                          dtype=found[0].dtype, device=batch.input_ids.device)
        for row, h in enumerate(found):
            out[row, : h.shape[0]] = h.to(out.device)
        return out


def cut_of(plan: Plan) -> int:
    """k such that blocks 0..k-1 are frozen and k..L-1 trained; FreezelabError if not contiguous."""
    k = min(plan.trained) if plan.trained else plan.num_layers
    if plan.frozen != list(range(k)):
        raise FreezelabError("the prefix cache needs a contiguous plan (frozen blocks 0..k-1)")
    return k
