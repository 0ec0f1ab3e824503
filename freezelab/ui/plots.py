"""Figures of the method: deviation trace and law, gains and cut, benefit vs cost, an oracle sweep, lens
heatmap, and the pipeline of the method with the steps a chapter covers.

Each function draws on `ax` (a new figure when None) and returns the Figure; none calls plt.show.
`glue(...)` stores the numbers the chapters' prose quotes. `book_style()` sets what every notebook figure uses: 150 dpi and fonts that stay legible when a
figure of at most 8 inches is shown at the book's column width.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from freezelab.errors import FreezelabError
from freezelab.method.gains import Gains
from freezelab.method.law import Law, _as_curve
from freezelab.method.plan import Plan


DPI = 150
MAX_WIDTH = 8.0  # inches: wider figures are shrunk to the column width until their text is illegible

# The method's steps (book/method.md) and the steps each chapter notebook covers.
PIPELINE = ("trace", "deviation", "law", "gains", "plan", "cost", "evaluation")
CHAPTER_STEPS = {1: (1,), 2: (1, 2), 3: (2,), 4: (3, 4), 5: (5, 6), 6: (6,), 7: (7,)}


def book_style() -> None:
    """Matplotlib settings of the book's figures: 150 dpi, 11-point text."""
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 11,
                         "axes.titlesize": 12, "legend.fontsize": 10})


