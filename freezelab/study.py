"""The reproduction study behind the book's results chapter (`make results`).

For each model x dataset x seed: the oracle sweep with every baseline (`sweep.run_sweep`); per
model x dataset, ablations of the chosen cut over lens, rule and calibration size (planning only).
Writes `summary.json`, `ablations.json`, `summary.md` and figures to `--out`; every run is stored
as it ends, so rerunning resumes. `--scale ci` is a seconds-to-minutes version for tests.

    python -m freezelab.study --scale full --out book/results
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import load_task, split
from .deviation import deviation
from .encode import encode
from .errors import FreezelabError
from .gains import layer_gains
from .law import fit_scaling_law
from .models import load_model
from .plan import plan
from .sweep import run_sweep
from .trace import trace_encoded

LENS_VARIANTS = {"logit-full": ("logit", False), "logit-labels": ("logit", True),
                 "cosine": ("cosine", True), "kl": ("kl", True)}
RULE_VARIANTS = {"argmax-excess": {}, "argmax-raw": {}, "budget": {"budget": 0.5}}
CALIB_SIZES = (32, 64, 128, 256, 512)
MEASURES = ("acc", "loss", "cost_ratio", "cost_ratio_measured", "cost_ratio_measured_blocks")
BUDGET = ("steps", "batch_size", "lr", "n_train", "n_test", "cuts", "max_length")  # what a run's result depends on


@dataclass(frozen=True)
class StudyScale:
    """The fixed training budget of every run and the grid of the study."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    n_train: int
    n_test: int
    cuts: str
    strategies: tuple[str, ...]
    calib_sizes: tuple[int, ...]
    max_length: int


SCALES = {
    "full": StudyScale(("smollm2-135m", "gemma3-270m"), ("bbc-news", "movie-polarity", "kjv"),
                       (0, 1, 2), steps=10, batch_size=8, lr=3e-5, n_train=400, n_test=64,
                       cuts="even:4", strategies=("full", "top25", "random", "gradnorm:8", "lisa:8",
                                                  "lora", "lora-plan"),
                       calib_sizes=CALIB_SIZES, max_length=64),
    "ci": StudyScale(("smollm2-135m",), ("movie-polarity",), (0,), steps=2, batch_size=4, lr=1e-4,
                     n_train=16, n_test=8, cuts="even:2", strategies=("full", "top25"),
                     calib_sizes=(8, 16), max_length=48),
}

KJV_PATH = Path("book/results/data/kjv.txt")  # dumped by `make results` from Debian's bible-kjv


def dataset_spec(name: str) -> str:
    """`kjv` is the King James Bible as a language-modelling task (a file `make results` writes)."""
    if name != "kjv":
        return name
    if not KJV_PATH.exists():
        raise FreezelabError(f"{KJV_PATH} is missing: `make results` dumps it with Debian's bible-kjv "
                             "(apt-get install bible-kjv; bible -f 'gen1:1-rev22:21')")
    return f"text:{KJV_PATH}"


