"""Each plot returns a Figure with the artists it promises (Agg backend, nothing shown)."""

import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from freezelab.errors import FreezelabError  # noqa: E402
from freezelab.method.gains import layer_gains  # noqa: E402
from freezelab.method.law import fit_scaling_law  # noqa: E402
from freezelab.method.plan import Plan, plan  # noqa: E402
from freezelab.ui.plots import plot_benefit_cost, plot_deviation, plot_gains, plot_lens_heatmap  # noqa: E402

L = 8


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def deviation():
    rng = np.random.default_rng(0)
    l = np.arange(L + 1)
    per_example = 1 + 5 * (l + 1.0) ** -0.7 + rng.normal(0, 0.3, (20, L + 1))
    return types.SimpleNamespace(lens="logit", mean=per_example.mean(axis=0), per_example=per_example)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_deviation_with_band_and_law(deviation):
    law = fit_scaling_law(deviation)
    fig = plot_deviation(deviation, law)
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert len(ax.lines) == 2 and ax.lines[1].get_linestyle() == "--"
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1
    assert any("R²" in t and f"{law.r2:.2f}" in t for t in legend_texts(ax))
    assert ax.get_ylabel() == "deviation d_l (nats)"


def test_plot_deviation_labels_the_cosine_lens_without_nats(deviation):
    from freezelab.method.lens import LENSES

    cosine = types.SimpleNamespace(**{**vars(deviation), "lens": "cosine", "units": LENSES["cosine"].units})
    assert plot_deviation(cosine).axes[0].get_ylabel() == "deviation d_l (1 - cosine)"
    assert plot_deviation(deviation).axes[0].get_ylabel() == "deviation d_l (nats)"


def test_plot_deviation_plain_array_on_given_axes():
    fig, ax = plt.subplots()
    assert plot_deviation(np.linspace(5, 1, L + 1), ax=ax) is fig
    assert len(ax.lines) == 1 and not ax.collections


def test_plot_gains_bars_and_cut(deviation):
    gains = layer_gains(deviation, fit_scaling_law(deviation))
    chosen = plan(gains)
    fig = plot_gains(gains, chosen)
    ax = fig.axes[0]
    assert sum(len(c) for c in ax.containers) == 3 * L
    assert any(f"k* = {chosen.cut}" in t for t in legend_texts(ax))
    assert len(ax.patches) == 3 * L + 1  # bars + frozen region
    assert sum(len(c) for c in plot_gains(gains).axes[0].containers) == 3 * L


def test_plot_benefit_cost_marks_cut_and_budget(deviation):
    gains = layer_gains(deviation, fit_scaling_law(deviation))
    chosen = plan(gains, rule="budget", budget=0.7)
    ax = plot_benefit_cost(chosen).axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) == L]
    assert len(curves) == 2
    assert any("budget" in t for t in legend_texts(ax))
    star = ax.collections[0].get_offsets()
    np.testing.assert_allclose(star[0], [chosen.cost_ratio, chosen.curve[chosen.cut].benefit_ratio])


def test_plot_benefit_cost_needs_a_curve():
    with pytest.raises(FreezelabError, match="curve"):
        plot_benefit_cost(Plan.from_cut(L, 2))


def test_plot_lens_heatmap_annotates_every_cell():
    k = 3
    tokens = [[f"t{l}_{j}" for j in range(k)] for l in range(L + 1)]
    tokens[0][0] = "$x$"  # mathtext must not be parsed
    probs = np.random.default_rng(0).dirichlet(np.ones(k), L + 1)
    fig = plot_lens_heatmap(tokens, probs)
    fig.canvas.draw()
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert len(fig.axes[0].texts) == (L + 1) * k and "$x$" in texts and f"t{L}_2" in texts
    assert fig.axes[0].images[0].get_array().shape == (L + 1, k)


