"""Summarise a stored study: summary.json (rows, leaderboard, knee study, decision, headline),
the book's generated files, figures, and the package's recommendation (`decision.RECOMMENDATION`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from freezelab.io import atomic_write_json
from freezelab.study.decision import RECOMMENDATION, judge, recommendation
from freezelab.study.knee import knee_study
from freezelab.study.prose import headline
from freezelab.study.report import write_report
from freezelab.study.results import (N_BOOT, leaderboard, load_sweeps, lr_curves, protocol, rerun_cost, summarise_pair,
                                     sweep_hours)
from freezelab.study.rules import STUDY, trace_variants


def collect(out: Path, scale_name: str, scale, n_boot: int = N_BOOT) -> dict:
    """Summarise every sweep stored under `out`: summary.json, the book's files and figures, and,
    for the checkout's own study (`rules.STUDY`), the recommendation `freezelab plan` reads."""
    stored = load_sweeps(out)
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
    done = {(m, d, s["seed"]) for (m, d), sweeps in stored.items() for s in sweeps if s["complete"]}
    planned = [(m, d, seed) for m, d in expected for seed in scale.seeds_for(d)]
    hours = [sweep_hours(s) for sweeps in stored.values() for s in sweeps if s["complete"]]
    status = {"planned": len(planned), "complete": sum(unit in done for unit in planned),
              "missing": [list(unit) for unit in planned if unit not in done],
              "stale": [[m, d, s["seed"], s["stale"]] for (m, d), sweeps in stored.items() for s in sweeps if s["stale"]],
              "hours": sum(hours), "median_sweep_hours": float(np.median(hours)) if hours else None,
              "reruns": rerun_cost(out, stored)}
    study = knee_study(complete, expected, seeds_of, n_boot)
    summary = {"scale": scale_name, "budget": asdict(scale), "protocol": protocol(), "status": status,
               "decision": judge(study), "rows": rows, "rules": leaderboard(rows, replicates), "knee_study": study}
    summary = {"headline": headline(summary), **summary}
    atomic_write_json(out / "summary.json", summary)
    write_report(out, summary, grouped, stored)
    if Path(out).resolve() == STUDY.resolve():
        atomic_write_json(RECOMMENDATION, recommendation(summary))
    print(f"wrote {out / 'summary.json'}, headline.md, verdict.md, summary.md and figures")
    return summary
