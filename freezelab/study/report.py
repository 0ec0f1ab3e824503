"""The oracle study's tables and files, from summary.json (`collect.collect`).

Everything the results chapter states with a number is written from the JSON: `headline.md` (the
verdict in one or two sentences, atop the results page and in the intro), `verdict.md` and
`protocol.md` (sentences, `prose`), `summary.md` (tables), all included by the book; figures
(`figures`) are PNGs beside them. The README's verdict block (`write_readme`) is written from the same JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freezelab.study.figures import figure_grid, figure_lr, figure_marginal, figure_retrace, figure_training
from freezelab.study.prose import (LEVEL, _n, _per_seed, _rho, ci, headline_lines, model_name,
                                   protocol_lines, rerun_sentence, status_sentence, verdict_lines)
from freezelab.study.results import ACC_TOLERANCE


def lr_text(rates: dict) -> str:
    """'blocks 1e-4 of [3e-05, 0.0001, 0.0003], ...': each family's chosen rate and its grid."""
    names = {"blocks": "blocks", "lora": "LoRA", "full": "full FT"}
    said = [f"{names[f]} {r['chosen']:g} of {[float(f'{x:g}') for x in r['grid']]}" for f, r in rates.items()]
    return ", ".join(said + ([] if "full" in rates or not rates else ["full FT at the blocks' rate"])) or "not stored"


def status_lines(stored: dict, status: dict) -> list[str]:
    """Every planned model x data set: seeds complete of planned, and runs stored per seed."""
    pairs = list(dict.fromkeys([tuple(p[:2]) for p in status["missing"]] + list(stored)))
    missing = [tuple(u) for u in status["missing"]]
    lines = ["| model | data set | seeds complete / planned | runs stored per seed |", "| --- | --- | --- | --- |"]
    for model, dataset in pairs:
        sweeps = stored.get((model, dataset), [])
        done = [s["seed"] for s in sweeps if s["complete"]]
        planned = len(done) + sum(1 for u in missing if u[:2] == (model, dataset))
        runs = {s["seed"]: len(s["cuts"]) + len(s["strategies"]) - ("semantic-plan" in s["strategies"]) for s in sweeps}
        lines.append(f"| {model} | {dataset} | {len(done)} / {planned} {done if done else ''} | {runs or 'none yet'} |")
    return lines