def ablations(model: str, dataset: str, scale: StudyScale, seed: int = 0) -> dict:
    """Chosen cut per lens x rule (largest calibration set) and per calibration size (default lens)."""
    lm = load_model(model)
    task = load_task(dataset_spec(dataset), seed=seed)
    biggest = max(scale.calib_sizes)
    parts = split(task, seed=seed, n_calib=min(biggest, len(task.examples) // 2))
    enc = encode(lm.tokenizer, task, parts.calib, max_length=scale.max_length)
    full_trace = trace_encoded(lm, enc, progress=False)
    out: dict = {"model": model, "dataset": dataset, "lens_rule": {}, "calib_size": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lens_name, (lens, restrict) in LENS_VARIANTS.items():
            dev = deviation(full_trace, lm, lens=lens, restrict_to_labels=restrict)
            law = fit_scaling_law(dev)
            gains = layer_gains(dev, law)
            out["lens_rule"][lens_name] = {"r2": law.r2, **{
                rule: plan(gains, rule=rule, **kw).chosen_layer for rule, kw in RULE_VARIANTS.items()}}
        rng = np.random.default_rng(seed)
        for n in scale.calib_sizes:
            if n > len(enc):
                continue
            cuts = []
            for _ in range(5):  # five resamples of n calibration examples
                idx = rng.choice(len(enc), n, replace=False)
                sub = full_trace.subset(idx.tolist())
                dev = deviation(sub, lm)
                cuts.append(plan(layer_gains(dev, fit_scaling_law(dev))).chosen_layer)
            out["calib_size"][str(n)] = cuts
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """Mean and spread over seeds of each model x dataset's sweeps."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        grouped.setdefault((r["model"], r["dataset"]), []).append(r)
    summary = []
    for (model, dataset), sweeps in grouped.items():
        names = sorted(set.intersection(*(set(s["strategies"]) for s in sweeps)))
        strategies = {}
        for s in sweeps:  # measured cost: step seconds relative to full fine-tuning in the same sweep
            full = s["strategies"].get("full", {}).get("step_seconds")
            blocks = next((c["step_seconds"] for c in s["cuts"] if c["cut"] == 0), None)
            for v in s["strategies"].values():
                v["cost_ratio_measured"] = v["step_seconds"] / full if full else float("nan")
                v["cost_ratio_measured_blocks"] = v["step_seconds"] / blocks if blocks else float("nan")
        for name in names:
            values = {k: [s["strategies"][name][k] for s in sweeps] for k in MEASURES}
            strategies[name] = {k: float(np.mean(v)) for k, v in values.items()}
            strategies[name].update({f"{k}_std": float(np.std(values[k])) for k in ("acc", "loss")})
        spearman = [s["spearman"] for s in sweeps]
        mine = strategies.get("semantic-plan")
        summary.append({
            "model": model, "dataset": dataset, "seeds": [s["seed"] for s in sweeps],
            "complete": all(s.get("complete", False) for s in sweeps),
            "cuts_run": [[c["cut"] for c in s["cuts"]] for s in sweeps],
            "chosen_cut": [s["chosen_cut"] for s in sweeps],
            "spearman": float(np.nanmean(spearman)) if not np.all(np.isnan(spearman)) else None,
            "spearman_per_seed": spearman, "regret": float(np.mean([s["regret"] for s in sweeps])),
            "regret_per_seed": [s["regret"] for s in sweeps],
            "regret_std": float(np.std([s["regret"] for s in sweeps])),
            "best_strategy": min(strategies, key=lambda n: strategies[n]["loss"]) if strategies else None,
            "beaten_by": [] if mine is None else sorted(  # as cheap or cheaper (modelled) and lower loss
                n for n, v in strategies.items()
                if n != "semantic-plan" and v["cost_ratio"] <= mine["cost_ratio"] + 1e-9 and v["loss"] < mine["loss"]),
            "loss_before": float(np.mean([s["loss_before"] for s in sweeps])),
            "acc_before": float(np.mean([s["acc_before"] for s in sweeps])),
            "strategies": strategies,
        })
    return {"rows": summary}


def figure(row: dict, sweeps: Sequence[dict], path: Path) -> None:
    """Held-out loss and accuracy vs modelled cost ratio: each seed's cut curve, every strategy's mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for ax, key, unit in ((axes[0], "loss", "held-out loss (nats)"), (axes[1], "acc", "held-out accuracy")):
        for s in sweeps:
            cuts = s["cuts"]
            ax.plot([c["cost_ratio"] for c in cuts], [c[key] for c in cuts], "o-", color="0.6", alpha=0.6,
                    label="cuts (one line per seed)" if s is sweeps[0] else None)
        for i, (name, v) in enumerate(sorted(row["strategies"].items())):
            star = name == "semantic-plan"
            ax.errorbar(v["cost_ratio"], v[key], yerr=v[f"{key}_std"], fmt="*" if star else "s",
                        ms=12 if star else 6, color=plt.cm.tab10(i % 10), label=name, zorder=3)
        ax.axhline(row[f"{key}_before"], ls=":", color="k", label="before fine-tuning")
        ax.set(xlabel="cost ratio (step FLOPs / full fine-tuning)", ylabel=unit)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{row['model']} on {row['dataset']} ({len(sweeps)} seed{'s' * (len(sweeps) != 1)})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spearman_text(row: dict) -> str:
    return "n/a" if row["spearman"] is None else f"{row['spearman']:.2f}"


def markdown(summary: dict, ablation_rows: Sequence[dict], scale_name: str, scale: StudyScale) -> str:
    """The tables the results chapter includes."""
    lines = [f"Study scale `{scale_name}`: {scale.steps} AdamW steps of batch {scale.batch_size}, "
             f"lr {scale.lr}, at most {scale.n_train} training and {scale.n_test} held-out examples, "
             f"prompts cut to {scale.max_length} tokens, cuts `{scale.cuts}` plus the chosen one.", ""]
    lines += ["## Overview", "",
              "Means over seeds. *Beaten by*: strategies with a lower held-out loss at an equal or lower "
              "modelled cost than the semantic-aware plan.", "",
              "| model | dataset | seeds | chosen cut per seed | Spearman | regret (nats) | "
              "plan loss | best strategy (loss) | beaten by |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in summary["rows"]:
        sp = _spearman_text(row)
        plan_loss = row["strategies"].get("semantic-plan", {}).get("loss", float("nan"))
        best = row["best_strategy"]
        best_text = "n/a" if best is None else f"{best} ({row['strategies'][best]['loss']:.3f})"
        lines.append(f"| {row['model']} | {row['dataset']} | {len(row['seeds'])} | {row['chosen_cut']} | {sp} | "
                     f"{row['regret']:.3f} ± {row['regret_std']:.3f} | {plan_loss:.3f} | {best_text} | "
                     f"{', '.join(row['beaten_by']) or 'none'} |")
    lines.append("")
    for row in summary["rows"]:
        sp = _spearman_text(row)
        partial = "" if row["complete"] else (
            " **Partial: interrupted before every run ended** (cuts run per seed "
            f"{row['cuts_run']}; only the strategies listed below ran).")
        lines += [f"## {row['model']} on {row['dataset']}", "",
                  f"![{row['model']} on {row['dataset']}]({row['model']}_{row['dataset']}.png)", "",
                  f"Seeds {row['seeds']}; chosen cut per seed {row['chosen_cut']}; "
                  f"Spearman(predicted, realised) {sp} (per seed {[round(s, 2) for s in row['spearman_per_seed']]}); "
                  f"regret {row['regret']:.3f} nats; before fine-tuning loss {row['loss_before']:.3f}, "
                  f"accuracy {row['acc_before']:.3f}.{partial}", "",
                  "| strategy | accuracy | loss (nats) | cost ratio (modelled) | step time vs full (measured) "
                  "| step time vs cut 0 (measured) |", "| --- | --- | --- | --- | --- | --- |"]
        for name, s in sorted(row["strategies"].items(), key=lambda kv: kv[1]["cost_ratio"]):
            lines.append(f"| {name} | {s['acc']:.3f} ± {s['acc_std']:.3f} | {s['loss']:.3f} ± "
                         f"{s['loss_std']:.3f} | {s['cost_ratio']:.3f} | {s['cost_ratio_measured']:.3f} "
                         f"| {s['cost_ratio_measured_blocks']:.3f} |")
        lines.append("")
    for a in ablation_rows:
        lines += [f"## Ablation: {a['model']} on {a['dataset']}", "",
                  "| lens | R^2 | argmax-excess | argmax-raw | budget 0.5 |", "| --- | --- | --- | --- | --- |"]
        for lens, v in a["lens_rule"].items():
            lines.append(f"| {lens} | {v['r2']:.2f} | {v['argmax-excess']} | {v['argmax-raw']} | {v['budget']} |")
        lines += ["", "Chosen cut (default lens and rule) over five resamples per calibration size: " + "; ".join(
            f"{n}: {cuts}" for n, cuts in a["calib_size"].items()), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m freezelab.study", description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="full", choices=sorted(SCALES))
    p.add_argument("--out", default="book/results")
    p.add_argument("--models", default=None, help="comma-separated subset of the scale's models")
    p.add_argument("--datasets", default=None, help="comma-separated subset of the scale's datasets")
    p.add_argument("--seeds", default=None, help="comma-separated subset of the scale's seeds")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    models = args.models.split(",") if args.models else scale.models
    datasets = args.datasets.split(",") if args.datasets else scale.datasets
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else scale.seeds
    out = Path(args.out)
    check_scale(out, args.scale, scale)
    for model in models:
        lm = load_model(model)
        for dataset in datasets:
            for seed in seeds:
                task = load_task(dataset_spec(dataset), seed=seed)
                parts = split(task, seed=seed, n_calib=64 if args.scale == "full" else 8)
                text = run_sweep(lm, task, parts, cuts=scale.cuts, steps=scale.steps, lr=scale.lr,
                                 batch_size=scale.batch_size, seed=seed,
                                 out=out / "runs" / model / dataset / f"seed{seed}",
                                 strategies=scale.strategies, n_train=scale.n_train,
                                 n_test=scale.n_test, max_length=scale.max_length, progress=False)
                print(f"== {model} / {dataset} / seed {seed}\n{text}", flush=True)
            target = out / "ablations" / f"{model}_{dataset}.json"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(ablations(model, dataset, scale), indent=2))
    collect(out, args.scale, scale)


def check_scale(out: Path, scale_name: str, scale: StudyScale) -> None:
    """Record the budget in `out/scale.json`; refuse to mix runs of another budget into `out`."""
    wanted = {"scale": scale_name, **asdict(scale)}
    path = out / "scale.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if {k: stored.get(k) for k in BUDGET} != {k: wanted[k] for k in BUDGET}:
            raise FreezelabError(f"{out} holds runs of another budget ({path}); pass a fresh --out "
                                 "or remove its runs/ and scale.json")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2))


def collect(out: Path, scale_name: str, scale: StudyScale) -> None:
    """Summarise every sweep and ablation stored under `out` (from this and earlier invocations)."""
    rows = [{**json.loads(p.read_text()), "dataset": p.parts[-3]}
            for p in sorted(out.glob("runs/*/*/seed*/sweep.json"))]
    ablation_rows = [json.loads(p.read_text()) for p in sorted(out.glob("ablations/*.json"))]
    summary = summarise(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "ablations.json").write_text(json.dumps(ablation_rows, indent=2))
    for row in summary["rows"]:
        figure(row, [r for r in rows if (r["model"], r["dataset"]) == (row["model"], row["dataset"])],
               out / f"{row['model']}_{row['dataset']}.png")
    (out / "summary.md").write_text(markdown(summary, ablation_rows, scale_name, scale))
    print(f"wrote {out / 'summary.json'}, ablations.json and summary.md")


if __name__ == "__main__":
    main()
