"""What `freezelab plan` prints and writes: a short table, plan.json, report.md and the figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from freezelab.method.lens import lens_top_tokens  # noqa: E402
from freezelab.model.models import LoadedModel  # noqa: E402
from freezelab.method.pipeline import PlanRun  # noqa: E402
from freezelab.ui.plots import plot_benefit_cost, plot_deviation, plot_gains, plot_lens_heatmap  # noqa: E402

FIGURES = ("deviation.png", "gains.png", "benefit_cost.png", "lens.png")


def table(run: PlanRun) -> str:
    """Per-latent-space deviation and per-block gains, then the plan, cost and fit."""
    p, d, g, law = run.plan, run.deviation.mean, run.gains, run.law
    rows = [f"{'l':>3} {'d_l':>8} {'delta_l':>8} {'expect':>8} {'excess':>8}  block"]
    for l in range(len(d)):
        gain = "" if l == 0 else f"{g.observed[l - 1]:8.3f} {g.expected[l - 1]:8.3f} {g.excess[l - 1]:8.3f}"
        state = "" if l == 0 else ("frozen" if l - 1 in p.frozen else "train")
        mark = "  <- k*" if l == p.cut else ""
        rows.append(f"{l:>3} {d[l]:8.3f} {gain:>26}  {state}{mark}")
    benefit = "n/a" if p.predicted_benefit is None else f"{p.predicted_benefit:.3f} nats"
    rows += [
        "",
        f"plan ({p.rule}{'' if p.budget is None else f', budget {p.budget}'}): freeze embeddings and "
        f"blocks 1..{p.cut}, train blocks {p.cut + 1}..{p.num_layers} "
        f"({len(p.trained)} of {p.num_layers})",
        f"predicted benefit {benefit}; cost ratio {p.cost_ratio:.3f} of full fine-tuning "
        f"({p.cost_ratio_cached:.3f} with the frozen prefix cached); trainable share "
        f"{run.cost.trainable_share:.1%}",
        f"law ({run.deviation.lens} lens): dhat(l) = {law.E:.3f} + {law.A:.3f} (l + {law.offset:g})^-{law.alpha:.3f}, "
        f"R^2 = {law.r2:.2f}",
        f"calibration: {len(run.trace.targets)} examples, {run.seconds:.1f} s",
    ]
    rows += [f"warning: {w}" for w in run.warnings]
    return "\n".join(rows)


def write(run: PlanRun, lm: LoadedModel, out: str | Path) -> Path:
    """Write plan.json, report.md and the PNG figures to `out`; returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run.plan.save(out / "plan.json")
    tokens, probs = lens_top_tokens(lm, run.trace, 0, k=5)
    figures = (plot_deviation(run.deviation, run.law), plot_gains(run.gains, run.plan),
               plot_benefit_cost(run.plan), plot_lens_heatmap(tokens, probs))
    for name, fig in zip(FIGURES, figures):
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
    p = run.plan
    body = [f"# Freeze plan: {p.extras['model']} on {p.extras['dataset']}", "",
            "```", table(run), "```", ""]
    body += [f"![{name[:-4]}]({name})" for name in FIGURES]
    (out / "report.md").write_text("\n".join(body) + "\n")
    return out
