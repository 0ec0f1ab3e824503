"""The oracle sweep: fine-tune every cut (or an even grid) and each baseline with the same data,
steps, lr and seed, then compare what the plan predicted with what training realised.

- realised gain of a run = held-out loss before - after (nats);
- rank agreement = Spearman(predicted benefit, realised gain) across cuts;
- regret = realised loss of the chosen cut - best realised loss among cuts of equal or lower cost.
Each run is stored as soon as it ends (`runs/NAME/result.json`) and skipped when rerun, and
sweep.json is rewritten after every run (`complete` says whether all ran), so an interrupted
sweep loses at most the run in progress.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from .cost import cost
from .data import Split, Task
from .errors import FreezelabError
from .finetune import RunResult, finetune
from .models import LoadedModel, load_model
from .plan import Plan
from .planner import make_plan


@dataclass
class CutResult:
    cut: int  # blocks 1..cut frozen
    cost_ratio: float  # modelled step FLOPs / full fine-tuning (no cache)
    cost_ratio_cached: float
    predicted_benefit: float
    realised_gain: float  # loss_before - loss_after, nats
    loss: float
    acc: float
    step_seconds: float


@dataclass
class SweepResult:
    model: str
    dataset: str
    seed: int
    steps: int
    chosen_cut: int
    cuts: list[CutResult]
    strategies: dict[str, dict] = field(default_factory=dict)  # name -> {acc, loss, cost_ratio, ...}
    spearman: float = float("nan")
    regret: float = float("nan")
    loss_before: float = float("nan")
    acc_before: float = float("nan")
    complete: bool = False  # False while (or if interrupted before) every run has ended

    def to_dict(self) -> dict:
        return asdict(self)


def parse_cuts(spec: str, num_layers: int, chosen: int) -> list[int]:
    """`all` (0..L-1) or `even:N` (N evenly spaced cuts from 0 to L-1), always with 0 and the chosen cut."""
    if spec == "all":
        cuts = range(num_layers)
    elif spec.startswith("even:") and spec[5:].isdigit() and int(spec[5:]) >= 2:
        cuts = np.linspace(0, num_layers - 1, int(spec[5:])).round().astype(int).tolist()
    else:
        raise FreezelabError(f"--cuts must be 'all' or 'even:N' with N >= 2, got '{spec}'")
    return sorted({0, chosen, *cuts})


def regret(cuts: Sequence[CutResult], chosen: int) -> float:
    """Loss of the chosen cut minus the best loss among cuts costing no more (>= 0)."""
    mine = next(c for c in cuts if c.cut == chosen)
    return mine.loss - min(c.loss for c in cuts if c.cost_ratio <= mine.cost_ratio + 1e-12)


def _run(name: str, out: Path | None, train_fn) -> RunResult:
    """Run `train_fn(out_dir)` unless its result is already stored."""
    folder = None if out is None else out / "runs" / name
    if folder is not None and (folder / "result.json").exists():
        return RunResult(**json.loads((folder / "result.json").read_text()))
    return train_fn(folder)


def run_sweep(lm: LoadedModel, task: Task, parts: Split, cuts: str = "even:6", steps: int = 30,
              lr: float = 1e-4, batch_size: int = 8, seed: int = 0, out: str | Path | None = None,
              strategies: Sequence[str] = (), n_train: int | None = None, n_test: int | None = 256,
              max_length: int = 256, first_token: bool = False, lens: str = "logit",
              rule: str = "argmax-excess", progress: bool = True) -> str:
    """Plan, then fine-tune each cut and baseline; writes sweep.json and sweep.png to `out`.

    Returns a printable summary. The model `lm` is only used for planning: every run trains a
    fresh copy loaded by name.
    """
    from .strategies import resolve

    out = None if out is None else Path(out)
    train = parts.train[:n_train] if n_train else parts.train
    test = parts.test[:n_test] if n_test else parts.test
    planned = make_plan(lm, task, parts.calib, lens=lens, rule=rule, max_length=max_length,
                        first_token=first_token, progress=progress)
    chosen = planned.plan
    if out is not None:
        chosen.save(out / "plan.json")
    L = lm.num_layers
    fresh = lambda: load_model(lm.name, device=str(lm.device), dtype=lm.dtype)  # noqa: E731
    common = dict(steps=steps, lr=lr, batch_size=batch_size, seed=seed, max_length=max_length,
                  first_token=first_token, progress=progress, keep_checkpoint=False)

    sweep = SweepResult(lm.name, task.name, seed, steps, chosen.chosen_layer, [])

    def store() -> None:
        """Update the scores and, with `out`, sweep.json and sweep.png after every run."""
        gains = [c.realised_gain for c in sweep.cuts]
        if len({c.predicted_benefit for c in sweep.cuts}) > 1 and len(set(gains)) > 1:
            sweep.spearman = float(spearmanr([c.predicted_benefit for c in sweep.cuts], gains).statistic)
        sweep.regret = regret(sweep.cuts, chosen.chosen_layer)
        if out is not None:
            (out / "sweep.json").write_text(json.dumps(sweep.to_dict(), indent=2))
            _plot(sweep, out / "sweep.png")

    # the chosen cut and full fine-tuning first: an interrupted sweep already compares those two
    grid = parse_cuts(cuts, L, chosen.chosen_layer)
    for k in [chosen.chosen_layer, 0] + [k for k in grid if k not in (0, chosen.chosen_layer)]:
        cut_plan = Plan.from_cut(L, k, rule="cut", curve=chosen.curve)
        r = _run(f"cut{k:02d}", out, lambda folder: finetune(
            fresh(), task, cut_plan, train, test, cache_prefix=k > 0, out=folder,
            strategy=f"cut{k}", **common))
        point = chosen.curve[k]
        sweep.cuts.append(CutResult(k, point.cost_ratio, point.cost_ratio_cached, point.benefit,
                                    r.loss_before - r.loss_after, r.loss_after, r.acc_after, r.step_seconds))
        sweep.cuts.sort(key=lambda c: c.cut)
        sweep.loss_before, sweep.acc_before = r.loss_before, r.acc_before
        if k == chosen.chosen_layer:
            sweep.strategies["semantic-plan"] = {"acc": r.acc_after, "loss": r.loss_after,
                                                 "cost_ratio": point.cost_ratio, "step_seconds": r.step_seconds}
        store()

    label_rows = None if planned.trace.label_ids is None else len(planned.trace.label_ids)  # as the cut curve
    plan_path = Path(tempfile.mkdtemp()) / "plan.json" if out is None else out / "plan.json"
    if out is None:
        chosen.save(plan_path)  # lora-plan reads the plan from a file
    for spec in strategies:
        model = fresh()
        strategy_plan = resolve(spec, model, task=task, calib=parts.calib, seed=seed, steps=steps,
                                plan_path=plan_path, max_length=max_length)
        r = _run(spec.replace(":", "_"), out, lambda folder: finetune(
            model, task, strategy_plan, train, test, out=folder, strategy=spec, **common))
        first = strategy_plan(0) if callable(strategy_plan) else strategy_plan
        ratio = cost(model, first, planned.seq_len, batch_size, label_rows=label_rows).cost_ratio
        sweep.strategies[spec] = {"acc": r.acc_after, "loss": r.loss_after, "cost_ratio": ratio,
                                  "step_seconds": r.step_seconds, "trainable_params": r.trainable_params}
        store()
    sweep.complete = True
    store()
    results = sweep.cuts
    best = min(results, key=lambda c: c.loss)
    mine = next(c for c in results if c.cut == chosen.chosen_layer)
    lines = [f"{'cut':>4} {'cost':>6} {'cached':>6} {'pred':>7} {'gain':>7} {'loss':>7} {'acc':>6}"]
    lines += [f"{c.cut:>4} {c.cost_ratio:6.3f} {c.cost_ratio_cached:6.3f} {c.predicted_benefit:7.3f} "
              f"{c.realised_gain:7.3f} {c.loss:7.3f} {c.acc:6.3f}{'  <- plan' if c.cut == mine.cut else ''}"
              for c in results]
    lines += [f"{name:<14} loss {s['loss']:.3f} acc {s['acc']:.3f} cost ratio {s['cost_ratio']:.3f}"
              for name, s in sweep.strategies.items()]
    lines += [f"before fine-tuning: loss {sweep.loss_before:.3f}, acc {sweep.acc_before:.3f}",
              f"chosen cut {chosen.chosen_layer}; best cut {best.cut}; Spearman(predicted, realised) "
              f"{sweep.spearman:.2f}; regret {sweep.regret:.3f} nats"]
    return "\n".join(lines)


def _plot(sweep: SweepResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [c.cost_ratio for c in sweep.cuts]
    ax.plot(xs, [c.loss for c in sweep.cuts], "o-", color="0.4", label="cut k (oracle sweep)")
    for c in sweep.cuts:
        ax.annotate(str(c.cut), (c.cost_ratio, c.loss), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for i, (name, s) in enumerate(sweep.strategies.items()):
        marker = "*" if name == "semantic-plan" else "s"
        ax.scatter(s["cost_ratio"], s["loss"], marker=marker, s=140 if marker == "*" else 50,
                   zorder=3, label=name, color=plt.cm.tab10(i % 10))
    ax.axhline(sweep.loss_before, ls=":", color="k", label="before fine-tuning")
    ax.set(xlabel="cost ratio (step FLOPs / full fine-tuning)", ylabel="held-out loss (nats)",
           title=f"{sweep.model} on {sweep.dataset}: {sweep.steps} steps, seed {sweep.seed}")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
