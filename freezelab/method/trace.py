"""Step 1: the transition trace h_0..h_L of the latent representation at the prediction position.

h_0 is the embedding output (the input of block 1), h_1..h_L each block's output (raw residual
stream, before the final norm N), read by running the blocks one by one (`LoadedModel.run_blocks`);
only the prediction position is kept, so memory never grows with the number of examples' tokens
and the LM head is never run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from freezelab.errors import FreezelabError
from freezelab.model.data import Example, Task
from freezelab.model.encode import Batch, Encoded, batches, encode
from freezelab.model.models import LoadedModel


@dataclass
class Trace:
    """Prediction-position hidden states of n examples in the L+1 latent spaces."""

    hidden: torch.Tensor  # (n, L+1, d), float32 on CPU; hidden[:, l] = h_l
    targets: torch.Tensor  # (n,) target token y
    label_ids: torch.Tensor | None  # (C,) label token ids (classification) or None
    labels: torch.Tensor | None  # (n,) class index or None
    seconds: float  # wall time of the forward passes
    prompts: list[list[int]] | None = None  # token ids of each prompt (the last one is at the prediction position)

    @property
    def num_layers(self) -> int:
        return self.hidden.shape[1] - 1

    def subset(self, index: Sequence[int]) -> "Trace":
        """The trace of examples `index` only."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return Trace(self.hidden[idx], self.targets[idx], self.label_ids,
                     None if self.labels is None else self.labels[idx], self.seconds,
                     None if self.prompts is None else [self.prompts[i] for i in idx.tolist()])


def run_backbone(lm: LoadedModel, batch: Batch) -> torch.Tensor:
    """The backbone's last hidden state N(h_L) for a batch: (B, T, d)."""
    return lm.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       use_cache=False).last_hidden_state


def latent_states(lm: LoadedModel, batch: Batch, h: torch.Tensor | None = None, start: int = 0,
                  stop: int | None = None, last_only: bool = False) -> list[torch.Tensor]:
    """The latent states [h_start, ..., h_stop] of a batch (raw residual stream, before N), the one
    place where they are built (trace, cache and re-trace alike); N(h) is `LoadedModel.finish`.

    `h` is h_start (B, T, d); None embeds the token ids (then `start` must be 0). Each state is
    (B, T, d), or (B, d) at the prediction positions only with `last_only`."""
    if h is None:
        if start != 0:
            raise FreezelabError(f"latent states from block {start} need h_{start}; only h_0 is embedded")
        h = lm.embed(batch.input_ids, batch.attention_mask)
    rows = torch.arange(len(batch.positions), device=h.device)
    select = (lambda x: x[rows, batch.positions.to(h.device)]) if last_only else None
    return lm.run_blocks(h, batch.attention_mask.to(h.device), start, stop, keep=True, select=select)


def trace_encoded(lm: LoadedModel, enc: Encoded, batch_size: int = 16, progress: bool = True) -> Trace:
    """`trace` on already-encoded examples.

    Per batch: `latent_states` at the prediction positions, gathered on the device and copied to
    the CPU once (no sync per block)."""
    start = time.perf_counter()
    out: list[torch.Tensor] = []
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    with torch.inference_mode():
        for batch in tqdm(batches(enc, batch_size, pad, lm.device), total=-(-len(enc) // batch_size),
                          desc="trace", disable=not progress, leave=False):
            out.append(torch.stack(latent_states(lm, batch, last_only=True), 1).float().cpu())
    return Trace(torch.cat(out), enc.targets, enc.label_ids, enc.labels, time.perf_counter() - start, enc.prompts)


def trace(lm: LoadedModel, task: Task, examples: Sequence[Example], batch_size: int = 16,
          max_length: int = 256, first_token: bool = False, progress: bool = True) -> Trace:
    """One forward pass per batch over `examples`; returns h_0..h_L at each prediction position."""
    enc = encode(lm.tokenizer, task, examples, max_length=max_length, first_token=first_token)
    return trace_encoded(lm, enc, batch_size=batch_size, progress=progress)
