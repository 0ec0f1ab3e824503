"""One bar for every rule: the knee study's pre-registered criteria judge the paper's rule, top-25%,
the depth-only rule and every frozen candidate alike, and the outcome decides what freezelab recommends.

For a rule R over the held-out pairs (`knee.held_out`), against the paper's rule `DEFAULT_VARIANT`
(the reference):

(a) R lowers the cost regret against the reference with a 95% CI above zero (`results.side`) on at
    least `MIN_PAIRS` pairs;
(b) R's frontier regret exceeds the reference's by at most `MAX_FRONTIER_RAISE` on every pair;
(c) R's mean cost regret is lower than that of top-25% and of the depth-only rule (those of them that
    are not R), with a mean frontier regret no higher;
(d) R's mean oracle gap exceeds the reference's by at most `MAX_FRONTIER_RAISE`.

The reference cannot be compared with itself: (a), (b) and (d) do not apply to it (`None`), (c) does.
The recommendation (`recommend`), declared with issue 22 after the study's outcome was known:
a challenger meeting every criterion, the lowest mean cost regret first; else the paper's rule if it
meets (c); else the rule meeting the largest share of its criteria. Ties: the lower mean cost regret,
then frontier regret, oracle gap and cost. Until every held-out pair has every seed, it stays pending.
`--rule argmax-excess` always remains the paper's rule by that name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from freezelab.study.knee import DEPTH
from freezelab.study.results import side
from freezelab.study.sweep import DEFAULT_VARIANT

MIN_PAIRS = 3
MAX_FRONTIER_RAISE = 0.005  # 0.5 accuracy points, as a fraction
TRIVIAL = (DEPTH, "top25")  # the rules that know only depth: criterion (c)'s yardsticks
KEYS = ("cost_regret", "frontier_regret_acc", "oracle_gap", "cost")
RECOMMENDATION = Path(__file__).resolve().parents[1] / "recommendation.json"  # shipped with the package


def means(pairs: Sequence[dict], name: str) -> dict[str, float]:
    """A rule's metrics averaged over the held-out pairs that ran it (point estimates)."""
    have = [p["rules"][name] for p in pairs if name in p["rules"]]
    return {key: float(np.mean([r[key] if key == "cost" else r[key]["mean"] for r in have])) if have else float("nan")
            for key in KEYS}


def criteria(pairs: Sequence[dict], name: str) -> dict:
    """Criteria (a)-(d) for rule `name` over the held-out `pairs`: each met (True/False) or not
    applicable (None), with the numbers each one read."""
    have = [p["rules"][name] for p in pairs if name in p["rules"]]
    mine = means(pairs, name)
    rivals = {base: means(pairs, base) for base in TRIVIAL if base != name}
    beats = {base: bool(mine["cost_regret"] < m["cost_regret"] and mine["frontier_regret_acc"] <= m["frontier_regret_acc"])
             for base, m in rivals.items()}
    out = {"pairs": len(have), "mean": mine, "rivals": rivals, "beats": beats,
           "criteria": {"a": None, "b": None, "c": all(beats.values()), "d": None}}
    if name != DEFAULT_VARIANT:
        lower = sum(side(r["delta_cost_regret"]) > 0 for r in have)
        worst = max((r["delta_frontier_regret_acc"]["mean"] for r in have), default=float("nan"))
        gap = float(np.mean([r["delta_oracle_gap"]["mean"] for r in have])) if have else float("nan")
        out.update(pairs_lower_cost_regret=int(lower), worst_frontier_raise=worst, mean_oracle_gap_raise=gap)
        out["criteria"].update(a=bool(lower >= MIN_PAIRS), b=bool(worst <= MAX_FRONTIER_RAISE),
                               d=bool(gap <= MAX_FRONTIER_RAISE))
    applicable = [ok for ok in out["criteria"].values() if ok is not None]
    out["met_share"] = sum(applicable) / len(applicable)
    out["meets"] = all(applicable)
    return out


