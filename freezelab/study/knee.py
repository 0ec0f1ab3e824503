"""The knee study: candidate rules chosen on one model x data set, then tested on all the others.

Candidates (`FAMILIES`): `knee` q and `knee-gain` q (`plan.py`), and the default rule through
another lens; each family's option is chosen on the development pair, beside a depth-only rule.

The protocol is declared in the book (method chapter, "Candidate rules: aiming at the knee"):

- The development pair is `DEV_PAIR`; every other model x data set of the study is held out.
- On the development pair only, each candidate family's share q, and the depth-only rule's share
  of trained blocks, is the one whose cut lands nearest the knee: the least mean |knee distance|
  over its seeds, ties to the cheaper cut. Then they are frozen.
- A candidate becomes the default only if, on the held-out pairs,
  (a) it lowers cost regret against the default rule with a 95% CI above zero on at least
      `MIN_PAIRS` of them;
  (b) its frontier regret exceeds the default's by at most `MAX_FRONTIER_RAISE` on every one;
  (c) its mean cost regret over them is lower than top-25%'s and the depth-only rule's, and its
      mean frontier regret is no higher;
  (d) its mean oracle gap over them exceeds the default's by at most `MAX_FRONTIER_RAISE` (cost and
      frontier regret alone would reward a rule that always picks the cheapest, worst cut).
  The decision waits until every held-out pair has every seed of the study.

Realised results are read from the dense grid (`results.Grid`); every CI is the paired bootstrap
over test examples, averaged over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freezelab.study.results import N_BOOT, Grid, compare, rule_cuts
from freezelab.study.sweep import CANDIDATES, DEFAULT_VARIANT, LENS_VARIANTS

DEV_PAIR = ("smollm2-135m", "bbc-news")
MIN_PAIRS = 3
MAX_FRONTIER_RAISE = 0.005  # 0.5 accuracy points, as a fraction
RULE, LENS = DEFAULT_VARIANT.split("/")
# each candidate family and its options; the lens family keeps the default rule and swaps the lens
FAMILIES = {**{family: [f"{name}/{LENS}" for name in CANDIDATES if name.rsplit("-", 1)[0] == family]
               for family in dict.fromkeys(name.rsplit("-", 1)[0] for name in CANDIDATES)},
            "lens": [f"{RULE}/{lens}" for lens in LENS_VARIANTS if lens != LENS]}
DEPTH = "depth-only"


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
    out: dict = {"seeds": [s["seed"] for s in sweeps], "chosen": {}, "scores": {}}
    for family, names in FAMILIES.items():
        scores = {name: _knee_miss(grid, cuts[name]) for name in names if name in cuts
                  and all(k in grid.cuts for k in cuts[name])}
        if scores:
            out["chosen"][family] = min(scores, key=scores.get)
            out["scores"].update(scores)
    shares = {(grid.L - k) / grid.L: k for k in grid.cuts}
    depth = {share: _knee_miss(grid, [k] * len(sweeps)) for share, k in shares.items()}
    out["depth_share"] = min(depth, key=depth.get)
    out["scores"].update({f"{DEPTH} {share:.3f}": score for share, score in depth.items()})
    return out


def held_out(sweeps: Sequence[dict], dev: dict, n_boot: int = N_BOOT) -> dict:
    """Every frozen candidate, the depth-only rule and top-25% on one held-out pair."""
    grid = Grid(sweeps)
    cuts = rule_cuts(sweeps, grid.L)
    default = cuts[DEFAULT_VARIANT]
    rules = {DEPTH: [depth_cut(grid, dev["depth_share"])] * len(sweeps), "top25": cuts["top25"],
             **{name: cuts[name] for name in dev["chosen"].values() if name in cuts}}
    return {"model": sweeps[0]["model"], "dataset": sweeps[0]["dataset"], "seeds": [s["seed"] for s in sweeps],
            "rules": {name: compare(grid, c, default, n_boot) for name, c in rules.items()
                      if all(k in grid.cuts for k in c)}}


def verdict(pairs: Sequence[dict], name: str, final: bool) -> dict:
    """The default-change criteria (a)-(d), each met or not, for candidate `name` over the held-out `pairs`."""
    have = [p["rules"] for p in pairs if name in p["rules"]]
    mean = {rule: {key: float(np.mean([r[rule][key]["mean"] for r in have if rule in r]))
                   for key in ("cost_regret", "frontier_regret_acc")} for rule in (name, DEPTH, "top25")}
    lower = sum(r[name]["delta_cost_regret"]["lo"] > 0 for r in have)
    worst = max((r[name]["delta_frontier_regret_acc"]["mean"] for r in have), default=float("nan"))
    gap = float(np.mean([r[name]["delta_oracle_gap"]["mean"] for r in have])) if have else float("nan")
    beats = {base: mean[name]["cost_regret"] < mean[base]["cost_regret"]
             and mean[name]["frontier_regret_acc"] <= mean[base]["frontier_regret_acc"] for base in (DEPTH, "top25")}
    criteria = {"a": bool(lower >= MIN_PAIRS), "b": bool(worst <= MAX_FRONTIER_RAISE), "c": all(beats.values()),
                "d": bool(gap <= MAX_FRONTIER_RAISE)}
    meets = all(criteria.values())
    return {"pairs": len(have), "pairs_lower_cost_regret": int(lower), "worst_frontier_raise": worst,
            "mean_oracle_gap_raise": gap, "mean": mean, "beats": beats, "criteria": criteria, "meets": bool(meets),
            "decision": ("becomes the default" if meets else "fails") if final else "pending"}


def knee_study(grouped: dict[tuple[str, str], list[dict]], expected: Sequence[tuple[str, str]],
               seeds_of: dict[tuple[str, str], int], n_boot: int = N_BOOT) -> dict:
    """The whole protocol over the study's complete sweeps `grouped` (model, dataset) -> sweeps;
    `expected` are every pair of the study, `seeds_of` how many seeds each one runs."""
    out: dict = {"dev_pair": list(DEV_PAIR), "families": FAMILIES, "default": DEFAULT_VARIANT,
                 "min_pairs": MIN_PAIRS, "max_frontier_raise": MAX_FRONTIER_RAISE,
                 "held_out_expected": [list(p) for p in expected if p != DEV_PAIR]}
    if DEV_PAIR not in grouped:
        return out
    out["development"] = dev = develop(grouped[DEV_PAIR])
    out["held_out"] = pairs = [held_out(sweeps, dev, n_boot) for pair, sweeps in grouped.items() if pair != DEV_PAIR]
    final = all(pair in grouped and len(grouped[pair]) == seeds_of[pair] for pair in expected)
    out["final"] = final
    out["verdicts"] = {name: verdict(pairs, name, final) for name in dev["chosen"].values()} if pairs else {}
    return out
