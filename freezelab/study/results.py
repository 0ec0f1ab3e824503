"""The oracle study's summary: metrics that can fail, each with a paired bootstrap CI.

Every sweep of a model x data set shares one test set (the study's split is fixed), so statistics
are computed per seed on the same resample of test examples and averaged over seeds; the 95%
interval (`CI`) comes from `n_boot` such resamples (paired: every cut and strategy sees the same examples).

- `frontier_regret_acc` / `_nats`: best realised result among grid cuts whose modelled cost is at
  most the chosen cut's, minus the chosen cut's (accuracy points as a fraction; nats).
- `oracle_gap`: the same against every grid cut (accuracy).
- `cost_regret`: the chosen cut's modelled cost minus that of the cheapest grid cut whose accuracy
  is within `ACC_TOLERANCE` of it.
- `knee_cut`: the cheapest grid cut whose mean accuracy over seeds is within `ACC_TOLERANCE` of the
  best mean accuracy among every grid cut and the tuned full fine-tuning (the most accurate grid cut
  when none is: `knee_reached` says which); `knee_cut_per_seed` applies the same definition to each
  seed alone. `knee_distance` = knee cut - chosen cut, in blocks (> 0: the rule trains more blocks
  than needed); in a resample the knee is found again on the resampled examples.
- `lr`: per family (`blocks`, `lora`, `full`), the validation-picked rate: {grid, chosen, val_loss}.
- An interval touches zero when a bound is within `ZERO` of it (`side`): bootstrap percentiles of
  paired differences that are exactly zero come out as +-1e-17, not 0.
- `marginal_spearman`: Spearman between the predicted per-block gains g_l and the realised marginal
  gain of the grid (loss at the deeper grid cut minus loss at the shallower one, attributed to the
  blocks between them, g summed over them), beside `marginal_spearman_depth`: |Spearman| of block
  depth with the same marginals (a depth-only predictor, its direction chosen after the fact).
- `rules`: every rule's cut and these metrics, with `random-cut (expected)`, a grid cut drawn
  uniformly (each metric averaged over the grid's cuts); `top25_vs_plan`: top-25%'s paired
  differences from the plan (`compare`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from freezelab.train.strategies import top25_cut
from freezelab.study.rates import stale
from freezelab.study.sweep import DENSE_ALL_UP_TO, DENSE_STRIDE, LENS_VARIANTS, RULE_VARIANTS

ACC_TOLERANCE = 0.01  # "within 1 accuracy point"
N_BOOT = 1000
ZERO = 1e-9  # an interval bound this close to zero touches it
CI = (2.5, 97.5)  # percentiles of the bootstrap: a 95% interval
RANDOM_CUT = "random-cut (expected)"  # a grid cut drawn uniformly: every metric's expectation
TRIVIAL_RULES = {  # cut k of L blocks chosen without looking at the trace
    "top25": top25_cut,
    "half": lambda L: L // 2,
    "last-block": lambda L: L - 1,
    "all-blocks": lambda L: 0,
}


@dataclass(frozen=True)
class View:
    """A grid's per-seed means over some test examples: accuracy and loss (S, K) of every grid cut,
    loss before fine-tuning and after full fine-tuning (S,), and the knee cut of these examples."""

    acc: np.ndarray
    loss: np.ndarray
    before: np.ndarray
    full: np.ndarray
    knee: int


def interval(point: float, boots: np.ndarray) -> dict:
    """{mean, lo, hi}: a point estimate and the CI percentiles of its bootstrap replicates."""
    lo, hi = np.percentile(boots, CI) if len(boots) else (np.nan, np.nan)
    return {"mean": float(point), "lo": float(lo), "hi": float(hi)}


def side(x: dict) -> int:
    """+1 when a {mean, lo, hi} interval lies above zero, -1 below, 0 when it touches zero (`ZERO`)."""
    return 1 if x["lo"] > ZERO else -1 if x["hi"] < -ZERO else 0


class Grid:
    """One model x data set: per seed, realised per-example results of every grid cut."""

    def __init__(self, sweeps: Sequence[dict]):
        self.sweeps = list(sweeps)
        self.L = sweeps[0]["num_layers"]
        common = set.intersection(*({c["cut"] for c in s["cuts"]} for s in sweeps))
        self.cuts = sorted(common)
        self.cost = {c["cut"]: c["cost_ratio"] for c in sweeps[0]["cuts"] if c["cut"] in common}
        self.costs = np.array([self.cost[k] for k in self.cuts])  # (K,)
        by = [{c["cut"]: c for c in s["cuts"]} for s in sweeps]
        self.acc = np.array([[by[i][k]["per_example_correct"] for k in self.cuts] for i in range(len(sweeps))],
                            dtype=float)  # (S, K, n)
        self.loss = np.array([[by[i][k]["per_example_loss"] for k in self.cuts] for i in range(len(sweeps))])
        self.before_loss = np.array([s["before"]["per_example_loss"] for s in sweeps])  # (S, n)
        full = [s["strategies"].get("full") or by[i][0] for i, s in enumerate(sweeps)]  # cut 0 without a full run
        self.full_loss = np.array([f["per_example_loss"] for f in full])
        self.full_acc = np.array([f["per_example_correct"] for f in full], dtype=float)  # (S, n)
        self.n = self.acc.shape[-1]
        self._views: dict[tuple[int, int], list[View]] = {}

    def index(self, cut: int) -> int:
        return self.cuts.index(cut)

    def snap(self, cuts: Sequence[int]) -> list[int]:
        """Each cut, or the grid cut nearest it when the grid did not run it (ties to the cheaper, deeper one)."""
        return [min(self.cuts, key=lambda c: (abs(c - k), -c)) for k in cuts]

    def knee(self, acc: np.ndarray, full_acc: float) -> tuple[int, bool]:
        """(knee cut, reached) from mean accuracies (K,) of the grid cuts and full fine-tuning's: the
        cheapest grid cut within ACC_TOLERANCE of the best of them all; when no grid cut is, the most
        accurate grid cut and False."""
        best = max(float(acc.max()), float(full_acc))
        near = np.flatnonzero(acc >= best - ACC_TOLERANCE - 1e-12)
        if not near.size:
            return self.cuts[int(np.argmax(acc))], False
        return self.cuts[int(near[np.argmin(self.costs[near])])], True

    def view(self, idx: np.ndarray | None = None) -> View:
        """Per-seed means over the test examples `idx` (all by default) and the knee they give."""
        idx = np.arange(self.n) if idx is None else idx
        acc = self.acc[..., idx].mean(-1)
        knee, _ = self.knee(acc.mean(0), self.full_acc[:, idx].mean())
        return View(acc, self.loss[..., idx].mean(-1), self.before_loss[:, idx].mean(-1),
                    self.full_loss[:, idx].mean(-1), knee)

    def value(self, fn: Callable[[View, int], float], idx: np.ndarray | None = None) -> float:
        """fn(view, seed i) on the test examples `idx` (all by default), averaged over seeds."""
        return self._mean(fn, self.view(idx))

    def _mean(self, fn: Callable[[View, int], float], v: View) -> float:
        return float(np.mean([fn(v, i) for i in range(len(self.sweeps))]))

    def boots(self, fn: Callable[[View, int], float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, np.ndarray]:
        """fn's value on the whole test set and on `n_boot` paired resamples of it (n_boot,): the
        same resamples for every fn of a grid, so differences between rules stay paired."""
        if (n_boot, seed) not in self._views:  # each resample's means, computed once per grid
            rng = np.random.default_rng(seed)
            self._views[n_boot, seed] = [self.view(rng.integers(0, self.n, self.n)) for _ in range(n_boot)]
        return self.value(fn), np.array([self._mean(fn, v) for v in self._views[n_boot, seed]])

    def stat(self, fn: Callable[[View, int], float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
        """{mean, lo, hi} of fn(view, seed i) averaged over seeds: on the whole test set, and the
        percentile interval of `n_boot` paired resamples of it."""
        point, boots = self.boots(fn, n_boot, seed)
        return interval(point, boots)

    # --- the metrics of one rule (its cut per seed) ---------------------------------------------
    def frontier(self, cuts: Sequence[int], key: str) -> Callable[[View, int], float]:
        def fn(v: View, i: int) -> float:
            j = self.index(cuts[i])
            ok = self.costs <= self.costs[j] + 1e-12
            return float(v.acc[i][ok].max() - v.acc[i][j]) if key == "acc" else float(v.loss[i][j] - v.loss[i][ok].min())
        return fn

    def oracle_gap(self, cuts: Sequence[int]) -> Callable[[View, int], float]:
        return lambda v, i: float(v.acc[i].max() - v.acc[i][self.index(cuts[i])])

    def cost_regret(self, cuts: Sequence[int]) -> Callable[[View, int], float]:
        def fn(v: View, i: int) -> float:
            j = self.index(cuts[i])
            return float(self.costs[j] - self.costs[v.acc[i] >= v.acc[i][j] - ACC_TOLERANCE].min())
        return fn

    def knee_distance(self, cuts: Sequence[int]) -> Callable[[View, int], float]:
        return lambda v, i: float(v.knee - cuts[i])

    def marginals(self, loss: np.ndarray, before: float) -> tuple[list[list[int]], np.ndarray]:
        """Blocks (1-based) between consecutive grid cuts, and the loss each span of blocks removed."""
        edges = self.cuts + [self.L]
        values = list(loss) + [before]
        spans = [list(range(a + 1, b + 1)) for a, b in zip(edges[:-1], edges[1:])]
        return spans, np.array([values[j + 1] - values[j] for j in range(len(spans))])

    def marginal_spearman(self, depth: bool) -> Callable[[View, int], float]:
        g = np.mean([s["gains"]["excess"] for s in self.sweeps], 0)  # (L,), block l at index l-1

        def fn(v: View, i: int) -> float:
            spans, realised = self.marginals(v.loss[i], v.before[i])
            predicted = [np.mean(spans_) if depth else g[np.array(spans_) - 1].sum() for spans_ in spans]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a constant predictor has no rank correlation: NaN
                rho = spearmanr(predicted, realised).statistic
            return float(abs(rho) if depth else rho)
        return fn


Boots = dict[str, tuple[float, np.ndarray]]  # metric -> (point, bootstrap replicates (n_boot,))
METRICS = ("cost_regret", "frontier_regret_acc", "oracle_gap", "knee_distance")


def metric_boots(grid: Grid, cuts: Sequence[int], n_boot: int = N_BOOT) -> Boots:
    """A rule's `METRICS` on one pair as (point, bootstrap replicates): replicate j of every rule on a
    grid uses resample j, so differences stay paired and several pairs' replicates can be averaged."""
    metrics = {"cost_regret": grid.cost_regret(cuts), "frontier_regret_acc": grid.frontier(cuts, "acc"),
               "oracle_gap": grid.oracle_gap(cuts), "knee_distance": grid.knee_distance(cuts)}
    return {key: grid.boots(fn, n_boot) for key, fn in metrics.items()}


