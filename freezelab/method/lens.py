"""Step 2: the deviation d_0..d_L of each latent space from the target, read through a lens.

Every lens first applies the final norm N, so that at l = L it reads exactly what the model says.
- `logit`: cross-entropy of softmax(W N(h_l)) at y (nats); restricted to the label tokens by default.
- `cosine`: 1 - cos(N(h_l), s_y), s_y the semantic basis of y (unitless, in [0, 2]).
- `kl`: KL(p_L || p_l) (nats), label-free: distance to the model's own final prediction, over the
  whole vocabulary by default (restricting it to the label tokens is an option).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from freezelab.method.basis import semantic_basis_columns
from freezelab.errors import FreezelabError
from freezelab.model.models import LoadedModel
from freezelab.method.trace import Trace

LENSES = ("logit", "cosine", "kl")
UNITS = {"logit": "nats", "cosine": "1 - cosine", "kl": "nats"}  # what d_l is measured in


@dataclass
class Deviation:
    """Per-example and mean deviation of the L+1 latent spaces."""

    lens: str
    restrict_to_labels: bool
    per_example: np.ndarray  # (n, L+1)
    mean: np.ndarray  # (L+1,)

    @property
    def sem(self) -> np.ndarray:
        """(L+1,) standard error of the mean over examples."""
        n = self.per_example.shape[0]
        return self.per_example.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(self.mean)

    def to_dict(self) -> dict:
        return {"lens": self.lens, "restrict_to_labels": self.restrict_to_labels,
                "mean": self.mean.tolist(), "sem": self.sem.tolist()}


def check_lens(lens: str) -> None:
    if lens not in LENSES:
        raise FreezelabError(f"unknown lens '{lens}': choose one of {', '.join(LENSES)}")


def normed(lm: LoadedModel, trace: Trace, chunk: int = 4096) -> torch.Tensor:
    """N(h_l) for every example and latent space: (n, L+1, d) float32."""
    h = trace.hidden.reshape(-1, trace.hidden.shape[-1])
    norm = lm.final_norm
    with torch.inference_mode():
        out = [norm(part.to(lm.device, lm.dtype)).float().cpu() for part in h.split(chunk)]
    return torch.cat(out).reshape(trace.hidden.shape)


def lens_log_probs(lm: LoadedModel, hn: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """log softmax(W N(h)) over `rows` (or the whole vocabulary): (..., len(rows) or V)."""
    with torch.inference_mode():
        logits = lm.unembed(hn.to(lm.device), None if rows is None else rows.to(lm.device))
        return F.log_softmax(logits.float(), -1).cpu()


def deviation(trace: Trace, lm: LoadedModel, lens: str = "logit",
              restrict_to_labels: bool | None = None) -> Deviation:
    """d_l per example and on average, for l = 0..L (see the module docstring for each lens).

    `restrict_to_labels` None means the lens's default: True for `logit`, False for `kl` (label-free)."""
    check_lens(lens)
    if restrict_to_labels is None:
        restrict_to_labels = lens != "kl"
    restrict = restrict_to_labels and trace.label_ids is not None
    hn = normed(lm, trace)
    n, layers = hn.shape[:2]
    if lens == "cosine":
        ids, inverse = trace.targets.unique(return_inverse=True)
        s_y = semantic_basis_columns(lm, ids)[inverse]  # (n, d)
        values = 1 - F.cosine_similarity(hn, s_y[:, None, :], dim=-1)
    else:
        rows = trace.label_ids if restrict else None
        # target column: the class index among the label rows, or the token id in the vocabulary
        y = trace.labels if restrict else trace.targets
        values = _lens_values(lm, hn, lens, rows, y)
    per_example = values.double().numpy()
    if not np.isfinite(per_example).all():
        raise FreezelabError("the deviation has NaN or infinite values: check the model's dtype "
                             "(try --dtype fp32) and the inputs")
    return Deviation(lens, restrict, per_example, per_example.mean(0))


def _lens_values(lm: LoadedModel, hn: torch.Tensor, lens: str, rows: torch.Tensor | None, y: torch.Tensor,
                 chunk: int = 2**25) -> torch.Tensor:
    """d_l of the `logit` or `kl` lens for every example and latent space: (n, L+1) float32 on CPU.

    Computed on the model's device, several latent spaces per matrix product (at most `chunk`
    log-probabilities at once); only the (n, L+1) result is copied back."""
    n, layers = hn.shape[:2]
    rows = None if rows is None else rows.to(lm.device)
    y = y.to(lm.device)
    pick = torch.arange(n, device=lm.device)
    with torch.inference_mode():
        final = F.log_softmax(lm.unembed(hn[:, -1].to(lm.device), rows).float(), -1)  # (n, V')
        p_final = final.exp()
        step = max(1, chunk // final.numel())
        out = []
        for start in range(0, layers - 1, step):
            part = hn[:, start:min(start + step, layers - 1)].to(lm.device)
            logp = F.log_softmax(lm.unembed(part, rows).float(), -1)  # (n, c, V')
            out.append(-logp[pick, :, y] if lens == "logit" else (p_final[:, None] * (final[:, None] - logp)).sum(-1))
        out.append(-final[pick, y][:, None] if lens == "logit" else (p_final * (final - final)).sum(-1)[:, None])
        return torch.cat(out, 1).cpu()


def lens_top_tokens(lm: LoadedModel, trace: Trace, index: int, k: int = 5,
                    restrict_to_labels: bool = False) -> tuple[list[list[str]], np.ndarray]:
    """Top-k tokens of the logit lens for example `index` in every latent space.

    Returns (tokens: L+1 lists of k strings, probs: (L+1, k)).
    """
    single = trace.subset([index])
    rows = trace.label_ids if restrict_to_labels and trace.label_ids is not None else None
    probs = lens_log_probs(lm, normed(lm, single)[0], rows).exp()
    top = probs.topk(min(k, probs.shape[-1]), -1)
    ids = top.indices if rows is None else rows[top.indices]
    tokens = [[_visible(lm.tokenizer.decode([int(t)])) for t in layer] for layer in ids]
    return tokens, top.values.numpy()


def _visible(token: str) -> str:
    """Whitespace-only tokens drawn as escapes (newline) and open boxes (space)."""
    return token.replace("\n", "\\n").replace(" ", "\u2423") if not token.strip() else token
