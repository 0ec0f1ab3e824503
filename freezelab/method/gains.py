"""Steps 3-4 of the method (book/method.md): what each block removes from the deviation, against what the law expects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freezelab.method.law import Law, _as_curve


@dataclass(frozen=True)
class Gains:
    """Per-block gains in nats, each of shape (L,); index l-1 holds block l = 1..L."""

    observed: np.ndarray  # delta_l = d_{l-1} - d_l
    expected: np.ndarray  # deltahat_l = dhat(l-1) - dhat(l)
    excess: np.ndarray  # g_l = delta_l - deltahat_l

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in ("observed", "expected", "excess")}


def layer_gains(deviation, law: Law) -> Gains:
    """Observed, expected and excess gain of every block from a trace d_0..d_L (nats) and a fitted law.

    Latent spaces the law was not fitted on (l < law.first_layer, i.e. l = 0 when the embedding is
    excluded, where dhat(0) is infinite) take the observed d_l in place of dhat(l): then
    deltahat_1 = d_0 - dhat(1) and g_1 = dhat(1) - d_1.
    """
    d = _as_curve(deviation)
    dhat = law(np.arange(d.size))
    dhat[: law.first_layer] = d[: law.first_layer]
    observed = d[:-1] - d[1:]
    expected = dhat[:-1] - dhat[1:]
    return Gains(observed=observed, expected=expected, excess=observed - expected)
