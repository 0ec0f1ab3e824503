"""The nominal cost curve: the ledger's prices for L equal blocks and nothing else, in closed form,
for plans made without a model (`method.plan` reads it; it never imports the ledger)."""

from __future__ import annotations

import numpy as np


def nominal_cost_curve(num_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, ratio_cached), each (L,): cut k costs (L + 2 (L - k)) / 3L of full fine-tuning (a forward
    through every block, a backward through the trained ones) and (L - k) / L with its prefix cached.
    `costmodel.ledger.curve(Shape.nominal(L), ...)` prices the same (tested)."""
    L = num_layers
    k = np.arange(L, dtype=float)
    return (L + 2 * (L - k)) / (3 * L), (L - k) / L
