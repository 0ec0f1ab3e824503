"""ipywidgets explorers for the notebooks: move a slider, see the plan or the lens change.

Each explorer returns a widget (display it as a cell's last expression). The view functions they
call (`budget_view`, `lens_table`) are plain functions, usable and testable without a front end.
In a static page (the book) a widget shows the state it was saved in; it moves with a live kernel.
The notebooks show a static fallback under each explorer: the same view for a few states
(`lens_table` over several latent spaces, `budget_view` over several budgets).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from freezelab.method.lens import lens_top_tokens
from freezelab.errors import FreezelabError
from freezelab.method.gains import Gains
from freezelab.method.plan import Plan, plan
from freezelab.ui.plots import plot_benefit_cost


def _widgets():
    try:
        import ipywidgets
    except ImportError:
        raise FreezelabError("the explorers need ipywidgets: pip install 'ipywidgets>=8'") from None
    return ipywidgets


def budget_view(gains: Gains, cost_curve: tuple[np.ndarray, np.ndarray], budget: float,
                cached: bool = False) -> tuple[Plan, str]:
    """The budget-rule plan for `budget` (a share of full fine-tuning) and a one-line description."""
    p = plan(gains, rule="budget", budget=budget, cost_curve=cost_curve, cached=cached)
    ratio = p.cost_ratio_cached if cached else p.cost_ratio
    point = p.curve[p.cut]
    text = (f"budget {budget:.2f}: freeze blocks 1..{p.cut}, train {p.cut + 1}.."
            f"{p.num_layers} ({len(p.trained)} blocks); cost ratio {ratio:.3f}; predicted benefit "
            f"{point.benefit:.3f} nats ({point.benefit_ratio:.0%} of full fine-tuning's)")
    return p, text


def budget_explorer(gains: Gains, cost_curve: tuple[np.ndarray, np.ndarray], budget: float = 0.6,
                    cached: bool = False):
    """A budget slider that moves the budget-rule plan, with its benefit-cost figure."""
    w = _widgets()
    ratios = np.asarray(cost_curve[1] if cached else cost_curve[0])
    low = float(np.ceil(ratios.min() * 100) / 100)
    slider = w.FloatSlider(value=max(low, min(budget, 1.0)), min=low, max=1.0, step=0.01,
                           description="budget", continuous_update=False, readout_format=".2f")
    label, out = w.HTML(), w.Output()

    def update(change=None) -> None:
        p, text = budget_view(gains, cost_curve, slider.value, cached)
        label.value = f"<code>{html.escape(text)}</code>"
        with out:
            out.clear_output(wait=True)
            fig = plot_benefit_cost(p)
            display(fig)
            plt.close(fig)

    from IPython.display import display

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, label, out])


def lens_table(tokens: list[list[str]], probs: np.ndarray, layer: int | Sequence[int]) -> str:
    """HTML table of the top-k lens tokens (and probabilities) in latent space `layer`, one row per
    latent space when `layer` is a sequence (the static fallback of `lens_explorer`)."""
    rows = ""
    for l in ([layer] if isinstance(layer, int) else layer):
        cells = "".join(f"<td style='padding:2px 8px'><code>{html.escape(t)}</code><br>{p:.3f}</td>"
                        for t, p in zip(tokens[l], probs[l]))
        rows += f"<tr><th style='padding:2px 8px'>l = {l}</th>{cells}</tr>"
    return f"<table>{rows}</table>"


def lens_explorer(lm, trace, index: int = 0, k: int = 5, restrict_to_labels: bool = False):
    """Sliders for the example and the latent space l: the logit lens's top-k tokens there."""
    w = _widgets()
    cache: dict[int, tuple[list[list[str]], np.ndarray]] = {}

    def top(i: int):
        if i not in cache:
            cache[i] = lens_top_tokens(lm, trace, i, k=k, restrict_to_labels=restrict_to_labels)
        return cache[i]

    n, L = trace.hidden.shape[0], trace.num_layers
    example = w.IntSlider(value=index, min=0, max=n - 1, description="example", continuous_update=False)
    layer = w.IntSlider(value=L, min=0, max=L, description="latent space", continuous_update=False)
    table = w.HTML()

    def update(change=None) -> None:
        tokens, probs = top(example.value)
        table.value = lens_table(tokens, probs, layer.value)

    example.observe(update, names="value")
    layer.observe(update, names="value")
    update()
    return w.VBox([example, layer, table])
