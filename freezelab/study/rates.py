"""Learning rates per family, picked on validation data strictly inside the grid actually used.

A family is what one rate serves: `blocks` (every cut and the block-training baselines), `lora`
(the LoRA baselines) and `full` (full fine-tuning, embeddings trained too). `pick_lr` extends an
edge pick's grid by one step of the 1-3-10 ladder and measures again, so a chosen rate is interior.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from freezelab.io import atomic_write_json

FAMILIES = ("blocks", "lora", "full")  # learning-rate families: block training, LoRA adapters, full fine-tuning
RATE_KEYS = {"blocks": "lr", "lora": "lora_lr", "full": "full_lr"}  # family -> the key of its rate in sweep.json
LR_EXTENSIONS = 4  # most factor-of-3 steps a learning-rate grid is extended by before the pick gives up


def family(spec: str) -> str:
    """The learning-rate family of a run: `full` (embeddings trained too), `lora` (`lora`, `lora-plan`)
    or `blocks` (every cut and the other block-training baselines)."""
    name = spec.split(":")[0]
    return "full" if name == "full" else "lora" if name.startswith("lora") else "blocks"


@dataclass(frozen=True)
class Rates:
    """The AdamW learning rate of each family (`family`)."""

    blocks: float = 1e-4
    lora: float = 1e-3
    full: float = 1e-4

    def of(self, spec: str) -> float:
        """The rate of a run of strategy `spec` (a cut's run: `blocks`)."""
        return getattr(self, family(spec))


def stale(sweep: dict, rates: dict[str, float]) -> list[str]:
    """The families of `rates` ({family: picked rate}) whose rate in `sweep` (sweep.json) differs: their
    runs wait to be trained again at the picked rate."""
    return [f for f, lr in rates.items() if not np.isclose(sweep.get(RATE_KEYS[f]) or np.nan, lr, rtol=1e-9, atol=0)]


def lr_step(lr: float, up: bool) -> float:
    """The next rate above or below `lr` on the ladder 1, 3, 10, 30, ... (a factor of about 3)."""
    mantissa = lr / 10 ** np.floor(np.log10(lr))
    if np.isclose(mantissa, 1):
        factor = 3 if up else 0.3
    elif np.isclose(mantissa, 3):
        factor = 10 / 3 if up else 1 / 3
    else:
        factor = 3 if up else 1 / 3
    return float(f"{lr * factor:.3g}")


def pick_lr(measure: Callable[[float], float], grid: Sequence[float], out: Path | None = None,
            meta: dict | None = None) -> dict:
    """The learning rate of lowest validation loss `measure(lr)` (ties: the lower rate), strictly
    inside the grid actually used: while the best rate is on an edge, the grid is extended by one
    step (`lr_step`) on that side and the new rate measured, at most LR_EXTENSIONS times.

    Returns {"lr", "grid", "val_loss" and "seconds" (per rate), "interior", **meta}, stored as `out`
    (JSON) after every measured rate; rates already measured there are read, not measured again."""
    stored = json.loads(out.read_text()) if out is not None and out.exists() else {}
    losses = {float(k): v for k, v in stored.get("val_loss", {}).items()}
    seconds = {float(k): v for k, v in stored.get("seconds", {}).items()}
    rates = sorted({*map(float, grid), *map(float, stored.get("grid", ())), *losses})

    def result() -> dict:
        best = min((r for r in rates if r in losses), key=lambda r: losses[r])
        return {**stored, **(meta or {}), "lr": best, "grid": rates,
                "val_loss": {repr(r): losses[r] for r in rates if r in losses},
                "seconds": {repr(r): seconds[r] for r in rates if r in seconds},
                "interior": rates[0] < best < rates[-1]}

    for extension in range(LR_EXTENSIONS + 1):
        for lr in rates:
            if lr not in losses:
                t0 = time.perf_counter()
                loss = measure(lr)
                losses[lr], seconds[lr] = loss if np.isfinite(loss) else float("inf"), time.perf_counter() - t0
                if out is not None:
                    atomic_write_json(out, result())
        best = result()
        if best["interior"] or extension == LR_EXTENSIONS:
            break
        rates = sorted({*rates, *(lr_step(best["lr"], up) for up, edge in ((False, rates[0]), (True, rates[-1]))
                                  if best["lr"] == edge)})
    if out is not None:
        atomic_write_json(out, best)
    return best
