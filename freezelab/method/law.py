"""Step 4 of the method (book/method.md): the generic decay of deviation with depth.

A saturating power law dhat(l) = E + A * (l + offset) ** (-alpha), with E, A, alpha >= 0, fitted by
robust least squares to the deviation trace d_0..d_L (nats). It is what a smoothly scaled model
would show; the blocks that beat it are doing task-specific work (see `gains.py`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.optimize import least_squares

from freezelab.errors import FreezelabError

LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")


BOUND_TOLERANCE = 1e-4  # a parameter within this share of the trace's range (alpha: absolute) of 0 is on its bound


class BoundWarning(UserWarning):
    """The fitted law has a parameter on its bound (E, A or alpha = 0)."""


class LowFitWarning(UserWarning):
    """The law explains little of the trace (R^2 below `min_r2`): the excess gains are mostly noise."""


def _as_curve(x) -> np.ndarray:
    """The mean deviation d_0..d_L (nats, shape (L+1,)) of a `Deviation` or of a plain array-like."""
    mean = getattr(x, "mean", x)
    d = np.asarray(x if callable(mean) else mean, dtype=float)  # arrays and tensors have a .mean() method
    if d.ndim != 1:
        raise FreezelabError(
            f"a deviation trace must be 1-D with one value per latent space (L+1,), got shape {d.shape}; "
            "pass Deviation.mean or average the per-example traces over axis 0"
        )
    bad = np.flatnonzero(~np.isfinite(d))
    if bad.size:
        raise FreezelabError(
            f"the deviation trace has NaN/inf at latent spaces {bad.tolist()}; check the calibration "
            "examples (empty prompts, targets outside the label set) and recompute the trace"
        )
    return d


@dataclass(frozen=True)
class Law:
    """dhat(l) = E + A * (l + offset) ** (-alpha) in nats, fitted over latent spaces first_layer..L."""

    E: float
    A: float
    alpha: float
    offset: float  # 0 when the fit starts at l = 1; 1 when l = 0 is included (keeps dhat(0) finite)
    first_layer: int  # first latent space used by the fit
    r2: float  # coefficient of determination over the fitted points
    at_bound: tuple[str, ...] = ()  # parameters the fit pushed onto their bound (E = 0, alpha = 0 ...)

    def __call__(self, l) -> np.ndarray:
        """dhat at latent spaces `l` (any shape), nats. Infinite at l = 0 when offset = 0 and A > 0."""
        t = np.asarray(l, dtype=float) + self.offset
        if self.A == 0:
            return np.full_like(t, self.E)
        with np.errstate(divide="ignore"):
            return self.E + self.A * t ** (-self.alpha)

    def to_dict(self) -> dict:
        return {**asdict(self), "at_bound": list(self.at_bound)}  # JSON has lists, not tuples

    @classmethod
    def from_dict(cls, d: dict) -> Law:
        missing = [f.name for f in fields(cls) if f.name not in d and f.name != "at_bound"]
        if missing:
            raise FreezelabError(f"a saved law needs the keys {missing}; save it with Law.to_dict()")
        return cls(**{f.name: tuple(d[f.name]) if f.name == "at_bound" else d[f.name]
                      for f in fields(cls) if f.name in d})


def _noise_scale(y: np.ndarray) -> float:
    """Robust noise level of a trace (nats): MAD of successive differences / sqrt(2), at least 1% of its range."""
    diff = np.diff(y)
    mad = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2)
    return float(max(mad, 0.01 * np.ptp(y)))


def fit_scaling_law(
    deviation, include_embedding: bool = False, loss: str = "soft_l1", min_r2: float = 0.5
) -> Law:
    """Fit dhat(l) = E + A * (l + offset) ** (-alpha) to d_l, l = 1..L (or 0..L with `include_embedding`).

    `deviation` is a `Deviation` or an array-like (L+1,) in nats; L >= 3 blocks are needed. `loss` is a
    `scipy.optimize.least_squares` loss; its f_scale is the trace's robust noise level, so points
    further from the law than the noise are down-weighted. The best of three starts (alpha = 0.3, 1, 3)
    is kept. A flat trace (all fitted points equal) gives E = d, A = 0, alpha = 0 and r2 = 1: the
    constant reproduces it exactly and every expected gain is zero. Warns `LowFitWarning` when
    r2 < min_r2.
    """
    if loss not in LOSSES:
        raise FreezelabError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    d = _as_curve(deviation)
    L = d.size - 1
    if L < 3:
        raise FreezelabError(
            f"the scaling law has 3 parameters and needs a trace over at least 3 blocks, got L = {L}; "
            "use a deeper model, or choose the cut by hand with Plan.from_cut"
        )
    first = 0 if include_embedding else 1
    offset = float(1 - first)
    t = np.arange(first, L + 1) + offset
    y = d[first:]
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return Law(E=float(y[0]), A=0.0, alpha=0.0, offset=offset, first_layer=first, r2=1.0)

    def residuals(p: np.ndarray) -> np.ndarray:
        E, A, alpha = p
        return E + A * t ** (-alpha) - y

    E0 = max(float(y.min()), 0.0)
    A0 = max(float(y[0]) - E0, 1e-3)
    fits = [
        least_squares(
            residuals, x0=[E0, A0, alpha0], bounds=(0.0, np.inf), loss=loss, f_scale=_noise_scale(y)
        )
        for alpha0 in (0.3, 1.0, 3.0)
    ]
    E, A, alpha = min(fits, key=lambda f: f.cost).x
    r2 = 1.0 - float(np.sum(residuals(np.array([E, A, alpha])) ** 2) / np.sum((y - y.mean()) ** 2))
    if r2 < min_r2:
        warnings.warn(
            f"the scaling law explains only R^2 = {r2:.2f} of the deviation trace (< min_r2 = {min_r2}): "
            "the trace is noisy and the excess gains are mostly noise; use more calibration examples "
            "or a smoother lens before trusting the plan",
            LowFitWarning,
            stacklevel=2,
        )
    scale = max(float(np.ptp(y)), 1e-12)
    at_bound = tuple(name for name, value in (("E", E), ("A", A), ("alpha", alpha))
                     if value <= BOUND_TOLERANCE * (scale if name != "alpha" else 1.0))
    if at_bound:
        warnings.warn(
            f"the law fit sits on the bound of {', '.join(n + ' = 0' for n in at_bound)}: the law is "
            "degenerate there (with E = 0 it decays to zero; with alpha or A = 0 it is flat and every "
            "expected gain is zero, so the excess gain is just the observed gain)",
            BoundWarning, stacklevel=2)
    return Law(E=float(E), A=float(A), alpha=float(alpha), offset=offset, first_layer=first, r2=r2,
               at_bound=at_bound)
