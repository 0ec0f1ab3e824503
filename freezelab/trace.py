"""Step 1: the transition trace h_0..h_L of the latent representation at the prediction position.

Hooks read the input of block 1 (h_0, the embedding output) and the output of every block
(h_1..h_L, raw residual stream, before the final norm N) and keep only the prediction position,
so memory never grows with sequence length and the LM head is never run.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .data import Example, Task
from .encode import Batch, Encoded, batches, encode
from .models import LoadedModel


@dataclass
class Trace:
    """Prediction-position hidden states of n examples in the L+1 latent spaces."""

    hidden: torch.Tensor  # (n, L+1, d), float32 on CPU; hidden[:, l] = h_l
    targets: torch.Tensor  # (n,) target token y
    label_ids: torch.Tensor | None  # (C,) label token ids (classification) or None
    labels: torch.Tensor | None  # (n,) class index or None
    seconds: float  # wall time of the forward passes

    @property
    def num_layers(self) -> int:
        return self.hidden.shape[1] - 1

    def subset(self, index: Sequence[int]) -> "Trace":
        """The trace of examples `index` only."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return Trace(self.hidden[idx], self.targets[idx], self.label_ids,
                     None if self.labels is None else self.labels[idx], self.seconds)


def _hidden(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def record(lm: LoadedModel, positions: list[torch.Tensor], out: list[torch.Tensor]) -> Iterator[None]:
    """While active, each forward appends (B, L+1, d) prediction-position states to `out`.

    `positions[0]` must hold the (B,) prediction positions of the batch about to run.
    """
    states: list[torch.Tensor] = []

    def grab(h: torch.Tensor) -> None:
        states.append(h[torch.arange(h.shape[0], device=h.device), positions[0]].float().cpu())

    def pre(_module, args, kwargs):
        states.clear()
        grab(args[0] if args else kwargs["hidden_states"])

    def post(_module, _args, output):
        grab(_hidden(output))
        if len(states) == lm.num_layers + 1:
            out.append(torch.stack(states, 1))

    blocks = lm.blocks
    handles = [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [b.register_forward_hook(post) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_backbone(lm: LoadedModel, batch: Batch) -> torch.Tensor:
    """The backbone's last hidden state N(h_L) for a batch: (B, T, d)."""
    return lm.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       use_cache=False).last_hidden_state


def trace_encoded(lm: LoadedModel, enc: Encoded, batch_size: int = 16, progress: bool = True) -> Trace:
    """`trace` on already-encoded examples."""
    start = time.perf_counter()
    positions: list[torch.Tensor] = [torch.empty(0)]
    out: list[torch.Tensor] = []
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    with torch.inference_mode(), record(lm, positions, out):
        for batch in tqdm(list(batches(enc, batch_size, pad, lm.device)), desc="trace",
                          disable=not progress, leave=False):
            positions[0] = batch.positions
            run_backbone(lm, batch)
    return Trace(torch.cat(out), enc.targets, enc.label_ids, enc.labels, time.perf_counter() - start)


def trace(lm: LoadedModel, task: Task, examples: Sequence[Example], batch_size: int = 16,
          max_length: int = 256, first_token: bool = False, progress: bool = True) -> Trace:
    """One forward pass per batch over `examples`; returns h_0..h_L at each prediction position."""
    enc = encode(lm.tokenizer, task, examples, max_length=max_length, first_token=first_token)
    return trace_encoded(lm, enc, batch_size=batch_size, progress=progress)
