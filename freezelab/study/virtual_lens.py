"""The virtual lens's options, chosen on the development pair only (`knee.DEV_PAIR`), as the knee study chooses.

For every seed of the development pair's stored sweeps, the calibration sample is drawn again
exactly as the study drew it (`runner.study_split`), traced, and read through every option set
of the `virtual` lens (`method.virtual`); the paper's rule (`argmax-excess`) picks a cut from
each reading. The development score is the knee study's (`knee._knee_miss`, `results.Grid`):
the mean |knee distance| in blocks over seeds (the knee: the cheapest grid cut within 1 accuracy
point of the best), with its paired-bootstrap 95% interval over test examples. Declared
tie-break: the cheaper mean cut (modelled cost), then the option set closest to the authors' code
(fewest options changed from `AUTHORS`), then the registry's order. Beside each option set: its
per-seed frontier regret and oracle gap (accuracy) where the sweep ran its cut, and the same
scores for trivial rules (top-25%, the default lens) and for a control that removes the line
(`NORM_ONLY`: d_l = ||N(h_l)||), so that the chosen one can be seen to fail, or to read nothing
but the norm. A consistency check: the default lens's cut recomputed here must equal the stored sweep's.

    python -m freezelab.study.virtual_lens             # traces with the real model (minutes on 2
                                                        # cores), writes book/results/virtual_lens.json
    python -m freezelab.study.virtual_lens --rescore   # the stored cuts scored again (no model)
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json
from freezelab.method.gains import layer_gains
from freezelab.method.law import fit_scaling_law
from freezelab.method.lens import LENSES, Deviation, lens_spec, normed
from freezelab.method.pipeline import read_trace
from freezelab.method.plan import plan
from freezelab.method.trace import trace_encoded
from freezelab.model.data import load_task
from freezelab.model.encode import encode
from freezelab.model.models import load_model
from freezelab.study.knee import DEV_PAIR, LENS, RULE
from freezelab.study.results import N_BOOT, TRIVIAL_RULES, Grid, interval, load_sweeps
from freezelab.study.runner import SCALES, study_split

AUTHORS = {"distance": "cosine", "base": "token", "index": "l"}  # what compute_traction does (method.virtual)
OUT = Path("book/results/virtual_lens.json")
NORM_ONLY = "norm-only control"  # d_l = ||N(h_l)||: the virtual lens with its line removed


def option_sets() -> list[dict[str, str]]:
    """Every combination of the virtual lens's options, in the registry's order."""
    options = LENSES["virtual"].options
    return [dict(zip(options, values)) for values in itertools.product(*options.values())]


def virtual_cuts(seeds: Sequence[int], scale_name: str = "full") -> dict[str, list[int]]:
    """The paper's rule's cut per seed through every virtual option set (by its spec), the default
    lens (`RULE/LENS`, recomputed from the same traces to check them against the stored sweeps) and
    `NORM_ONLY` (the control: the distance to the origin instead of to the virtual line)."""
    scale = SCALES[scale_name]
    model, dataset = DEV_PAIR
    lm, task = load_model(model), load_task(dataset)
    cuts: dict[str, list[int]] = {}
    for seed in seeds:
        parts, _ = study_split(task, scale, seed)
        tr = trace_encoded(lm, encode(lm.tokenizer, task, parts.calib, scale.max_length), progress=False)
        norms = normed(lm, tr).norm(dim=-1).double().numpy()  # (n, L+1)
        control = Deviation("norm", False, norms, norms.mean(0))
        readings = {f"{RULE}/{LENS}": read_trace(tr, lm, "logit", True).gains,
                    NORM_ONLY: layer_gains(control, fit_scaling_law(control)),
                    **{spec: read_trace(tr, lm, spec).gains for spec in map(_spec, option_sets())}}
        for name, gains in readings.items():
            cuts.setdefault(name, []).append(plan(gains, rule=RULE).cut)
    return cuts


def _spec(options: dict[str, str]) -> str:
    return lens_spec(LENSES["virtual"], options)


def seed_regrets(sweep: dict, cut: int) -> dict[str, float | None]:
    """Frontier regret and oracle gap (accuracy, a fraction) of `cut` on one seed's sweep: None
    where the sweep did not run that cut."""
    acc = {c["cut"]: float(np.mean(c["per_example_correct"])) for c in sweep["cuts"]}
    cost = {c["cut"]: c["cost_ratio"] for c in sweep["cuts"]}
    if cut not in acc:
        return {"frontier_regret_acc": None, "oracle_gap": None}
    frontier = max(a for k, a in acc.items() if cost[k] <= cost[cut] + 1e-12)
    return {"frontier_regret_acc": frontier - acc[cut], "oracle_gap": max(acc.values()) - acc[cut]}


def score(grid: Grid, sweeps: Sequence[dict], cuts: Sequence[int], cost: dict[int, float],
          references: dict[str, Sequence[int]], n_boot: int) -> dict:
    """One rule's development score: mean |knee distance| (blocks) with its interval, its paired
    difference from each of the `references` (name -> cuts; < 0: nearer the knee), mean modelled
    cost, and per-seed regrets."""
    point, mine = grid.boots(lambda v, i: abs(v.knee - cuts[i]), n_boot)
    minus = {}
    for name, ref in references.items():
        point_ref, boots_ref = grid.boots(lambda v, i: abs(v.knee - ref[i]), n_boot)
        minus[name] = interval(point - point_ref, mine - boots_ref)
    return {"cuts": list(cuts), "knee_miss": interval(point, mine), "knee_miss_minus": minus,
            "cost": float(np.mean([cost[k] for k in cuts])),
            "per_seed": [seed_regrets(s, k) for s, k in zip(sweeps, cuts)]}


def cut_costs(sweeps: Sequence[dict], L: int) -> dict[int, float]:
    """The modelled cost ratio of every cut 0..L-1 as the sweeps priced it: affine in the cut (blocks
    of equal size; exact to 1e-15 on the stored sweeps), so a cut no sweep ran is read off the line."""
    known = {c["cut"]: c["cost_ratio"] for s in sweeps for c in s["cuts"]}
    slope, intercept = np.polyfit(list(known), list(known.values()), 1)
    return {k: float(intercept + slope * k) for k in range(L)}


def choose(sweeps: Sequence[dict], cuts: dict[str, list[int]], control: Sequence[int], n_boot: int = N_BOOT) -> dict:
    """Every virtual option set's development score from its cuts per seed (`virtual_cuts`) on the
    development pair's `sweeps` (one per seed, in the seeds' order), the choice, and the same score
    for trivial rules and the norm-only `control` cuts."""
    grid = Grid(sweeps)
    cost = cut_costs(sweeps, grid.L)
    sets = {_spec(o): o for o in option_sets()}
    trivial = {f"{RULE}/{LENS}": [s["variants"][f"{RULE}/{LENS}"] for s in sweeps], NORM_ONLY: list(control),
               **{name: [rule(grid.L)] * len(sweeps) for name, rule in TRIVIAL_RULES.items()}}
    references = {"authors": cuts[_spec(AUTHORS)], "top25": trivial["top25"], NORM_ONLY: trivial[NORM_ONLY]}
    scores = {spec: score(grid, sweeps, cuts[spec], cost, references, n_boot) for spec in sets}

    def rank(spec: str) -> tuple:
        changed = sum(sets[spec][k] != v for k, v in AUTHORS.items())
        return (scores[spec]["knee_miss"]["mean"], scores[spec]["cost"], changed, list(sets).index(spec))

    chosen = min(scores, key=rank)
    return {
        "dev_pair": list(DEV_PAIR), "seeds": [s["seed"] for s in sweeps], "rule": RULE,
        "criterion": "mean |knee distance| over seeds (blocks), ties: lower mean cost, then fewer options "
                     "changed from the authors' code, then registry order",
        "knee_cut": grid.knee(grid.acc.mean(-1).mean(0), grid.full_acc.mean())[0],
        "authors": _spec(AUTHORS), "chosen": chosen, "chosen_options": sets[chosen],
        "options": scores,
        "trivial": {name: score(grid, sweeps, c, cost, references, n_boot) for name, c in trivial.items()},
        "n_boot": n_boot,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="choose the virtual lens's options on the development pair")
    parser.add_argument("--results", default="book/results", help="the study's folder (runs/MODEL/DATASET/seedS)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--rescore", action="store_true",
                        help="reuse the cuts stored in --out (no model): only the scores are recomputed")
    args = parser.parse_args(argv)
    sweeps = sorted(load_sweeps(Path(args.results)).get(DEV_PAIR, []), key=lambda s: s["seed"])
    if not sweeps:
        raise FreezelabError(f"no stored sweeps of {DEV_PAIR} under {args.results}")
    stored = [s["variants"][f"{RULE}/{LENS}"] for s in sweeps]
    if args.rescore:
        before = json.loads(Path(args.out).read_text())
        cuts = {spec: s["cuts"] for spec, s in before["options"].items()}
        cuts.update({f"{RULE}/{LENS}": before["check"]["recomputed"], NORM_ONLY: before["trivial"][NORM_ONLY]["cuts"]})
    else:
        cuts = virtual_cuts([s["seed"] for s in sweeps])
    default, control = cuts.pop(f"{RULE}/{LENS}"), cuts.pop(NORM_ONLY)
    if default != stored:
        raise FreezelabError(f"the default lens's cuts recomputed here {default} differ from the stored "
                             f"sweeps' {stored}: the calibration sample or the trace is not the study's")
    result = {**choose(sweeps, cuts, control),
              "check": {"lens": f"{RULE}/{LENS}", "recomputed": default, "stored": stored}}
    atomic_write_json(args.out, result)
    for spec, s in result["options"].items():
        print(f"{spec:48s} cuts {s['cuts']}  |knee distance| {s['knee_miss']['mean']:.2f} "
              f"[{s['knee_miss']['lo']:.2f}, {s['knee_miss']['hi']:.2f}]  cost {s['cost']:.3f}")
    print(f"knee {result['knee_cut']}; chosen: {result['chosen']}")
    return result


if __name__ == "__main__":
    main()