def test_plot_lens_heatmap_labels_contrast_with_their_cell():
    from matplotlib.colors import to_rgb

    probs = np.array([[0.0, 0.3, 0.5, 0.7, 0.95, 1.0]])  # dark purple .. teal .. green .. yellow
    fig = plot_lens_heatmap([[f"t{j}" for j in range(6)]], probs)
    colours = [t.get_color() for t in fig.axes[0].texts]
    assert colours == ["white", "white", "black", "black", "black", "black"]
    cmap = fig.axes[0].images[0].cmap
    for p, colour in zip(probs[0], colours):  # WCAG contrast ratio of label on cell: at least 4.5 (AA)
        lum = [sum(w * (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
                   for w, c in zip((0.2126, 0.7152, 0.0722), rgb)) for rgb in (cmap(float(p))[:3], to_rgb(colour))]
        assert (max(lum) + 0.05) / (min(lum) + 0.05) >= 4.5, (p, colour)


def test_plot_sweep_keeps_its_legend_legible_and_under_the_axes():
    from freezelab.ui.plots import plot_sweep

    cuts = [{"cut": k, "cost_ratio": 1 - k / L, "loss": 0.5 + 0.01 * k} for k in range(L)]
    strategies = {name: {"cost_ratio": 0.1 * i, "loss": 0.6} for i, name in enumerate(["semantic-plan", "top25", "lora"])}
    fig = plot_sweep({"cuts": cuts, "strategies": strategies, "loss_before": 1.0, "model": "m", "dataset": "d",
                      "steps": 3, "seed": 0})
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cut k (oracle sweep)", "semantic-plan", "top25", "lora",
                                                          "before fine-tuning"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 10  # points: legible at the column width
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 < ax.get_window_extent(renderer).y0  # below the plot
    assert len(ax.texts) == L  # every cut labelled


def test_plot_lens_heatmap_shape_mismatch_errors():
    with pytest.raises(FreezelabError, match="one list of k strings"):
        plot_lens_heatmap([["a", "b"]] * 3, np.ones((3, 3)) / 3)


def test_pipeline_marks_each_chapter():
    from freezelab.errors import FreezelabError
    from freezelab.ui.plots import CHAPTER_STEPS, PIPELINE, plot_pipeline

    assert len(PIPELINE) == 7 and set(CHAPTER_STEPS) == set(range(1, 8))
    assert sorted({s for steps in CHAPTER_STEPS.values() for s in steps}) == list(range(1, 8))
    plain = plot_pipeline()
    texts = [t.get_text() for t in plain.axes[0].texts]
    assert all(any(name in t for t in texts) for name in PIPELINE) and "you are here" not in texts
    marked = plot_pipeline(4)
    assert "you are here" in [t.get_text() for t in marked.axes[0].texts]
    with pytest.raises(FreezelabError, match="no chapter 9"):
        plot_pipeline(9)
    plt.close("all")


def test_book_style_and_committed_pipeline_figures():
    from pathlib import Path

    from matplotlib.image import imread

    from freezelab.ui.plots import CHAPTER_STEPS, DPI, MAX_WIDTH, book_style

    book_style()
    assert plt.rcParams["figure.dpi"] >= 150 and plt.rcParams["savefig.dpi"] >= 150
    folder = Path(__file__).resolve().parents[1] / "notebooks" / "figures"
    for name in ["pipeline.png", *(f"pipeline_{c:02d}.png" for c in CHAPTER_STEPS)]:
        width = imread(folder / name).shape[1]
        assert width >= 0.9 * MAX_WIDTH * DPI, f"{name}: {width} px wide, drawn below {DPI} dpi"


def test_study_figure_titles_stay_inside_the_png(monkeypatch, tmp_path):
    """A long model x data set name wraps instead of running past the figure's edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from freezelab.study.figures import figure_retrace, figure_training

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    run = {"cut": 3, "train_losses": list(np.linspace(1, 0.2, 20)), "deviation_after": list(np.linspace(5, 0, L + 1))}
    sweep = {"model": "a-model-with-a-rather-long-name-135m", "dataset": "my-own-labelled-data-set.tsv", "seed": 0,
             "chosen_cut": 3, "cuts": [run], "strategies": {}, "deviation": list(np.linspace(6, 1, L + 1))}
    figure_training([sweep], tmp_path / "t.png")
    figure_retrace({"knee_cut": 3}, [sweep], tmp_path / "r.png")
    assert len(saved) == 2
    for fig in saved:
        canvas = FigureCanvasAgg(fig)  # closed figures lose their canvas
        canvas.draw()
        title = fig.axes[0].title
        box = title.get_window_extent(canvas.get_renderer())
        assert "\n" in title.get_text() and 0 <= box.x0 and box.x1 <= fig.bbox.width
