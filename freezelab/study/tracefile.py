"""What a rule reads, stored beside each sweep: `trace.npz`, so that a rule written later is scored
on every stored oracle without loading a model.

Arrays of `trace.npz`:
- `deviation/<lens variant>`: (n_calib, L+1) float32, d_0..d_L of every calibration example
  through that lens (`stored_lenses`: the sweep's LENS_VARIANTS, and every option combination of
  the `virtual` lens where it is registered);
- `cost`: (L,) float64, the cost ratio of cut k = 0..L-1 as the sweep prices it (cached: blocks
  below the cut read from the latent cache; the ratio the rules' budgets are read against);
- `num_layers`: () int, L;
- `lenses`: (n_lenses,) str, the lens variants stored, in order.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freezelab.errors import FreezelabError
from freezelab.io import atomic_write
from freezelab.method import lens as lenses
from freezelab.method.lens import deviation
from freezelab.method.trace import Trace
from freezelab.model.models import LoadedModel

# the sweep's lens variants: name -> (lens, restrict to the label rows)
LENS_VARIANTS = {"logit-labels": ("logit", True), "logit-full": ("logit", False),
                 "cosine": ("cosine", True), "kl": ("kl", False)}


def stored_lenses() -> dict[str, tuple[str, bool | None]]:
    """Every lens variant a trace file stores: name -> (lens spec, restrict; None = the lens's default)."""
    out: dict[str, tuple[str, bool | None]] = dict(LENS_VARIANTS)
    if "virtual" in lenses.LENSES:  # every option combination, so that choosing among them needs no model
        entry = lenses.LENSES["virtual"]
        for values in itertools.product(*entry.options.values()):
            spec = lenses.lens_spec(entry, dict(zip(entry.options, values)))
            out[spec] = (spec, None)
    return out


def trace_deviations(trace: Trace, lm: LoadedModel) -> dict[str, np.ndarray]:
    """d_0..d_L per example, (n, L+1) float32, of every stored lens variant (on a text task too: each
    lens reads the next token as its target)."""
    return {name: deviation(trace, lm, lens=spec, restrict_to_labels=restrict).per_example.astype(np.float32)
            for name, (spec, restrict) in stored_lenses().items()}


@dataclass(frozen=True)
class StoredTrace:
    """One sweep's `trace.npz` read back: what a rule `rule(t) -> cut` may read."""

    num_layers: int
    deviation: dict[str, np.ndarray]  # lens variant -> (n_calib, L+1)
    cost: np.ndarray  # (L,) cost ratio of cut k = 0..L-1 (cached)

    @property
    def lenses(self) -> list[str]:
        return list(self.deviation)


def write_trace(path: str | Path, deviations: dict[str, np.ndarray], cost: np.ndarray, num_layers: int) -> None:
    """Store `deviations` (lens variant -> (n, L+1)) and the cached cost ratio of every cut (L,) as `path`."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape != (num_layers,) or any(d.shape[1] != num_layers + 1 for d in deviations.values()):
        raise FreezelabError(f"a trace file needs cost (L,) and deviations (n, L+1) for L = {num_layers}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"deviation/{name}": d for name, d in deviations.items()}, cost=cost,
                        num_layers=np.int64(num_layers), lenses=np.array(list(deviations), dtype=str))
    atomic_write(path, buffer.getvalue())


def load_trace(path: str | Path) -> StoredTrace:
    """A stored `trace.npz` (`write_trace`)."""
    with np.load(path) as z:
        return StoredTrace(int(z["num_layers"]), {str(n): z[f"deviation/{n}"] for n in z["lenses"]},
                           z["cost"])
