"""Score rules written later on every stored oracle sweep, without loading a model.

A rules file is a Python file; each public top-level function defined in it is a rule. A rule
takes one stored trace `t` (`tracefile.StoredTrace`: one seed's calibration set of one model x
data set) and returns a cut k in 0..L-1 (blocks 1..k frozen, k+1..L trained):

- `t.num_layers`: L;
- `t.deviation[lens]`: (calibration examples, L+1) deviations d_0..d_L in nats, per lens variant
  (`t.lenses` lists them; `logit-labels` is the paper's);
- `t.cost[k]`: (L,) modelled step cost of cut k, a share of full fine-tuning's (frozen prefix cached).

    # my_rules.py
    import numpy as np
    from freezelab import fit_scaling_law, layer_gains, plan

    def paper(t):  # the paper's rule: argmax of the excess gain on the label-restricted logit lens
        d = t.deviation["logit-labels"].mean(0)
        return plan(layer_gains(d, fit_scaling_law(d)), rule="argmax-excess").cut

    def cheapest_below(t, budget=0.4):
        return int(np.flatnonzero(t.cost <= budget)[0])

From the command line, `freezelab rules score my_rules.py [--oracles DIR ...] [--json PATH]` prints
the leaderboard; from Python, `score_rules("my_rules.py", oracles=["book/results"])` (or a module)
returns a `Scores`. Each oracle folder holds `runs/MODEL/DATASET/seedS/` sweeps (`sweep.json`, and
`trace.npz` or, for older sweeps, the default lens's mean deviation in `sweep.json` and the cut
costs in `plan.json`). Every rule is scored on every model x data set with the study's metrics
(`results.metric_boots` and `results.deltas`: cost regret, frontier regret, oracle gap, knee distance), beside the paper's
rule, top-25% and the depth-only rule (its share frozen on the development pair, `knee.develop`),
with paired bootstrap CIs of the differences; replicate j of every pair is averaged into replicate j
of the mean over pairs. A cut that a pair's grid did not run is scored at the nearest grid cut
(ties to the cheaper one) and counted in `snapped`.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import numpy as np

from freezelab.errors import FreezelabError
from freezelab.study.knee import DEPTH, DEV_PAIR, depth_cut, develop
from freezelab.method.gains import layer_gains
from freezelab.method.law import BoundWarning, LowFitWarning, fit_scaling_law
from freezelab.method.plan import plan
from freezelab.study.results import (N_BOOT, TRIVIAL_RULES, Grid, deltas, interval, load_sweeps,
                                     metric_boots, side)
from freezelab.study.sweep import DEFAULT_VARIANT
from freezelab.study.tracefile import StoredTrace, load_trace

PAPER = DEFAULT_VARIANT
TOP25 = "top-25%"
STUDY = Path(__file__).resolve().parents[2] / "book" / "results"  # a checkout's stored study


@dataclass
class Scores:
    """Every rule's metrics over the stored pairs: `rules[name][metric]` = {mean, lo, hi} of the
    mean over pairs, `vs[name][reference][delta]` the paired differences (see `results.compare`),
    `pairs[name]` the per-pair metrics; `snapped[name]` counts cuts scored at the nearest grid cut."""

    pairs_scored: list[str]
    rules: dict[str, dict] = field(default_factory=dict)
    vs: dict[str, dict] = field(default_factory=dict)
    pairs: dict[str, dict] = field(default_factory=dict)
    snapped: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # the rules of the file, in its order
    waiting: list[str] = field(default_factory=list)  # stored pairs left out: no sweep complete at the picked rates

    def to_dict(self) -> dict:
        return {"pairs_scored": self.pairs_scored, "rules": self.rules, "vs": self.vs, "pairs": self.pairs,
                "snapped": self.snapped, "written": self.written, "waiting": self.waiting}


def stored_trace(folder: Path, sweep: dict) -> StoredTrace:
    """One seed's stored trace: `trace.npz` when the sweep wrote one (`tracefile.load_trace`), else the
    default lens's mean deviation from `sweep.json` (one row) and the cut costs from `plan.json`."""
    if (folder / "trace.npz").exists():
        return load_trace(folder / "trace.npz")
    if not (folder / "plan.json").exists():
        raise FreezelabError(f"{folder} has neither trace.npz nor plan.json: no trace to score a rule on")
    curve = json.loads((folder / "plan.json").read_text())["curve"]
    cost = np.array([c["cost_ratio_cached"] for c in sorted(curve, key=lambda c: c["cut"])])
    return StoredTrace(sweep["num_layers"], {PAPER.split("/")[1]: np.asarray(sweep["deviation"], float)[None]}, cost)


