"""Step 2: the deviation d_0..d_L of each latent space from the target, read through a lens.

Every lens reads N(h_l) through `LoadedModel.finish` (the final norm and, on OPT, the projection
after it): exactly the state the head reads in training, so at l = L a lens reads what the model says.
The lenses are a registry (`LENSES`, like the strategies' `STRATEGIES`); a lens with options is
named `name:option=value,...` (e.g. `virtual:distance=euclidean`), unnamed options take their defaults.
- `logit`: cross-entropy of softmax(W N(h_l)) at y (nats); restricted to the label tokens by default.
- `cosine`: 1 - cos(N(h_l), s_y), s_y the semantic basis of y (unitless, in [0, 2]).
- `kl`: KL(p_L || p_l) (nats), label-free: distance to the model's own final prediction, over the
  whole vocabulary by default (restricting it to the label tokens is an option).
- `virtual`: distance from N(h_l) to a virtual point moving in a straight line from the input
  token's embedding row to the target's semantic basis (`freezelab.method.virtual`).
Every lens reads y, the label word or (on a text task) the next token, so every lens applies to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from freezelab.errors import FreezelabError
from freezelab.method.basis import semantic_basis_columns
from freezelab.method.trace import Trace
from freezelab.method.virtual import VIRTUAL_OPTIONS, virtual_lens
from freezelab.model.models import LoadedModel

# what a lens function gets: the model, the trace, N(h) (n, L+1, d), whether to restrict to the
# label rows, the lens's options; it returns d_l per example and latent space, (n, L+1) float32 on CPU
LensFunction = Callable[[LoadedModel, Trace, torch.Tensor, bool, dict], torch.Tensor]


@dataclass(frozen=True)
class Lens:
    """One entry of the registry: how d_l is read, in which unit, and what it needs."""

    name: str
    description: str
    units: str  # what d_l is measured in
    restrict_by_default: bool  # the softmax over the label rows only, unless told otherwise
    read: LensFunction
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # option -> values, first = default
    units_by_distance: dict[str, str] = field(default_factory=dict)  # units when a `distance` option sets them

    def unit(self, options: dict[str, str]) -> str:
        return self.units_by_distance.get(options.get("distance", ""), self.units)


@dataclass
class Deviation:
    """Per-example and mean deviation of the L+1 latent spaces."""

    lens: str  # the lens's name, with all its options when it has any (`lens_spec`)
    restrict_to_labels: bool
    per_example: np.ndarray  # (n, L+1)
    mean: np.ndarray  # (L+1,)
    units: str = "nats"

    @property
    def sem(self) -> np.ndarray:
        """(L+1,) standard error of the mean over examples."""
        n = self.per_example.shape[0]
        return self.per_example.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(self.mean)

    def to_dict(self) -> dict:
        return {"lens": self.lens, "restrict_to_labels": self.restrict_to_labels,
                "mean": self.mean.tolist(), "sem": self.sem.tolist()}


def parse_lens(spec: str) -> tuple[Lens, dict[str, str]]:
    """`name` or `name:option=value,...` -> (the registered lens, every option with its value)."""
    name, _, rest = spec.partition(":")
    if name not in LENSES:
        raise FreezelabError(f"unknown lens '{spec}': choose one of {', '.join(LENSES)}")
    lens = LENSES[name]
    options = {k: v[0] for k, v in lens.options.items()}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in lens.options or value not in lens.options[key]:
            known = "; ".join(f"{k}={'|'.join(v)}" for k, v in lens.options.items()) or "none"
            raise FreezelabError(f"lens '{name}' has no option '{item}' (options: {known})")
        options[key] = value
    return lens, options


def lens_spec(lens: Lens, options: dict[str, str]) -> str:
    """The full name of a lens with `options`, every option spelled out in the registry's order, so
    that a stored name keeps its meaning when a default changes (`virtual:distance=cosine,...`)."""
    return lens.name + "".join(f"{':' if i == 0 else ','}{k}={options[k]}" for i, k in enumerate(lens.options))


def check_lens(spec: str) -> None:
    parse_lens(spec)


def normed(lm: LoadedModel, trace: Trace, chunk: int = 4096) -> torch.Tensor:
    """N(h_l) for every example and latent space through `lm.finish`: (n, L+1, d') float32, d' the head's width."""
    h = trace.hidden.reshape(-1, trace.hidden.shape[-1])
    with torch.inference_mode():
        out = [lm.finish(part.to(lm.device, lm.dtype)).float().cpu() for part in h.split(chunk)]
    return torch.cat(out).reshape(*trace.hidden.shape[:2], -1)


def lens_log_probs(lm: LoadedModel, hn: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """log softmax(W N(h)) over `rows` (or the whole vocabulary): (..., len(rows) or V)."""
    with torch.inference_mode():
        logits = lm.unembed(hn.to(lm.device), None if rows is None else rows.to(lm.device))
        return F.log_softmax(logits.float(), -1).cpu()


def deviation(trace: Trace, lm: LoadedModel, lens: str = "logit",
              restrict_to_labels: bool | None = None) -> Deviation:
    """d_l per example and on average, for l = 0..L (see the module docstring for each lens).

    `lens` is a registered name, optionally with options (`parse_lens`). `restrict_to_labels` None
    means the lens's default: True for `logit`, False for `kl` (label-free)."""
    entry, options = parse_lens(lens)
    if restrict_to_labels is None:
        restrict_to_labels = entry.restrict_by_default
    restrict = restrict_to_labels and trace.label_ids is not None
    per_example = entry.read(lm, trace, normed(lm, trace), restrict, options).double().numpy()
    if not np.isfinite(per_example).all():
        raise FreezelabError("the deviation has NaN or infinite values: check the model's dtype "
                             "(try --dtype fp32) and the inputs")
    return Deviation(lens_spec(entry, options), restrict, per_example, per_example.mean(0), entry.unit(options))


def _cosine(lm: LoadedModel, trace: Trace, hn: torch.Tensor, restrict: bool, options: dict) -> torch.Tensor:
    ids, inverse = trace.targets.unique(return_inverse=True)
    s_y = semantic_basis_columns(lm, ids)[inverse]  # (n, d)
    return 1 - F.cosine_similarity(hn, s_y[:, None, :], dim=-1)


def _logit(lm: LoadedModel, trace: Trace, hn: torch.Tensor, restrict: bool, options: dict) -> torch.Tensor:
    return _softmax_lens(lm, trace, hn, restrict, "logit")


def _kl(lm: LoadedModel, trace: Trace, hn: torch.Tensor, restrict: bool, options: dict) -> torch.Tensor:
    return _softmax_lens(lm, trace, hn, restrict, "kl")


def _softmax_lens(lm: LoadedModel, trace: Trace, hn: torch.Tensor, restrict: bool, lens: str,
                  chunk: int = 2**25) -> torch.Tensor:
    """d_l of the `logit` or `kl` lens for every example and latent space: (n, L+1) float32 on CPU.

    Computed on the model's device, several latent spaces per matrix product (at most `chunk`
    log-probabilities at once); only the (n, L+1) result is copied back."""
    n, layers = hn.shape[:2]
    rows = trace.label_ids.to(lm.device) if restrict else None
    # target column: the class index among the label rows, or the token id in the vocabulary
    y = (trace.labels if restrict else trace.targets).to(lm.device)
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


def _virtual(lm: LoadedModel, trace: Trace, hn: torch.Tensor, restrict: bool, options: dict) -> torch.Tensor:
    return virtual_lens(lm, trace, hn, **options)


LENSES: dict[str, Lens] = {
    entry.name: entry
    for entry in (
        Lens("logit", "cross-entropy of softmax(W N(h_l)) at the target (label words only by default)",
             "nats", True, _logit),
        Lens("cosine", "1 - cos(N(h_l), s_y), s_y the target's semantic basis (a column of pinv(W))",
             "1 - cosine", True, _cosine),
        Lens("kl", "KL(p_L || p_l): distance to the model's own final prediction (label-free)",
             "nats", False, _kl),
        Lens("virtual", "distance from N(h_l) to the virtual transition: a straight line from the input "
             "token's embedding row (l = 0) to the target's semantic basis (l = L; the label's, or on a text "
             "task the next token's), as the authors' code builds it",
             "distance to the virtual point", True, _virtual, dict(VIRTUAL_OPTIONS),
             {"cosine": "1 - cosine", "euclidean": "Euclidean distance"}),
    )
}


def describe_lenses() -> list[tuple[str, str]]:
    """(usage, description) of every registered lens, for the CLI's help and the docs."""
    return [(entry.name + ("[:" + ",".join(f"{k}={'|'.join(v)}" for k, v in entry.options.items()) + "]"
                           if entry.options else ""), entry.description) for entry in LENSES.values()]


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