def deltas(mine: Boots, default: Boots) -> Boots:
    """Paired differences of two rules' `metric_boots`: `delta_cost_regret` = default's minus mine
    (> 0: cheaper for the same accuracy); `delta_frontier_regret_acc` and `delta_oracle_gap` = mine
    minus the default's (> 0: worse)."""
    sub = lambda a, b: (a[0] - b[0], a[1] - b[1])  # noqa: E731
    return {"delta_cost_regret": sub(default["cost_regret"], mine["cost_regret"]),
            "delta_frontier_regret_acc": sub(mine["frontier_regret_acc"], default["frontier_regret_acc"]),
            "delta_oracle_gap": sub(mine["oracle_gap"], default["oracle_gap"])}


def compare(grid: Grid, cuts: Sequence[int], default: Sequence[int], n_boot: int = N_BOOT) -> dict:
    """A rule's metrics on one pair, and its paired differences from the rule whose cuts are `default`:
    `delta_cost_regret` = default's minus this rule's (> 0: cheaper for the same accuracy),
    `delta_frontier_regret_acc` and `delta_oracle_gap` = this rule's minus the default's (> 0: worse)."""
    mine = metric_boots(grid, cuts, n_boot)
    both = {**mine, **deltas(mine, metric_boots(grid, default, n_boot))}
    return {"cuts": list(cuts), "cost": float(np.mean([grid.cost[k] for k in cuts])),
            **{key: interval(*pb) for key, pb in both.items()}}