def load_rules(source: str | Path | ModuleType) -> dict[str, Callable]:
    """The public top-level functions of a rules file (or module), in the order they are defined."""
    if isinstance(source, ModuleType):
        module = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FreezelabError(f"rules file '{path}' not found")
        spec = importlib.util.spec_from_file_location(f"freezelab_rules_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the file's own error, in one line
            raise FreezelabError(f"rules file '{path}' does not load: {type(e).__name__}: {e}") from None
    rules = {name: fn for name, fn in vars(module).items() if inspect.isfunction(fn) and not name.startswith("_")
             and fn.__module__ == module.__name__}
    if not rules:
        raise FreezelabError(f"'{getattr(module, '__file__', module.__name__)}' defines no public function: a rule "
                             "is a top-level function that takes a stored trace t and returns a cut k")
    return dict(sorted(rules.items(), key=lambda kv: kv[1].__code__.co_firstlineno))


def apply(name: str, rule: Callable, t: StoredTrace, oracle: str) -> int:
    """The cut rule `name` picks on trace `t` (of `oracle`, for errors), checked: an integer in 0..L-1."""
    try:
        with warnings.catch_warnings():  # the law's fit warnings, once per trace, would drown the leaderboard
            warnings.simplefilter("ignore", LowFitWarning)
            warnings.simplefilter("ignore", BoundWarning)
            k = rule(t)
    except Exception as e:
        raise FreezelabError(f"rule '{name}' raised {type(e).__name__} on oracle {oracle}: {e}") from None
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 0 <= k < t.num_layers:
        raise FreezelabError(f"rule '{name}' returned {k!r} on oracle {oracle}: a cut is an integer in "
                             f"0..{t.num_layers - 1} (blocks 1..k frozen)")
    return int(k)


def paper_cut(deviation: np.ndarray) -> int:
    """The paper's rule on one lens's deviations (n, L+1): argmax of the excess gain over the law
    fitted to the mean trace."""
    d = deviation.mean(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowFitWarning)
        warnings.simplefilter("ignore", BoundWarning)
        return plan(layer_gains(d, fit_scaling_law(d)), rule="argmax-excess").cut


def trace_variants(sweep: dict) -> dict[str, int]:
    """`argmax-excess/LENS` -> cut for every lens variant of the sweep's stored trace that its plan
    did not read (the options of the virtual lens): the paper's rule through them, from disk."""
    path = Path(sweep["folder"]) / "trace.npz"
    if not path.exists():
        return {}
    t = load_trace(path)
    rule = PAPER.split("/")[0]
    return {f"{rule}/{lens}": paper_cut(d) for lens, d in t.deviation.items() if f"{rule}/{lens}" not in sweep["variants"]}


def stored_pairs(oracles: Sequence[str | Path]) -> dict[tuple[str, str], tuple[list[dict], list[Path]]]:
    """Every model x data set with complete sweeps in the oracle folders: its sweeps and their folders."""
    out: dict = {}
    for root in map(Path, oracles):
        for pair, sweeps in load_sweeps(root).items():
            done = [s for s in sweeps if s["complete"]]
            if done:
                out[pair] = (done, [root / "runs" / pair[0] / pair[1] / f"seed{s['seed']}" for s in done])
    if not out:
        raise FreezelabError(f"no complete oracle sweep under {', '.join(map(str, oracles))} "
                             "(expected runs/MODEL/DATASET/seedS/sweep.json)")
    return out


def score_rules(source: str | Path | ModuleType, oracles: Sequence[str | Path] = (STUDY,),
                n_boot: int = N_BOOT) -> Scores:
    """Score every rule of `source` (a rules file or module) on every stored oracle in `oracles`."""
    written = load_rules(source)
    stored = stored_pairs(oracles)
    share = develop(stored[DEV_PAIR][0])["depth_share"] if DEV_PAIR in stored else None
    waiting = sorted({f"{m} x {d}" for root in map(Path, oracles) for m, d in load_sweeps(root)} - {f"{m} x {d}" for m, d in stored})
    scores = Scores([f"{m} x {d}" for m, d in stored], written=list(written), waiting=waiting)
    boots: dict[str, dict[str, list]] = {}
    for (model, dataset), (sweeps, folders) in stored.items():
        grid = Grid(sweeps)
        traces = {f"{model} x {dataset} seed {s['seed']}": stored_trace(f, s) for f, s in zip(folders, sweeps)}
        refs = {PAPER: [s["variants"][PAPER] for s in sweeps], TOP25: [TRIVIAL_RULES["top25"](grid.L)] * len(sweeps)}
        if share is not None:
            refs[DEPTH] = [depth_cut(grid, share)] * len(sweeps)
        cuts = {**{name: [apply(name, fn, t, oracle) for oracle, t in traces.items()] for name, fn in written.items()}, **refs}
        measured = {}
        for name, picked in cuts.items():
            on_grid = grid.snap(picked)
            scores.snapped[name] = scores.snapped.get(name, 0) + sum(a != b for a, b in zip(picked, on_grid))
            scores.pairs.setdefault(name, {})[f"{model} x {dataset}"] = {"cuts": picked, "scored_at": on_grid}
            measured[name] = metric_boots(grid, on_grid, n_boot)
        for name, mine in measured.items():
            for key, pb in mine.items():
                boots.setdefault(name, {}).setdefault(("", key), []).append(pb)
            for ref in refs:
                if ref != name:
                    for key, pb in deltas(mine, measured[ref]).items():
                        boots[name].setdefault((ref, key), []).append(pb)
    for name, buckets in boots.items():
        for (ref, key), per_pair in buckets.items():
            mean = interval(np.mean([p for p, _ in per_pair]), np.mean([b for _, b in per_pair], 0))
            if ref:
                scores.vs.setdefault(name, {}).setdefault(ref, {})[key] = mean
            else:
                scores.rules.setdefault(name, {})[key] = {**mean, "pairs": len(per_pair)}
    return scores


def _ci(x: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{x['mean'] * scale:.{digits}f} [{x['lo'] * scale:.{digits}f}, {x['hi'] * scale:.{digits}f}]"


def _verdict(delta: dict, better_if_positive: bool) -> str:
    s = side(delta) * (1 if better_if_positive else -1)
    return {1: "better", -1: "worse", 0: "no detectable difference"}[s]


def leaderboard(scores: Scores) -> str:
    """The printed leaderboard: every rule's mean metrics over the pairs with 95% CIs, lowest mean
    cost regret first, then each written rule against each reference, paired."""
    lines = [f"Scored on {len(scores.pairs_scored)} model x data set pairs: {', '.join(scores.pairs_scored)}.",
             "Means over pairs [95% paired bootstrap CI]; regrets and gaps in accuracy points, cost regret as a "
             "share of full fine-tuning's cost, knee distance in blocks (> 0: trains more than the knee)."]
    if scores.waiting:
        lines.append(f"Left out: {', '.join(scores.waiting)} (no sweep complete at the picked learning rates: "
                     "runs wait to be trained again)" + ("; without the development pair there is no depth-only "
                                                         "reference" if " x ".join(DEV_PAIR) in scores.waiting
                                                         else "") + ".")
    lines += ["", ""]
    order = sorted(scores.rules, key=lambda n: (scores.rules[n]["cost_regret"]["mean"], n))
    label = {n: n if n in scores.written else f"{n} (reference)" for n in order}
    width = max(map(len, label.values()))
    lines[-1] = f"{'rule':<{width}} {'cost regret':>18} {'frontier regret':>18} {'oracle gap':>18} {'knee distance':>18}"
    for name in order:
        r = scores.rules[name]
        lines.append(f"{label[name]:<{width}} {_ci(r['cost_regret']):>18} {_ci(r['frontier_regret_acc'], 100, 1):>18} "
                     f"{_ci(r['oracle_gap'], 100, 1):>18} {_ci(r['knee_distance'], digits=1):>18}")
    if len(order) > 1:
        a, b = (scores.rules[n]["cost_regret"] for n in order[:2])
        if a["hi"] >= b["lo"]:
            lines.append(f"The lowest mean cost regret ({order[0]}) rests on intervals that overlap {order[1]}'s; "
                         "the paired differences below say whether rules differ.")
    lines += ["", "Paired against each reference (cost regret saved: > 0 better; frontier regret and oracle gap "
                  "added, in points: > 0 worse):"]
    for name in scores.written:
        for ref, d in scores.vs.get(name, {}).items():
            lines.append(f"  {name} vs {ref}: cost regret saved {_ci(d['delta_cost_regret'])} "
                         f"({_verdict(d['delta_cost_regret'], True)}); frontier regret added "
                         f"{_ci(d['delta_frontier_regret_acc'], 100, 1)} ({_verdict(d['delta_frontier_regret_acc'], False)}); "
                         f"oracle gap added {_ci(d['delta_oracle_gap'], 100, 1)} ({_verdict(d['delta_oracle_gap'], False)})")
    snapped = {n: c for n, c in scores.snapped.items() if c and n in scores.written}
    if snapped:
        lines += ["", "Cuts the grid did not run, scored at the nearest grid cut: "
                  + ", ".join(f"{n} {c}" for n, c in snapped.items()) + "."]
    return "\n".join(lines)