def recommend(judged: dict[str, dict]) -> tuple[str, str]:
    """(the recommended rule, why: 'meets every criterion', 'the paper's rule meets its criterion' or
    'meets the most criteria')."""
    order = lambda n: (*(judged[n]["mean"][k] for k in KEYS), n)  # noqa: E731  (cost regret, frontier, gap, cost)
    winners = sorted((n for n, v in judged.items() if v["meets"] and n != DEFAULT_VARIANT), key=order)
    if winners:
        return winners[0], "meets every criterion"
    if judged[DEFAULT_VARIANT]["meets"]:
        return DEFAULT_VARIANT, "the paper's rule meets its criterion"
    return min(judged, key=lambda n: (-judged[n]["met_share"], *order(n))), "meets the most criteria"


def judge(study: dict) -> dict:
    """summary.json's `decision`: every judged rule's criteria and the recommended rule."""
    pairs = study.get("held_out", [])
    out: dict = {"reference": DEFAULT_VARIANT, "min_pairs": MIN_PAIRS, "max_frontier_raise": MAX_FRONTIER_RAISE,
                 "final": bool(study.get("final")), "pairs": len(pairs), "rules": {}}
    names = list(dict.fromkeys(n for p in pairs for n in p["rules"]))
    if DEFAULT_VARIANT not in names:
        return {**out, "recommended": DEFAULT_VARIANT, "why": "no held-out pair yet", "status": "pending"}
    out["rules"] = {name: criteria(pairs, name) for name in names}
    best, why = recommend(out["rules"])
    if not out["final"]:
        return {**out, "recommended": DEFAULT_VARIANT, "leading": best, "why": why, "status": "pending"}
    out["depth_share"] = study["development"]["depth_share"]
    return {**out, "recommended": best, "why": why, "status": "final"}


def usage(name: str, depth_share: float | None) -> str:
    """How to follow rule `name` with the command line."""
    if name == DEPTH:
        return f"`freezelab finetune --plan top:K` with K the top {100 * depth_share:.0f}% of the model's blocks"
    if name == "top25":
        return "`freezelab finetune --plan top25`"
    rule, lens = name.split("/")
    head, _, share = rule.rpartition("-")
    option = f"--rule {head} --share {share}" if head in ("knee", "knee-gain") else f"--rule {rule}"
    return f"`freezelab plan {option}` through the `{lens}` lens"


def recommendation(summary: dict) -> dict:
    """What `freezelab plan` reads (freezelab/recommendation.json): the recommended rule, how to
    follow it, and the study's headline."""
    d = summary["decision"]
    return {"recommended": d["recommended"], "paper_rule": DEFAULT_VARIANT, "status": d["status"],
            "why": d["why"], "depth_share": d.get("depth_share"), "headline": summary["headline"],
            "usage": usage(d["recommended"], d.get("depth_share"))}


def variant(rule: str, share: float | None, lens: str, restrict_to_labels: bool) -> str:
    """The study's name ("rule/lens") of a plan made with these `freezelab plan` options."""
    lens_name = {True: "logit-labels", False: "logit-full"}[restrict_to_labels] if lens == "logit" else lens
    return f"{rule}{'' if share is None else f'-{share:g}'}/{lens_name}"


def plan_note(used: str, num_layers: int, path: Path = RECOMMENDATION) -> str | None:
    """The one-line note `freezelab plan` prints after its table when the study recommends a rule
    other than `used` (`variant`); None when it does not, while it is pending, or with no study shipped."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec["status"] != "final" or rec["recommended"] == used:
        return None
    here = (f" (K = {max(1, round(rec['depth_share'] * num_layers))} of {num_layers} blocks here)"
            if rec["recommended"] == DEPTH else "")
    return (f"note: freezelab's oracle study recommends {rec['recommended']} ({rec['why']}) over this rule: "
            f"{rec['usage']}{here}; see the book's results chapter.")