def rule_cuts(sweeps: Sequence[dict], L: int) -> dict[str, list[int]]:
    """The cut per seed of every rule x lens variant and every trivial rule."""
    names = sorted(set.intersection(*(set(s["variants"]) for s in sweeps)))
    out = {name: [s["variants"][name] for s in sweeps] for name in names}
    out.update({name: [rule(L)] * len(sweeps) for name, rule in TRIVIAL_RULES.items()})
    return out


def summarise_pair(sweeps: Sequence[dict], n_boot: int = N_BOOT, replicates: dict | None = None) -> dict:
    """One row of summary.json (see the module docstring for each metric); `replicates`, when given,
    receives every rule's `metric_boots` (for the leaderboard's intervals over pairs)."""
    grid = Grid(sweeps)
    first = sweeps[0]
    chosen = [s["chosen_cut"] for s in sweeps]
    measured: dict[str, Boots] = {}
    cuts_of = {name: cuts for name, cuts in rule_cuts(sweeps, grid.L).items() if all(k in grid.cuts for k in cuts)}
    for name, cuts in cuts_of.items():
        measured[name] = metric_boots(grid, cuts, n_boot)
    # the trivial random baseline in expectation: a cut drawn uniformly from the grid, no runs needed
    every = [metric_boots(grid, [k] * len(sweeps), n_boot) for k in grid.cuts]
    measured[RANDOM_CUT] = {key: (float(np.mean([m[key][0] for m in every])), np.mean([m[key][1] for m in every], 0))
                            for key in METRICS}
    cost = {**{name: float(np.mean([grid.cost[k] for k in cuts])) for name, cuts in cuts_of.items()},
            RANDOM_CUT: float(np.mean(grid.costs))}
    rules = {name: {"cuts": cuts_of.get(name, []), "cost": cost[name], **{k: interval(*pb) for k, pb in m.items()}}
             for name, m in measured.items()}
    if replicates is not None:
        replicates.update(measured)
    knee, reached = grid.knee(grid.acc.mean(-1).mean(0), grid.full_acc.mean())
    per_seed = [grid.knee(grid.acc[i].mean(-1), grid.full_acc[i].mean())[0] for i in range(len(sweeps))]
    strategies = {}
    plan_acc = grid.acc[np.arange(len(sweeps)), [grid.index(k) for k in chosen]]  # (S, n)
    plan_loss = grid.loss[np.arange(len(sweeps)), [grid.index(k) for k in chosen]]
    names = sorted(set.intersection(*(set(s["strategies"]) for s in sweeps)))
    for name in names:
        if name == "semantic-plan":  # the chosen cut's grid run
            acc, loss = plan_acc, plan_loss
        else:
            acc = np.array([s["strategies"][name]["per_example_correct"] for s in sweeps], dtype=float)
            loss = np.array([s["strategies"][name]["per_example_loss"] for s in sweeps])
        strategies[name] = {
            "acc": paired(acc, np.zeros_like(acc), n_boot), "loss": paired(loss, np.zeros_like(loss), n_boot),
            "acc_minus_plan": paired(acc, plan_acc, n_boot), "loss_minus_plan": paired(loss, plan_loss, n_boot),
            "cost_ratio": float(np.mean([s["strategies"][name]["cost_ratio"] for s in sweeps])),
            "seconds": float(np.mean([s["strategies"][name].get("seconds", np.nan) for s in sweeps])),
            "lr": float(np.mean([s["strategies"][name].get("lr", s["lr"]) for s in sweeps]))}
    full_seconds = strategies.get("full", {}).get("seconds", np.nan)
    speed = [{"cut": c["cut"], "seconds": c["seconds"], "ratio_to_full": c["seconds"] / full_seconds,
              "goal": 1.15 * (grid.L - c["cut"]) / grid.L} for c in first["cuts"]]
    return {
        "model": first["model"], "dataset": first["dataset"], "n_examples": first.get("n_examples") or None,
        "n_train": first["n_train"],
        "n_test": first["n_test"], "steps": first["steps"], "batch_size": first["batch_size"],
        "lr": learning_rates(Path(first["folder"]).parent) if "folder" in first else {},
        "seeds": [s["seed"] for s in sweeps],
        "complete": all(s["complete"] for s in sweeps), "num_layers": grid.L, "grid": grid.cuts,
        "grid_cost": [grid.cost[k] for k in grid.cuts], "chosen_cut": chosen,
        "acc_before": float(np.mean([s["acc_before"] for s in sweeps])),
        "loss_before": float(np.mean([s["loss_before"] for s in sweeps])),
        "grid_acc": grid.acc.mean(-1).mean(0).tolist(), "grid_loss": grid.loss.mean(-1).mean(0).tolist(),
        "frontier_regret_acc": grid.stat(grid.frontier(chosen, "acc"), n_boot),
        "frontier_regret_nats": grid.stat(grid.frontier(chosen, "nats"), n_boot),
        "oracle_gap": grid.stat(grid.oracle_gap(chosen), n_boot),
        "cost_regret": grid.stat(grid.cost_regret(chosen), n_boot),
        "knee_cut": knee, "knee_reached": reached, "knee_cut_per_seed": per_seed, "knee_distance": grid.stat(grid.knee_distance(chosen), n_boot),
        "marginal_spearman": grid.stat(grid.marginal_spearman(False), n_boot),
        "marginal_spearman_depth": grid.stat(grid.marginal_spearman(True), n_boot),
        "benefit_spearman": [s["spearman"] for s in sweeps],
        "law": [{k: s["law"][k] for k in ("E", "A", "alpha", "r2", "at_bound") if k in s["law"]} for s in sweeps],
        "rules": rules, "strategies": strategies, "speed": speed, "retrace": retrace(sweeps),
        "top25_vs_plan": compare(grid, rules["top25"]["cuts"], chosen, n_boot) if "top25" in rules else None,
        "speed_goal_met": int(sum(x["ratio_to_full"] <= x["goal"] for x in speed if x["cut"] > 0)),
        "speed_goal_of": int(sum(1 for x in speed if x["cut"] > 0)),
    }


