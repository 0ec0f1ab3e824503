"""The oracle study's figures, one PNG per model x data set and kind, from a summary row and its sweeps."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from freezelab.study.prose import _per_seed


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11})
    return plt


def _save(fig, ax, path: Path) -> None:
    """Integer ticks on the x axis (steps, latent spaces, cuts), the legend, the PNG; the figure closed."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=9)
    fig.savefig(path, dpi=150)
    _plt().close(fig)


def _title(text: str) -> str:
    """`text` broken into lines that fit an 8-inch figure at 11 points (a model or data set name of any
    length stays inside the PNG)."""
    return textwrap.fill(text, 64)


def figure_grid(row: dict, path: Path) -> None:
    """Accuracy and loss of every grid cut vs modelled cost, strategies as markers, plan and knee marked."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(8, 8), layout="constrained", sharex=True)
    for ax, key, unit in ((axes[0], "acc", "test accuracy"), (axes[1], "loss", "test loss (nats)")):
        ax.plot(row["grid_cost"], row[f"grid_{key}"], "o-", color="0.45", label="cut k (mean over seeds)")
        for k, x, y in zip(row["grid"], row["grid_cost"], row[f"grid_{key}"]):
            ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(2, 4), fontsize=8, color="0.3")
        for i, (name, s) in enumerate(sorted(row["strategies"].items())):
            ax.errorbar(s["cost_ratio"], s[key]["mean"], yerr=[[s[key]["mean"] - s[key]["lo"]], [s[key]["hi"] - s[key]["mean"]]],
                        fmt="*" if name == "semantic-plan" else "s", ms=13 if name == "semantic-plan" else 6,
                        color=plt.cm.tab10(i % 10), label=name, zorder=3)
        ax.axhline(row[f"{key}_before"], ls=":", color="k", label="before fine-tuning")
        ax.set_ylabel(unit)
    axes[1].set_xlabel("modelled cost (share of full fine-tuning's step)")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(_title(f"{row['model']} on {row['dataset']}: knee at cut {row['knee_cut']}, "
                        f"plan at {_per_seed(row['chosen_cut'])}"))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_training(sweeps: Sequence[dict], path: Path) -> None:
    """Training loss per step (moving mean over 8 steps) of cut 0, the plan, the last block and full FT."""
    plt = _plt()
    s = sweeps[0]
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    cuts = {c["cut"]: c for c in s["cuts"]}
    shown = {"cut 0 (every block)": cuts.get(0), f"plan (cut {s['chosen_cut']})": cuts.get(s["chosen_cut"]),
             f"cut {max(cuts)} (last blocks only)": cuts.get(max(cuts)), "full fine-tuning": s["strategies"].get("full")}
    for label, run in shown.items():
        if run and run.get("train_losses"):
            y = np.convolve(run["train_losses"], np.ones(8) / 8, mode="valid")
            ax.plot(np.arange(len(y)) + 8, y, label=label)
    ax.set(xlabel="optimizer step", ylabel="training loss (nats, mean of 8 steps)",
           title=_title(f"{s['model']} on {s['dataset']}, seed {s['seed']}: has the loss flattened within one epoch?"))
    _save(fig, ax, path)


def figure_marginal(row: dict, sweeps: Sequence[dict], path: Path) -> None:
    """Predicted excess gain g_l per block beside the realised marginal loss reduction of the grid."""
    plt = _plt()
    L = row["num_layers"]
    g = np.mean([s["gains"]["excess"] for s in sweeps], 0)
    edges = row["grid"] + [L]
    values = row["grid_loss"] + [row["loss_before"]]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), layout="constrained", sharex=True)
    a1.bar(np.arange(1, L + 1), g, color="tab:blue")
    a1.set(ylabel="predicted g_l (nats)", title=_title(f"{row['model']} on {row['dataset']}: per-block gains"))
    for a, b, v0, v1 in zip(edges[:-1], edges[1:], values[:-1], values[1:]):
        a2.bar((a + b + 1) / 2, (v1 - v0) / (b - a), width=b - a, color="tab:orange", edgecolor="w")
    a2.set(xlabel="block l", ylabel="realised loss removed per block (nats)")
    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_retrace(row: dict, sweeps: Sequence[dict], path: Path) -> None:
    """The calibration set's deviation d_l before fine-tuning and after the plan, the knee and full FT."""
    plt = _plt()
    s = sweeps[0]
    cuts = {c["cut"]: c for c in s["cuts"]}
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    ax.plot(s["deviation"], "k-o", ms=3, label="before fine-tuning")
    shown = {f"after the plan (cut {s['chosen_cut']})": cuts.get(s["chosen_cut"], {}),
             f"after the knee cut ({row['knee_cut']})": cuts.get(row["knee_cut"], {}),
             "after full fine-tuning": s["strategies"].get("full", {})}
    for label, run in shown.items():
        if run.get("deviation_after"):
            ax.plot(run["deviation_after"], "-o", ms=3, label=label)
    ax.set(xlabel="latent space l", ylabel="deviation d_l (nats, label-restricted logit lens)",
           title=_title(f"{s['model']} on {s['dataset']}, seed {s['seed']}: where fine-tuning moved the trace"))
    _save(fig, ax, path)


def figure_lr(row: dict, path: Path) -> None:
    """Realised accuracy per cut (seed 0) at the validation-chosen learning rate and either side."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for lr, curve in sorted(row["lr_sensitivity"].items(), key=lambda kv: float(kv[0])):
        ax.plot(curve["cuts"], curve["acc"], "-o", ms=3, lw=2.5 if curve["chosen"] else 1.2,
                label=f"lr {lr}" + (" (chosen on validation data)" if curve["chosen"] else ""))
    ax.axhline(row["acc_before"], ls=":", color="k", label="before fine-tuning")
    ax.set(xlabel="cut k (blocks 1..k frozen)", ylabel="test accuracy (seed 0)",
           title=_title(f"{row['model']} on {row['dataset']}: how much of the knee is the optimiser?"))
    _save(fig, ax, path)