def glue(**values) -> None:
    """Store each value under its name for the book's prose (`{glue:text}`name``, myst-nb's glue), so the
    chapters quote their stored outputs instead of typing numbers. Without myst-nb (it comes with the
    book's tools, not with Colab's install cell) there is no book to read them: nothing is stored."""
    try:
        from myst_nb import glue as store
    except ImportError:
        return
    for name, value in values.items():  # numpy scalars as Python numbers: `{glue:text}`key:.2f`` parses their text
        store(name, value.item() if isinstance(value, np.generic) else value, display=False)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def plot_deviation(deviation, law: Law | None = None, ax: Axes | None = None) -> Figure:
    """Deviation d_l over latent spaces l = 0..L, mean ± standard error band, fitted law dashed.

    The y axis is in the lens's unit (`Deviation.units`): nats, or 1 - cosine for the cosine lens.
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
    ax.set(xlabel="latent space l", ylabel=f"deviation d_l ({getattr(deviation, 'units', 'nats')})")
    ax.legend()
    return fig


def plot_gains(gains: Gains, plan: Plan | None = None, ax: Axes | None = None) -> Figure:
    """Observed, expected and excess gain (nats) of blocks 1..L as grouped bars; frozen blocks shaded."""
    L = gains.excess.size
    fig, ax = _axes(ax, (MAX_WIDTH, 4))
    blocks = np.arange(1, L + 1)
    width = 0.28
    for i, name in enumerate(("observed", "expected", "excess")):
        ax.bar(blocks + (i - 1) * width, getattr(gains, name), width, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    if plan is not None:
        k = plan.cut
        ax.axvspan(0.5, k + 0.5, color="grey", alpha=0.15, label=f"frozen: blocks 1..{k}")
        ax.axvline(k + 0.5, color="red", linestyle=":", label=f"cut after block k* = {k} ({plan.rule})")
    ticks = blocks if L <= 16 else np.r_[1, blocks[1::2]]  # every other block when there are many
    ax.set(xlabel="block l", ylabel="gain (nats)", xticks=ticks)
    ax.legend(fontsize="small", ncols=2)
    return fig


def plot_benefit_cost(plan: Plan, ax: Axes | None = None) -> Figure:
    """Predicted benefit ratio vs cost ratio of every cut, recomputed and cached; the chosen cut starred."""
    if not plan.curve:
        raise FreezelabError("this plan has no benefit curve (made without gains); build it with plan(gains)")
    fig, ax = _axes(ax, (6, 4))
    benefit = [c.benefit_ratio for c in plan.curve]
    ax.plot([c.cost_ratio for c in plan.curve], benefit, "o-", label="cost ratio")
    ax.plot([c.cost_ratio_cached for c in plan.curve], benefit, "s--", label="cost ratio, frozen prefix cached")
    chosen = plan.curve[plan.cut]
    ax.scatter(
        [chosen.cost_ratio, chosen.cost_ratio_cached],
        [chosen.benefit_ratio] * 2,
        marker="*",
        s=250,
        color="red",
        zorder=3,
        label=f"chosen cut k* = {plan.cut}",
    )
    if plan.budget is not None:
        ax.axvline(plan.budget, color="black", linestyle=":", label=f"budget {plan.budget:g}")
    ax.set(xlabel="cost ratio vs full fine-tuning", ylabel="predicted benefit ratio")
    ax.set(xlim=(0, 1.05), ylim=(0, 1.05))
    ax.legend()
    return fig


def plot_sweep(sweep: dict, ax: Axes | None = None) -> Figure:
    """An oracle sweep (`sweep.json` as a dict): held-out loss (nats) of every cut and baseline against its
    modelled cost ratio, the plan's cut starred, the loss before fine-tuning dotted; legend under the axes."""
    fig, ax = _axes(ax, (MAX_WIDTH, 5))
    cuts = sweep["cuts"]
    ax.plot([c["cost_ratio"] for c in cuts], [c["loss"] for c in cuts], "o-", color="0.4", label="cut k (oracle sweep)")
    for c in cuts:
        ax.annotate(str(c["cut"]), (c["cost_ratio"], c["loss"]), textcoords="offset points", xytext=(3, 3),
                    fontsize="small")
    for i, (name, s) in enumerate(sweep["strategies"].items()):
        star = name == "semantic-plan"
        ax.scatter(s["cost_ratio"], s["loss"], marker="*" if star else "s", s=160 if star else 50, zorder=3,
                   label=name, color=plt.cm.tab10(i % 10))
    ax.axhline(sweep["loss_before"], ls=":", color="black", label="before fine-tuning")
    ax.set(xlabel="cost ratio (modelled step cost / full fine-tuning)", ylabel="held-out loss (nats)",
           title=f"{sweep['model']} on {sweep['dataset']}: {sweep['steps']} steps, seed {sweep['seed']}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3)
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
    fig, ax = _axes(ax, (min(MAX_WIDTH, 1.2 * k + 2), 0.32 * n + 1.5))
    image = ax.imshow(probs, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
    for (i, j), p in np.ndenumerate(probs):
        ax.text(j, i, tokens[i][j], ha="center", va="center", fontsize=10, parse_math=False,
                color=text_colour(image.cmap(image.norm(p))))
    fig.colorbar(image, ax=ax, label="probability")
    ax.set(xlabel="rank", ylabel="latent space l", xticks=range(k), xticklabels=range(1, k + 1), yticks=range(n))
    return fig


def text_colour(rgba) -> str:
    """Black or white, whichever reads better on the colour `rgba`: black when its relative luminance
    (WCAG 2: linearised sRGB, weights 0.2126, 0.7152, 0.0722) is above 0.179, where the two contrasts are equal."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.179 else "white"


def plot_pipeline(chapter: int | None = None, ax: Axes | None = None) -> Figure:
    """The method's seven steps as a row of boxes; with `chapter`, its steps (CHAPTER_STEPS) are
    highlighted and marked "you are here"."""
    if chapter is not None and chapter not in CHAPTER_STEPS:
        raise FreezelabError(f"no chapter {chapter}: chapters are {', '.join(map(str, CHAPTER_STEPS))}")
    here = CHAPTER_STEPS.get(chapter, ())
    fig, ax = _axes(ax, (MAX_WIDTH, 1.5))
    for i, name in enumerate(PIPELINE, start=1):
        x = i - 1
        colour = "tab:orange" if i in here else ("whitesmoke" if here else "lightsteelblue")
        ax.add_patch(plt.Rectangle((x + 0.06, 0), 0.88, 1, facecolor=colour, edgecolor="black",
                                   linewidth=1.5 if i in here else 0.8))
        ax.text(x + 0.5, 0.5, f"{i}\n{name}", ha="center", va="center", fontsize=10,
                fontweight="bold" if i in here else "normal")
        if i < len(PIPELINE):
            ax.annotate("", xy=(x + 1.06, 0.5), xytext=(x + 0.94, 0.5), arrowprops={"arrowstyle": "->"})
    if here:
        ax.annotate("you are here", xy=(np.mean(here) - 0.5, 1.02), xytext=(np.mean(here) - 0.5, 1.45),
                    ha="center", fontsize=10, color="tab:red", arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.set(xlim=(0, len(PIPELINE)), ylim=(-0.05, 1.7 if here else 1.05))
    ax.set_axis_off()
    return fig