def retrace(sweeps: Sequence[dict]) -> dict:
    """Spearman between the predicted gains g_l and how much fine-tuning changed each block's
    observed gain on the calibration set (after minus before), per seed, for every block trained
    (cut 0) and for full fine-tuning; with their means over seeds."""
    out: dict = {}
    for name, pick in (("cut0", lambda s: next((c for c in s["cuts"] if c["cut"] == 0), None)),
                       ("full", lambda s: s["strategies"].get("full"))):
        rhos = []
        for s in sweeps:
            run = pick(s)
            if not run or not run.get("deviation_after"):
                continue
            before, after = np.array(s["deviation"]), np.array(run["deviation_after"])
            change, gains = (after[:-1] - after[1:]) - (before[:-1] - before[1:]), np.asarray(s["gains"]["excess"])
            defined = np.ptp(change) > 0 and np.ptp(gains) > 0  # a constant side has no ranking: no rho (None)
            rhos.append(float(spearmanr(gains, change).statistic) if defined else None)
        kept = [r for r in rhos if r is not None]
        out[name] = {"per_seed": rhos, "mean": float(np.mean(kept)) if kept else None}
    return out


def paired(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean of a - b over seeds and test examples (S, n), with a paired bootstrap 95% CI."""
    diff = (a - b).mean(0)  # seeds share the test examples: average them first, resample examples
    rng = np.random.default_rng(seed)
    return interval(diff.mean(), np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(n_boot)]))


def learning_rates(folder: Path) -> dict:
    """Per family (`blocks`, `lora`, `full`) whose pick is stored in `folder/lr_FAMILY.json`: the
    grid tried, the rate chosen and each rate's validation loss (nats)."""
    out = {}
    for family in ("blocks", "lora", "full"):
        path = folder / f"lr_{family}.json"
        if path.exists():
            pick = json.loads(path.read_text())
            out[family] = {"grid": sorted(float(x) for x in pick.get("grid") or pick["val_loss"]),
                           "chosen": pick["lr"], "val_loss": pick["val_loss"]}
    return out


def leaderboard(rows: Sequence[dict], replicates: Sequence[dict] | None = None) -> dict:
    """Every rule's mean frontier regret (accuracy), oracle gap, cost regret, knee distance and cost over
    all rows; with each row's `replicates` (`summarise_pair`), `ci` holds the {mean, lo, hi} of those
    means for the rules every row measured (replicate j of every row averaged: a joint bootstrap), and
    the lowest (`rank_key`) gets `lead`: the next rule's mean cost regret minus its own, paired."""
    names = sorted(set.union(*(set(r["rules"]) for r in rows))) if rows else []
    out = {}
    for name in names:
        have = [r["rules"][name] for r in rows if name in r["rules"]]
        out[name] = {"pairs": len(have), **{k: float(np.mean([h[k]["mean"] for h in have])) for k in METRICS},
                     "cost": float(np.mean([h["cost"] for h in have]))}
        if replicates is not None and all(name in r for r in replicates):
            out[name]["ci"] = {k: interval(np.mean([r[name][k][0] for r in replicates]),
                                           np.mean([r[name][k][1] for r in replicates], 0)) for k in METRICS}
    ranked = sorted((n for n in out if "ci" in out[n]), key=lambda n: (*rank_key(out[n]), n))
    later = [n for n in ranked if rank_key(out[n]) != rank_key(out[ranked[0]])] if ranked else []
    if later:  # the lowest's lead over the next, paired: replicate j of the next minus the lowest's
        best, runner = ranked[0], later[0]
        out[best]["lead"] = {"over": runner, "cost_regret": interval(
            np.mean([r[runner]["cost_regret"][0] - r[best]["cost_regret"][0] for r in replicates]),
            np.mean([r[runner]["cost_regret"][1] - r[best]["cost_regret"][1] for r in replicates], 0))}
    return out


def rank_key(board_row: dict) -> tuple[float, float]:
    """A leaderboard row's place: the lower mean cost regret, then frontier regret (rounded: equal cuts tie)."""
    return round(board_row["cost_regret"], 9), round(board_row["frontier_regret_acc"], 9)


def lr_curves(out: Path, seed0: dict) -> dict:
    """Realised test accuracy and loss per cut at each learning rate run for this model x data set
    (seed 0's sweep at the chosen one, `--lr-sensitivity` sweeps at the others)."""
    sweeps = [seed0] + [json.loads(p.read_text()) for p in
                        sorted(out.glob(f"runs/{seed0['model']}/{seed0['dataset']}/lr-sensitivity/*/sweep.json"))]
    return {f"{s['lr']:g}": {"cuts": [c["cut"] for c in s["cuts"]], "acc": [c["acc"] for c in s["cuts"]],
                             "loss": [c["loss"] for c in s["cuts"]], "chosen": s is seed0} for s in sweeps}


def load_sweeps(out: Path) -> dict[tuple[str, str], list[dict]]:
    """Every stored sweep.json under `out/runs/MODEL/DATASET/seedS/` (its `folder` added), grouped by
    model x data set. A sweep trained at a rate that is no longer its pair's pick lists those families
    under `stale` and counts as not `complete` until the runner has trained them again."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    picks: dict[Path, dict[str, float]] = {}
    for p in sorted(out.glob("runs/*/*/seed*/sweep.json")):
        sweep = {**json.loads(p.read_text()), "dataset": p.parts[-3], "folder": str(p.parent)}
        pair = p.parent.parent
        chosen = picks.setdefault(pair, {f: pick["chosen"] for f, pick in learning_rates(pair).items()})
        sweep["stale"] = stale(sweep, chosen)
        sweep["complete"] = sweep["complete"] and not sweep["stale"]
        if sweep["cuts"]:
            grouped.setdefault((sweep["model"], sweep["dataset"]), []).append(sweep)
    return grouped


def sweep_hours(sweep: dict) -> float:
    """One sweep's wall time in hours: its latent cache, every grid cut and every baseline run (the
    learning-rate picks, shared by a pair's seeds, are not timed)."""
    seconds = [c["seconds"] for c in sweep["cuts"]] + [s["seconds"] for s in sweep["strategies"].values()
                                                       if "seconds" in s]  # semantic-plan reuses a grid cut's run
    return (sum(seconds) + sweep.get("cache_seconds", 0.0)) / 3600


def rerun_cost(out: Path, stored: dict[tuple[str, str], list[dict]]) -> dict:
    """What moving to new learning rates cost (wall seconds on the machine that ran it): the rates
    measured since `lr_FAMILY.json` recorded times (a grid's extension, full fine-tuning's own grid)
    and the runs trained again at a changed rate (sweep.json `reruns`)."""
    measured = [t for p in sorted(out.glob("runs/*/*/lr_*.json")) for t in json.loads(p.read_text()).get("seconds", {}).values()]
    runs = [r["seconds"] for sweeps in stored.values() for s in sweeps for r in s.get("reruns", {}).values()]
    return {"rates": len(measured), "rate_seconds": float(sum(measured)), "runs": len(runs),
            "run_seconds": float(sum(runs))}


def protocol() -> dict:
    """The study's fixed constants, recorded beside its results (the book quotes them from here)."""
    return {"acc_tolerance": ACC_TOLERANCE, "zero": ZERO, "ci_percentiles": list(CI),
            "n_boot": N_BOOT, "dense_all_up_to": DENSE_ALL_UP_TO, "dense_stride": DENSE_STRIDE,
            "budgets": [b for _, b in RULE_VARIANTS.values() if b is not None], "lenses": list(LENS_VARIANTS)}