def row_tables(row: dict) -> list[str]:
    name = f"{row['model']} on {row['dataset']}"
    stem = f"{row['model']}_{row['dataset']}"
    lines = [f"## {name}", "",
             f"{model_name(row['model'])}; {_n(len(row['seeds']), 'seed')} {row['seeds']}"
             f"{'' if row['complete'] else ' (partial: some runs still to come)'}; "
             f"a data set of {row['n_examples']} examples; {row['n_train']} training examples, one epoch of {row['steps']} steps of batch {row['batch_size']}; "
             f"learning rates picked on validation data: {lr_text(row['lr'])}; "
             f"{row['n_test']} test examples; grid of {len(row['grid'])} cuts.", "",
             f"![{name}: realised result per cut]({stem}.png)", "",
             f"| metric | value [{LEVEL} CI] |", "| --- | --- |",
             f"| chosen cut per seed (argmax-excess, logit-labels) | {row['chosen_cut']} |",
             f"| knee cut (cheapest cut within {100 * ACC_TOLERANCE:g} point of the best mean accuracy, grid and full "
             f"FT; per seed beside it) | {row['knee_cut']}{'' if row['knee_reached'] else ' (not reached: the most accurate cut)'}"
             f"; {row['knee_cut_per_seed']} |",
             f"| knee distance (blocks; > 0: plan trains more than needed) | {ci(row['knee_distance'], digits=1)} |",
             f"| frontier regret (accuracy points) | {ci(row['frontier_regret_acc'], 100, 1)} |",
             f"| frontier regret (nats) | {ci(row['frontier_regret_nats'], digits=3)} |",
             f"| oracle gap (accuracy points) | {ci(row['oracle_gap'], 100, 1)} |",
             f"| cost regret (share of full FT's cost) | {ci(row['cost_regret'])} |",
             f"| marginal Spearman (predicted g_l vs realised) | {ci(row['marginal_spearman'])} |",
             f"| marginal Spearman of depth alone, best direction | {ci(row['marginal_spearman_depth'])} |",
             f"| old benefit Spearman per seed (any depth order scores the same) | "
             f"{[round(x, 2) if x == x else None for x in row['benefit_spearman']]} |",
             f"| law fit R^2 per seed; parameters on their bound | "
             f"{_per_seed([round(l_['r2'], 2) for l_ in row['law']])}; "
             f"{_per_seed([', '.join(l_.get('at_bound', [])) or 'none' for l_ in row['law']])} |",
             f"| re-trace: Spearman(g_l, change of block l's gain), every block trained / full FT | "
             f"{_rho(row['retrace']['cut0']['mean'])} / {_rho(row['retrace']['full']['mean'])} |",
             f"| speed goal (cut run <= 1.15 (L-k)/L of full FT's wall time) | met by {row['speed_goal_met']} "
             f"of {row['speed_goal_of']} cuts (seed {row['seeds'][0]}) |", ""]
    lines += [f"Rules (cut per seed; metrics with {LEVEL} CI; `random-cut (expected)` averages every metric over the "
              "grid's cuts, drawn uniformly):", "",
              "| rule | cuts | cost | frontier regret (acc points) | oracle gap (acc points) | cost regret | "
              "knee distance |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for rule, r in sorted(row["rules"].items(), key=lambda kv: kv[1]["frontier_regret_acc"]["mean"]):
        lines.append(f"| {rule} | {r['cuts'] or 'any'} | {r['cost']:.2f} | {ci(r['frontier_regret_acc'], 100, 1)} | "
                     f"{ci(r['oracle_gap'], 100, 1)} | {ci(r['cost_regret'])} | {ci(r['knee_distance'], digits=1)} |")
    lines += ["", f"Before fine-tuning: accuracy {row['acc_before']:.3f}, loss {row['loss_before']:.3f} nats.", "",
              "| strategy | lr | accuracy | minus plan (acc) | loss (nats) | minus plan (nats) | cost | wall s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s_name, s in sorted(row["strategies"].items(), key=lambda kv: kv[1]["cost_ratio"]):
        wall = "its grid cut's" if np.isnan(s["seconds"]) else f"{s['seconds']:.0f}"  # semantic-plan: no run of its own
        lines.append(f"| {s_name} | {s['lr']:g} | {ci(s['acc'], digits=3)} | {ci(s['acc_minus_plan'], digits=3)} | "
                     f"{ci(s['loss'], digits=3)} | {ci(s['loss_minus_plan'], digits=3)} | {s['cost_ratio']:.2f} | "
                     f"{wall} |")
    lines += ["", f"![{name}: training loss]({stem}_train.png)", "",
              f"![{name}: predicted and realised per-block gains]({stem}_marginal.png)", "",
              f"![{name}: deviation before and after fine-tuning]({stem}_retrace.png)", ""]
    return lines


def knee_table(study: dict) -> list[str]:
    """Per held-out pair, each judged rule's metrics and its paired difference from the paper's rule."""
    if not study.get("held_out"):
        return []
    lines = ["## One bar for every rule: held-out pairs", "",
             f"Each rule against `{study['default']}` on the same test examples ({LEVEL} CI): the cost regret it "
             "saves (> 0: better) and the frontier regret it adds (> 0: worse).", "",
             "| model | data set | rule | cuts | cost regret | saved vs default | frontier regret (acc points) | "
             "added vs default | knee distance |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for pair in study["held_out"]:
        for name, r in pair["rules"].items():
            lines.append(f"| {pair['model']} | {pair['dataset']} | {name} | {r['cuts']} | {ci(r['cost_regret'])} | "
                         f"{ci(r['delta_cost_regret'])} | {ci(r['frontier_regret_acc'], 100, 1)} | "
                         f"{ci(r['delta_frontier_regret_acc'], 100, 1)} | {ci(r['knee_distance'], digits=1)} |")
    return lines + [""]


def write_report(out: Path, summary: dict, grouped: dict, stored: dict) -> None:
    """summary.md, verdict.md and the figures; `grouped` are the sweeps summarised per pair,
    `stored` every sweep on disk (partial seeds included), for the status table."""
    lines = (["## Status", "", status_sentence(summary["status"]), ""] + status_lines(stored, summary["status"])
             + [""] + knee_table(summary["knee_study"]))
    if summary["rules"]:
        lines += ["## Rule leaderboard (means over every model x data set)", "",
                  f"Means over pairs, with {LEVEL} intervals of the mean for the rules every pair measured (replicate j "
                  "of each pair's bootstrap averaged). The cheapest cuts have zero frontier and cost regret by "
                  "construction (nothing is cheaper); the oracle gap is what they pay.", "",
                  "| rule | pairs | frontier regret (acc points) | oracle gap (acc points) | cost regret | "
                  "knee distance (blocks) | cost |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in sorted(summary["rules"].items(), key=lambda kv: (kv[1]["cost_regret"], kv[0])):
            c = r.get("ci")
            lines.append(f"| {name} | {r['pairs']} | "
                         + (f"{ci(c['frontier_regret_acc'], 100, 1)} | {ci(c['oracle_gap'], 100, 1)} | "
                            f"{ci(c['cost_regret'])} | {ci(c['knee_distance'], digits=1)} |" if c else
                            f"{100 * r['frontier_regret_acc']:.1f} | {100 * r['oracle_gap']:.1f} | "
                            f"{r['cost_regret']:.2f} | {r['knee_distance']:.1f} |") + f" {r['cost']:.2f} |")
        lines.append("")
    for row in summary["rows"]:
        lines += row_tables(row)
        sweeps = grouped[(row["model"], row["dataset"])]
        stem = out / f"{row['model']}_{row['dataset']}"
        figure_grid(row, Path(f"{stem}.png"))
        figure_training(sweeps, Path(f"{stem}_train.png"))
        figure_marginal(row, sweeps, Path(f"{stem}_marginal.png"))
        figure_retrace(row, sweeps, Path(f"{stem}_retrace.png"))
        if len(row["lr_sensitivity"]) > 1:
            figure_lr(row, Path(f"{stem}_lr.png"))
            lines += [f"![{row['model']} on {row['dataset']}: the grid at three learning rates]({stem.name}_lr.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))
    (out / "protocol.md").write_text("\n".join(protocol_lines(summary)) + "\n")
    (out / "headline.md").write_text("\n".join(headline_lines(summary)))
    (out / "verdict.md").write_text("\n".join(verdict_lines(summary)) + "\n")


README_BEGIN = "<!-- the study's verdict: written by `python -m freezelab.study --collect` from summary.json -->"
README_END = "<!-- end of the study's verdict -->"


def write_readme(readme: Path, summary: dict) -> None:
    """Rewrite the block between `README_BEGIN` and `README_END` of `readme`: the headline in bold beside
    the paper's claim (as headline.md) and what the move to new learning rates cost."""
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise ValueError(f"{readme} needs one verdict block: a line {README_BEGIN!r}, then a line {README_END!r}")
    head, rest = text.split(README_BEGIN)
    tail = rest.split(README_END)[1]
    rerun = rerun_sentence(summary["status"])
    block = headline_lines(summary) + ([rerun, ""] if rerun else [])
    readme.write_text(head + "\n".join([README_BEGIN, "", *block, README_END]) + tail)
