"""Figures of the method: deviation trace and law, gains and cut, benefit vs cost, lens heatmap.

Each function draws on `ax` (a new figure when None) and returns the Figure; none calls plt.show.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .deviation import UNITS
from .errors import FreezelabError
from .gains import Gains
from .law import Law, _as_curve
from .plan import Plan


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def plot_deviation(deviation, law: Law | None = None, ax: Axes | None = None) -> Figure:
    """Deviation d_l over latent spaces l = 0..L, mean ± standard error band, fitted law dashed.

    The y axis is in the lens's unit (`deviation.UNITS`): nats, or 1 - cosine for the cosine lens.
    """
    d = _as_curve(deviation)
    fig, ax = _axes(ax, (7, 4))
    l = np.arange(d.size)
    ax.plot(l, d, "o-", label=f"deviation ({getattr(deviation, 'lens', 'trace')})")
    per_example = getattr(deviation, "per_example", None)
    if per_example is not None and len(per_example) > 1:
        se = np.std(per_example, axis=0, ddof=1) / np.sqrt(len(per_example))
        ax.fill_between(l, d - se, d + se, alpha=0.25, label="± standard error")
    if law is not None:
        grid = np.linspace(law.first_layer, d.size - 1, 200)
        depth = "l" if law.offset == 0 else f"(l+{law.offset:g})"
        label = f"law: {law.E:.2f} + {law.A:.2f}·{depth}^-{law.alpha:.2f}, R² = {law.r2:.2f}"
        ax.plot(grid, law(grid), "--", label=label)
    unit = UNITS.get(getattr(deviation, "lens", "logit"), "nats")
    ax.set(xlabel="latent space l", ylabel=f"deviation d_l ({unit})")
    ax.legend()
    return fig


def plot_gains(gains: Gains, plan: Plan | None = None, ax: Axes | None = None) -> Figure:
    """Observed, expected and excess gain (nats) of blocks 1..L as grouped bars; frozen blocks shaded."""
    L = gains.excess.size
    fig, ax = _axes(ax, (max(7, 0.35 * L), 4))
    blocks = np.arange(1, L + 1)
    width = 0.28
    for i, name in enumerate(("observed", "expected", "excess")):
        ax.bar(blocks + (i - 1) * width, getattr(gains, name), width, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    if plan is not None:
        k = plan.chosen_layer
        ax.axvspan(0.5, k + 0.5, color="grey", alpha=0.15, label=f"frozen: blocks 1..{k}")
        ax.axvline(k + 0.5, color="red", linestyle=":", label=f"cut after block k* = {k} ({plan.rule})")
    ax.set(xlabel="block l", ylabel="gain (nats)", xticks=blocks)
    ax.legend()
    return fig


def plot_benefit_cost(plan: Plan, ax: Axes | None = None) -> Figure:
    """Predicted benefit ratio vs cost ratio of every cut, recomputed and cached; the chosen cut starred."""
    if not plan.curve:
        raise FreezelabError("this plan has no benefit curve (made without gains); build it with plan(gains)")
    fig, ax = _axes(ax, (6, 4))
    benefit = [c.benefit_ratio for c in plan.curve]
    ax.plot([c.cost_ratio for c in plan.curve], benefit, "o-", label="cost ratio")
    ax.plot([c.cost_ratio_cached for c in plan.curve], benefit, "s--", label="cost ratio, frozen prefix cached")
    chosen = plan.curve[plan.chosen_layer]
    ax.scatter(
        [chosen.cost_ratio, chosen.cost_ratio_cached],
        [chosen.benefit_ratio] * 2,
        marker="*",
        s=250,
        color="red",
        zorder=3,
        label=f"chosen cut k* = {plan.chosen_layer}",
    )
    if plan.budget is not None:
        ax.axvline(plan.budget, color="black", linestyle=":", label=f"budget {plan.budget:g}")
    ax.set(xlabel="cost ratio vs full fine-tuning", ylabel="predicted benefit ratio")
    ax.set(xlim=(0, 1.05), ylim=(0, 1.05))
    ax.legend()
    return fig


def plot_lens_heatmap(tokens: list[list[str]], probs: np.ndarray, ax: Axes | None = None) -> Figure:
    """Top-k tokens of a lens per latent space: `probs` (L+1, k) as colour, `tokens` (L+1 lists of k) as text."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or [len(row) for row in tokens] != [probs.shape[1]] * probs.shape[0]:
        raise FreezelabError(
            "tokens must hold one list of k strings per latent space, matching probs of shape (L+1, k); "
            f"got probs of shape {probs.shape} and token rows of lengths {[len(row) for row in tokens]}"
        )
    n, k = probs.shape
    fig, ax = _axes(ax, (1.3 * k + 2, 0.3 * n + 1.5))
    image = ax.imshow(probs, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
    for (i, j), p in np.ndenumerate(probs):
        ax.text(j, i, tokens[i][j], ha="center", va="center", fontsize=8, parse_math=False,
                color="black" if p > 0.5 else "white")
    fig.colorbar(image, ax=ax, label="probability")
    ax.set(xlabel="rank", ylabel="latent space l", xticks=range(k), xticklabels=range(1, k + 1), yticks=range(n))
    return fig
