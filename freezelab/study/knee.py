"""The knee study: candidate rules chosen on one model x data set, then tested on all the others.

Candidates: `knee` q and `knee-gain` q (`plan.py`), and the default rule through each other lens
found in the stored sweeps and traces (`argmax-excess/LENS`; the lens family is the name before
the first "-" or ":", so the `virtual:...` option sets form one family); each family's option is chosen on the development pair,
beside a depth-only rule. The protocol is declared in the book (method chapter, "Candidate rules:
aiming at the knee"):

- The development pair is `DEV_PAIR`; every other model x data set of the study is held out.
- On the development pair only, each candidate family's option, and the depth-only rule's share
  of trained blocks, is the one whose cut lands nearest the knee (`results.Grid.knee`): the least
  mean |knee distance| over its seeds; ties to the cheaper cut, then to the simpler option (`_simpler`:
  the fewest lens options changed from their defaults, then the smaller share), and only then by name. Then they are frozen.
- Every frozen candidate, the paper's rule, top-25% and the depth-only rule are judged on the
  held-out pairs by one bar (`decision.judge`).

Realised results are read from the dense grid (`results.Grid`); every CI is the paired bootstrap
over test examples, averaged over seeds.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from freezelab.errors import FreezelabError
from freezelab.method.lens import parse_lens
from freezelab.study.results import N_BOOT, Grid, compare, rule_cuts
from freezelab.study.sweep import CANDIDATES, DEFAULT_VARIANT

DEV_PAIR = ("smollm2-135m", "bbc-news")
RULE, LENS = DEFAULT_VARIANT.split("/")
DEPTH = "depth-only"


def families(variants: Sequence[str]) -> dict[str, list[str]]:
    """Each candidate family and its options among the stored `variants` ("rule/lens"): the knee rules
    through the default lens, and the default rule through each other lens, one family per lens name
    before its first "-" (the default lens's own family keeps its other options)."""
    out: dict[str, list[str]] = {}
    for name in CANDIDATES:
        if f"{name}/{LENS}" in variants:
            out.setdefault(name.rsplit("-", 1)[0], []).append(f"{name}/{LENS}")
    for name in variants:
        rule, _, lens = name.partition("/")
        if rule == RULE and lens not in ("", LENS):
            out.setdefault(f"lens:{re.split('[-:]', lens)[0]}", []).append(name)
    return out


def _simpler(name: str) -> tuple:
    """The declared tie-break between options of one family: the fewest lens options changed from the
    lens registry's defaults (`method.lens`), then the smaller share, then the name."""
    rule, lens = name.split("/")
    head, _, share = rule.rpartition("-")
    q = float(share) if head and share.replace(".", "", 1).isdigit() else 0.0
    try:
        entry, options = parse_lens(lens)
        changed = sum(options[k] != values[0] for k, values in entry.options.items())
    except FreezelabError:  # a study variant name (logit-labels, logit-full): no options
        changed = 0
    return (changed, q, name)


def depth_cut(grid: Grid, share: float) -> int:
    """The grid cut whose share of trained blocks (L - k) / L is nearest `share`, ties to the deeper cut."""
    return min(grid.cuts, key=lambda k: (abs((grid.L - k) / grid.L - share), -k))


def _knee_miss(grid: Grid, cuts: Sequence[int]) -> tuple[float, float]:
    """(mean |knee distance| in blocks over seeds, mean modelled cost): the development score, lower first."""
    distance = grid.knee_distance(cuts)
    return (grid.value(lambda *a: abs(distance(*a))), float(np.mean([grid.cost[k] for k in cuts])))


def develop(sweeps: Sequence[dict]) -> dict:
    """On the development pair's sweeps: each family's chosen variant and the depth-only share,
    with every option's score (mean |knee distance|, cost)."""
    grid = Grid(sweeps)
    cuts = rule_cuts(sweeps, grid.L)
    out: dict = {"seeds": [s["seed"] for s in sweeps], "families": families(list(cuts)), "chosen": {},
                 "scores": {}, "knee_cut": grid.knee(grid.acc.mean(-1).mean(0), grid.full_acc.mean())[0]}
    for family, names in out["families"].items():
        scores = {name: _knee_miss(grid, grid.snap(cuts[name])) for name in names}
        if scores:
            out["chosen"][family] = min(scores, key=lambda name: (*scores[name], _simpler(name)))
            out["scores"].update(scores)
    shares = {(grid.L - k) / grid.L: k for k in grid.cuts}
    depth = {share: _knee_miss(grid, [k] * len(sweeps)) for share, k in shares.items()}
    out["depth_share"] = min(depth, key=depth.get)  # every share is a different cut: ties go to the cheaper
    out["scores"].update({f"{DEPTH} {share:.3f}": score for share, score in depth.items()})
    return out


def judged_cuts(sweeps: Sequence[dict], dev: dict) -> dict[str, list[int]]:
    """The cut per seed of every rule judged on a held-out pair: the paper's rule, the depth-only rule
    at its frozen share, top-25% and each family's frozen option; a cut the grid did not run (a lens
    read from the stored trace only) is scored at the nearest grid cut (`results.Grid.snap`)."""
    grid = Grid(sweeps)
    cuts = rule_cuts(sweeps, grid.L)
    rules = {DEFAULT_VARIANT: cuts[DEFAULT_VARIANT], DEPTH: [depth_cut(grid, dev["depth_share"])] * len(sweeps),
             "top25": cuts["top25"], **{name: cuts[name] for name in dev["chosen"].values() if name in cuts}}
    return {name: grid.snap(c) for name, c in rules.items()}


def held_out(sweeps: Sequence[dict], dev: dict, n_boot: int = N_BOOT) -> dict:
    """Every judged rule on one held-out pair, each against the paper's rule (`results.compare`)."""
    grid = Grid(sweeps)
    rules = judged_cuts(sweeps, dev)
    default = rules[DEFAULT_VARIANT]
    return {"model": sweeps[0]["model"], "dataset": sweeps[0]["dataset"], "seeds": [s["seed"] for s in sweeps],
            "knee_cut": grid.knee(grid.acc.mean(-1).mean(0), grid.full_acc.mean())[0],
            "rules": {name: compare(grid, c, default, n_boot) for name, c in rules.items()}}


def knee_study(grouped: dict[tuple[str, str], list[dict]], expected: Sequence[tuple[str, str]],
               seeds_of: dict[tuple[str, str], int], n_boot: int = N_BOOT) -> dict:
    """Development and held-out measurements over the study's complete sweeps `grouped` (model,
    dataset) -> sweeps; `expected` are every pair of the study, `seeds_of` how many seeds each runs.
    `final`: every held-out pair has every seed (the decision waits for it)."""
    out: dict = {"dev_pair": list(DEV_PAIR), "default": DEFAULT_VARIANT,
                 "held_out_expected": [list(p) for p in expected if p != DEV_PAIR]}
    if DEV_PAIR not in grouped:
        return out
    out["development"] = dev = develop(grouped[DEV_PAIR])
    out["held_out"] = [held_out(sweeps, dev, n_boot) for pair, sweeps in grouped.items() if pair != DEV_PAIR]
    out["final"] = all(pair in grouped and len(grouped[pair]) == seeds_of[pair] for pair in expected)
    return out
