"""Summarise a stored study: summary.json (rows, leaderboard, knee study, decision, headline),
the book's generated files, figures, the package's recommendation (`decision.RECOMMENDATION`) and the
README's verdict block (`report.write_readme`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from freezelab.io import atomic_write_json
from freezelab.study.decision import RECOMMENDATION, judge, recommendation
from freezelab.study.knee import knee_study
from freezelab.study.prose import headline
from freezelab.study.report import write_readme, write_report
from freezelab.study.rates import FAMILIES
from freezelab.study.results import (N_BOOT, learning_rates, leaderboard, load_sweeps, lr_curves, protocol,
                                     rerun_cost, summarise_pair, sweep_hours)
from freezelab.study.rules import STUDY, trace_variants


def load_study(out: Path) -> dict[tuple[str, str], list[dict]]:
    """`results.load_sweeps`, held to the study's protocol: a pair that has not picked every family's
    learning rate on validation data (no `lr_FAMILY.json`) lists those families under `stale` and has
    no complete sweep until the runner has picked them and trained those runs again."""
    stored = load_sweeps(out)
    for (model, dataset), sweeps in stored.items():
        picked = learning_rates(out / "runs" / model / dataset)
        for s in sweeps:
            s["stale"] = s["stale"] + [f for f in FAMILIES if f not in picked]
            s["complete"] = s["complete"] and not s["stale"]
    return stored


def missing(stored: dict, scale) -> list[tuple[str, str, int]]:
    """The planned (model, data set, seed) units of `scale` with no complete, current sweep in `stored`
    (`load_study`), in the scale's order."""
    done = {(m, d, s["seed"]) for (m, d), sweeps in stored.items() for s in sweeps if s["complete"]}
    return [(m, d, seed) for d in scale.datasets for m in scale.models for seed in scale.seeds_for(d)
            if (m, d, seed) not in done]


def collect(out: Path, scale_name: str, scale, n_boot: int = N_BOOT) -> dict:
    """Summarise every sweep stored under `out`: summary.json, the book's files and figures, and,
    for the checkout's own study (`rules.STUDY`), the recommendation `freezelab plan` reads and the README's
    verdict."""
    stored = load_study(out)
    # a seed still running joins its pair once it is complete (the pair shows partial seeds until one is)
    grouped = {pair: [s for s in sweeps if s["complete"]] or sweeps for pair, sweeps in stored.items()}
    replicates = [{} for _ in grouped]
    rows = [summarise_pair(sweeps, n_boot, r) for sweeps, r in zip(grouped.values(), replicates)]
    for row, sweeps in zip(rows, grouped.values()):
        row["lr_sensitivity"] = lr_curves(out, sweeps[0])
    expected = [(m, d) for d in scale.datasets for m in scale.models]
    seeds_of = {(m, d): len(scale.seeds_for(d)) for m, d in expected}
    # the knee study also reads the lenses that only the stored traces hold (the virtual lens's options)
    complete = {pair: [{**s, "variants": {**s["variants"], **trace_variants(s)}} for s in sweeps]
                for pair, sweeps in grouped.items() if all(s["complete"] for s in sweeps)}
    planned, waiting = [(m, d, seed) for m, d in expected for seed in scale.seeds_for(d)], missing(stored, scale)
    hours = [sweep_hours(s) for sweeps in stored.values() for s in sweeps if s["complete"]]
    status = {"planned": len(planned), "complete": len(planned) - len(waiting), "missing": [list(u) for u in waiting],
              "stale": [[m, d, s["seed"], s["stale"]] for (m, d), sweeps in stored.items() for s in sweeps if s["stale"]],
              "hours": sum(hours), "median_sweep_hours": float(np.median(hours)) if hours else None,
              "reruns": rerun_cost(out, stored)}
    study = knee_study(complete, expected, seeds_of, n_boot)
    summary = {"scale": scale_name, "budget": asdict(scale), "protocol": protocol(), "status": status,
               "decision": judge(study), "rows": rows, "rules": leaderboard(rows, replicates), "knee_study": study}
    summary = {"headline": headline(summary), **summary}
    atomic_write_json(out / "summary.json", summary)
    write_report(out, summary, grouped, stored)
    own = Path(out).resolve() == STUDY.resolve()
    if own:
        atomic_write_json(RECOMMENDATION, recommendation(summary))
        write_readme(STUDY.parents[1] / "README.md", summary)
    print(f"wrote {out / 'summary.json'}, headline.md, verdict.md, summary.md and figures"
          + (", freezelab/recommendation.json and the README's verdict" if own else ""))
    return summary
