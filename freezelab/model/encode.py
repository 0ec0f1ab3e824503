"""Turning task examples into token ids, a target token y per example, and padded batches.

Classification: the prompt is the templated text, y is the (single) token of the label word.
Language modelling: the prompt is the text minus its last token, y is that last token.
Prompts carry the tokenizer's own special tokens (Gemma's <bos>; SmolLM2 adds none). The
prediction position is the last prompt token; prompts longer than `max_length` keep their BOS and
last tokens (the template's cue, e.g. "Topic:", is never cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from freezelab.model.data import Example, Task
from freezelab.errors import FreezelabError


@dataclass
class Encoded:
    """Token ids of n prompts and their targets."""

    prompts: list[list[int]]  # n lists of token ids (variable length <= max_length)
    targets: torch.Tensor  # (n,) target token id y
    label_ids: torch.Tensor | None  # (C,) token id of each label word; None for LM tasks
    labels: torch.Tensor | None  # (n,) class index into label_ids; None for LM tasks

    def __len__(self) -> int:
        return len(self.prompts)


def encode(tokenizer: Any, task: Task, examples: Sequence[Example], max_length: int = 256,
           first_token: bool = False) -> Encoded:
    """Tokenise `examples` of `task` (see module docstring)."""
    if tokenizer is None:
        raise FreezelabError("this model has no tokenizer (random twins have none): "
                             "use an offline model, a local folder or a hub id")
    if not examples:
        raise FreezelabError(f"no examples to encode for task '{task.name}'")
    if task.kind == "classification":
        label_ids = torch.tensor(task.label_token_ids(tokenizer, first_token=first_token))
        prompts = [_tail(tokenizer, tokenizer(task.prompt(ex)).input_ids, max_length) for ex in examples]
        labels = torch.tensor([ex.label for ex in examples])
        return Encoded(prompts, label_ids[labels], label_ids, labels)
    ids = [tokenizer(ex.text).input_ids for ex in examples]
    if min(len(i) for i in ids) < 2:
        raise FreezelabError("language-modelling examples need at least two tokens each")
    return Encoded([_tail(tokenizer, i[:-1], max_length) for i in ids], torch.tensor([i[-1] for i in ids]),
                   None, None)


def _tail(tokenizer: Any, ids: list[int], max_length: int) -> list[int]:
    """The last `max_length` ids, keeping a leading BOS (models such as Gemma need it)."""
    if len(ids) <= max_length:
        return ids
    head = ids[:1] if tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else []
    return head + ids[len(ids) - max_length + len(head):]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B,) index of the prediction position (last prompt token)
    targets: torch.Tensor  # (B,) target token id
    labels: torch.Tensor | None  # (B,) class index


def collate(enc: Encoded, index: Sequence[int], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Right-pad the prompts `index` of `enc` into one batch on `device`."""
    rows = [enc.prompts[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    idx = torch.as_tensor(list(index), dtype=torch.long)
    return Batch(ids.to(device), mask.to(device), (mask.sum(1) - 1).to(device),
                 enc.targets[idx].to(device), None if enc.labels is None else enc.labels[idx].to(device))


def batches(enc: Encoded, batch_size: int, pad_id: int, device: torch.device | str = "cpu",
            order: Sequence[int] | None = None) -> Iterator[Batch]:
    """Consecutive batches over `order` (default: 0..n-1)."""
    if batch_size < 1:
        raise FreezelabError(f"batch size must be at least 1, got {batch_size}")
    order = list(range(len(enc))) if order is None else list(order)
    for start in range(0, len(order), batch_size):
        yield collate(enc, order[start:start + batch_size], pad_id, device)
