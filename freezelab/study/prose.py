"""The oracle study's generated prose: every sentence of verdict.md, protocol.md and the headline,
each number read from summary.json (`collect.collect`), every comparison read from a paired interval
(`results.side`: a bound within `results.ZERO` of zero touches it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freezelab.study.results import ACC_TOLERANCE, CI, rank_key, side

PAPER_CLAIM = ("\"The results show that our approach is effective and efficient, and outperforms the existing "
               "baselines.\"")  # the paper's abstract, quoted beside the verdict


LEVEL = f"{CI[1] - CI[0]:g}%"  # the bootstrap interval's level, as the tables print it


def num(v: float, digits: int = 2) -> str:
    """v with `digits` decimals, never "-0.00"."""
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def ci(x: dict, scale: float = 1.0, digits: int = 2) -> str:
    """'mean [lo, hi]' of a {mean, lo, hi} dict."""
    return f"{num(x['mean'] * scale, digits)} [{num(x['lo'] * scale, digits)}, {num(x['hi'] * scale, digits)}]"


def _rho(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _n(count: int, word: str) -> str:
    """'1 seed', '3 seeds'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def model_name(model: str) -> str:
    """The registry's name of an offline model and what it is: 'SmolLM2-135M-Instruct (dequantised Q4 GGUF)'."""
    from freezelab.model.models import OFFLINE_MODELS

    known = OFFLINE_MODELS.get(model)
    return f"{known.description.split(' (')[0]} (dequantised Q4 GGUF)" if known else model


def _per_seed(values: Sequence) -> str:
    """One seed's value as is, several as a list."""
    return f"{values[0]}" if len(values) == 1 else f"{list(values)} (per seed)"


def budget_lines(budget: dict) -> list[str]:
    """The study's budget as a sentence (from the scale it ran at)."""
    return [f"Budget: per model x data set, {budget['n_train']} training examples (one epoch of "
            f"{budget['n_train'] // budget['batch_size']} AdamW steps of batch {budget['batch_size']}), "
            f"{budget['n_val']} validation examples for the learning rates (block training from "
            f"{list(budget['lr_grid'])}, LoRA from {list(budget['lora_lr_grid'])}"
            + (f", full fine-tuning from {list(budget['full_lr_grid'])}" if budget.get("full_lr_grid") else "")
            + f"; a grid is extended while its pick sits on an edge), up to {budget['n_test']} test "
            f"examples, {budget['n_calib']} calibration examples per seed, prompts cut to {budget['max_length']} "
            f"tokens; seeds {list(budget['seeds'])} (language modelling: {list(budget['lm_seeds'])}); "
            f"models {', '.join(budget['models'])}; data sets {', '.join(budget['datasets'])}.", ""]


def _interval_says(x: dict, above: str, below: str, neither: str) -> str:
    """Which side of zero a {mean, lo, hi} interval lies on (`results.side`)."""
    return {1: above, -1: below, 0: neither}[side(x)]


def so_far(summary: dict) -> str:
    """' so far' while planned sweeps are missing, else nothing: the tense follows completeness."""
    return " so far" if summary.get("status", {}).get("missing") else ""


def _for_top25(delta: dict, sign: float) -> str:
    """'better', 'worse' or 'no detectable difference' for top25, from a paired difference whose
    positive side is top25's gain when `sign` > 0 (its loss when `sign` < 0)."""
    lo, hi = sorted((sign * delta["lo"], sign * delta["hi"]))
    return _interval_says({"lo": lo, "hi": hi}, "better", "worse", "no detectable difference")


def top25_outcome(vs: dict) -> str:
    """top25's paired differences from the plan (`results.compare`), each read from its interval."""
    metrics = [("cost regret", vs["delta_cost_regret"], 1, 2, "saved"),
               ("frontier regret", vs["delta_frontier_regret_acc"], -100, 1, "added, in points"),
               ("oracle gap", vs["delta_oracle_gap"], -100, 1, "added, in points")]
    said, verdicts = [], {}
    for metric, delta, sign, digits, unit in metrics:
        better = _for_top25(delta, sign)
        verdicts.setdefault(better, []).append(metric)
        said.append(f"{metric} {ci(delta, abs(sign), digits)} {unit} ({better})")
    if set(verdicts) == {"better"}:
        overall = "better than the plan on all three"
    elif set(verdicts) == {"worse"}:
        overall = "worse than the plan on all three"
    elif set(verdicts) == {"no detectable difference"}:
        overall = "not detectably different from the plan"
    else:
        overall = "mixed: " + "; ".join(f"{v} on {', '.join(m)}" for v, m in verdicts.items())
    return "; ".join(said) + f": {overall}"


def compute_sentence(status: dict) -> str:
    """What the complete sweeps cost in wall time (`results.sweep_hours`), and what the rest would at their median."""
    if not status["complete"]:
        return ""
    median = status["median_sweep_hours"]
    text = (f" Their runs took {status['hours']:.1f} hours of wall time on the CPU that made them (the cache, "
            f"every grid cut and baseline; not the learning-rate picks; partly beside other work), "
            f"{60 * median:.0f} min per sweep at the median")
    left = len(status["missing"])
    return text + (f"; at that median the {_n(left, 'sweep')} still to come would take about "
                   f"{left * median:.1f} hours more." if left else ".")


def rerun_sentence(status: dict) -> str:
    """What the move to new learning rates cost (`results.rerun_cost`), or "" before any."""
    r = status.get("reruns") or {}
    if not r.get("rates") and not r.get("runs"):
        return ""
    return (f"Giving every family its own learning rate, strictly inside its grid, took {_n(r['rates'], 'added rate')} "
            f"measured on validation data ({r['rate_seconds'] / 3600:.1f} hours) and {_n(r['runs'], 'run')} trained "
            f"again at a changed rate ({r['run_seconds'] / 3600:.1f} hours), in wall time on the CPU that ran them.")


def status_sentence(status: dict) -> str:
    done, planned = status["complete"], status["planned"]
    text = f"**Status: {done} of {planned} planned sweeps (model x data set x seed) are complete"
    cost = " ".join(filter(None, [compute_sentence(status).strip(), rerun_sentence(status)]))
    cost = f" {cost}" if cost else ""
    if done == planned:
        return text + ".**" + cost
    left = "; ".join(f"{m} x {d} seed {seed}" for m, d, seed in status["missing"])
    waiting = "; ".join(f"{m} x {d} seed {seed} ({', '.join(fams)})" for m, d, seed, fams in status.get("stale", []))
    return (text + f"; the study is still running.** Still to come: {left}."
            + (f" Of these, waiting for a family's own learning rate (picked on validation data) or to be trained "
               f"again at it: {waiting}."
               if waiting else "") + cost
            + " Each pair below uses its complete seeds; its numbers can move as the other seeds arrive.")


def answer_lines(summary: dict) -> list[str]:
    """The central question, answered as far as the complete pairs go: the plan against top-25% and a
    random grid cut, and its per-block ranking against depth; counts of pairs by paired interval."""
    rows = [r for r in summary["rows"] if r["complete"] and r.get("top25_vs_plan")]
    if not rows:
        return []
    count = {}
    for r in rows:
        vs = r["top25_vs_plan"]
        for metric, delta, sign in (("cost", vs["delta_cost_regret"], 1), ("frontier", vs["delta_frontier_regret_acc"], -1)):
            won = {"better": "top25", "worse": "plan"}.get(_for_top25(delta, sign), "neither")
            count[(metric, won)] = count.get((metric, won), 0) + 1
        ms, md = r["marginal_spearman"], r["marginal_spearman_depth"]
        won = "plan" if ms["lo"] > md["hi"] else "top25" if md["lo"] > ms["hi"] else "neither"
        count[("rank", won)] = count.get(("rank", won), 0) + 1
    c = lambda metric, won: count.get((metric, won), 0)  # noqa: E731
    now = so_far(summary)
    default = summary["rules"].get("argmax-excess/logit-labels")
    random = summary["rules"].get("random-cut (expected)")
    text = (f"**The answer{now}**, over the {_n(len(rows), 'model x data set')} with complete seeds: against "
            f"top-25%, the plan's cut had the lower cost regret (paired interval clear of zero) on {c('cost', 'plan')}, "
            f"the higher on {c('cost', 'top25')}, and no detectable difference on {c('cost', 'neither')}; the lower "
            f"frontier regret on {c('frontier', 'plan')}, the higher on {c('frontier', 'top25')}, no detectable "
            f"difference on {c('frontier', 'neither')}. Its predicted per-block gains ranked the blocks detectably "
            f"better than depth alone on {c('rank', 'plan')}, detectably worse on {c('rank', 'top25')}, and no "
            f"differently on {c('rank', 'neither')}.")
    if default and random:
        text += (f" Over every pair{now}, the default rule's mean cost regret was {default['cost_regret']:.2f} and "
                 f"its mean frontier regret {100 * default['frontier_regret_acc']:.1f} points, against "
                 f"{random['cost_regret']:.2f} and {100 * random['frontier_regret_acc']:.1f} for a uniformly random "
                 "grid cut.")
    if c("cost", "plan") == c("frontier", "plan") == c("rank", "plan") == 0:
        text += " On none of these pairs did the trace's cut beat the rules that only know depth."
    return [text, ""]


def bound_lines(rows: Sequence[dict], now: str = "") -> list[str]:
    """How often the law's fit sat on a bound, over every seed's trace of every pair."""
    fits = [(f"{r['model']} x {r['dataset']}", law) for r in rows for law in r["law"]]
    if not fits:
        return []
    hits = {p: [name for name, law in fits if p in law.get("at_bound", [])] for p in ("E", "A", "alpha")}
    said = "; ".join(f"{p} on {len(names)} ({', '.join(dict.fromkeys(names))})" for p, names in hits.items() if names)
    return [f"The law's fit sat on a bound in {sum(bool(law.get('at_bound')) for _, law in fits)} of the "
            f"{len(fits)} traces{now}" + (f": {said}." if said else "."), ""]


def pair_sentences(row: dict) -> str:
    """The verdict's paragraph on one model x data set: the plan against its knee, its frontier, full
    fine-tuning, top25 and depth, every comparison by a paired CI."""
    name = (f"**{model_name(row['model'])} on {row['dataset']}** ({_n(len(row['seeds']), 'seed')}"
            f"{'' if row['complete'] else ', partial'})")
    fr, cr, kd = row["frontier_regret_acc"], row["cost_regret"], row["knee_distance"]
    ms, md = row["marginal_spearman"], row["marginal_spearman_depth"]
    reached = "" if row["knee_reached"] else (" (no grid cut came within "
                                              f"{100 * ACC_TOLERANCE:g} point of full fine-tuning: the most accurate cut)")
    parts = [f"{name}: the plan chose cut {_per_seed(row['chosen_cut'])}; the knee was at cut {row['knee_cut']}"
             f"{reached}, a distance of {ci(kd, digits=1)} blocks (knee minus plan: > 0 means the plan trained more "
             "blocks than the knee needed)."]
    parts.append(f"Frontier regret {ci(fr, 100, 1)} accuracy points"
                 + _interval_says(fr, " (the interval is above zero: a cheaper cut did better).",
                                  ".", " (no cheaper cut was detectably better; the best cheaper cut is "
                                       "picked in hindsight, so this regret leans high)."))
    parts.append(f"Cost regret {ci(cr)} of full fine-tuning's cost"
                 + _interval_says(cr, ": a cheaper cut was as accurate.", ".", "."))
    full = row["strategies"].get("full")
    if full is not None and full["acc_minus_plan"]["hi"] < 0:
        own = "full" in row.get("lr", {}) and np.isclose(full["lr"], row["lr"]["full"]["chosen"], rtol=1e-9, atol=0)
        parts.append(f"Full fine-tuning was less accurate than the plan's cut ({ci(full['acc_minus_plan'], 100, 1)} "
                     "points, paired), " + ("at its own learning rate picked on validation data." if own else
                                            f"at the block-training rate {full['lr']:g} (no rate of its own yet)."))
    vs = row.get("top25_vs_plan")
    if vs is not None:
        parts.append(f"top25 (cut {_per_seed(vs['cuts'])}) against the plan, paired on the same test examples: "
                     + top25_outcome(vs) + ".")
    apart = ms["lo"] > md["hi"] or md["lo"] > ms["hi"]
    parts.append(f"Per-block: Spearman of the predicted gains with the realised marginal gains {ci(ms)}, "
                 f"against {ci(md)} for depth alone in its better direction"
                 + (" (the intervals overlap: the method is not detectably better than depth)." if not apart else
                    " (the method is higher, the intervals apart)." if ms["mean"] > md["mean"] else
                    " (depth alone is higher, the intervals apart: the method does not beat depth)."))
    return " ".join(parts)


def lr_lines(rows: Sequence[dict]) -> list[str]:
    """Per learning rate of the sensitivity grid: its best cut, and the deepest (cheapest) cut within
    ACC_TOLERANCE of that best (seed 0, point estimates)."""
    lines = []
    for row in rows:
        curves = row.get("lr_sensitivity", {})
        if len(curves) < 2:
            continue
        parts = []
        for lr, c in sorted(curves.items(), key=lambda kv: float(kv[0])):
            acc = np.asarray(c["acc"])
            best = int(np.argmax(acc))
            near = max(k for k, a in zip(c["cuts"], acc) if a >= acc[best] - ACC_TOLERANCE)
            parts.append(f"at lr {lr}{' (chosen on validation data)' if c['chosen'] else ''} the best cut was "
                         f"{c['cuts'][best]} ({100 * acc[best]:.1f}%), the deepest within {100 * ACC_TOLERANCE:g} "
                         f"point of it {near}")
        lines += [f"**How much of the knee is the optimiser** ({model_name(row['model'])} on {row['dataset']}, seed 0, "
                  "point estimates without intervals): " + "; ".join(parts) + ".", ""]
    return lines


def verdict_lines(summary: dict) -> list[str]:
    """Sentences for the chapter, each number read from the summary; every comparison uses a paired CI."""
    lines = ([status_sentence(summary["status"]), ""] + decision_lines(summary) + answer_lines(summary)
             + budget_lines(summary["budget"]))
    if not summary["rows"]:
        lines.append("**No model x data set has finished a run yet**: the study is still running.")
    for row in summary["rows"]:
        lines += [pair_sentences(row), ""]
    now = so_far(summary)
    lines += bound_lines(summary["rows"], now) + lr_lines(summary["rows"]) + lowest_lines(summary["rules"], now)
    return lines


def lowest_lines(board: dict, now: str = "") -> list[str]:
    """The leaderboard's lowest mean cost regret among the rules measured on every pair, and whether
    its lead over the next rests on overlapping intervals and on a paired difference clear of zero."""
    everywhere = {name: r for name, r in board.items() if "ci" in r}
    if not everywhere:  # a rule whose cut some grid lacks is not ranked against the others
        return []
    ranked = sorted(everywhere, key=lambda name: (*rank_key(everywhere[name]), name))
    tied = [name for name in ranked if rank_key(everywhere[name]) == rank_key(everywhere[ranked[0]])]  # same cuts
    best = everywhere[ranked[0]]
    text = (f"Over every pair{now}, among the rules measured on every one, the lowest mean cost regret was "
            f"{' and '.join(f'`{n}`' for n in tied)}'s: {ci(best['ci']['cost_regret'], digits=3)} (frontier regret "
            f"{ci(best['ci']['frontier_regret_acc'], 100, 1)} accuracy points, oracle gap "
            f"{ci(best['ci']['oracle_gap'], 100, 1)}, mean cost {best['cost']:.2f}; {LEVEL} intervals of the mean "
            "over pairs).")
    if "lead" in best:
        lead, runner = best["lead"], everywhere[best["lead"]["over"]]["ci"]["cost_regret"]
        overlap = best["ci"]["cost_regret"]["hi"] >= runner["lo"]
        text += (f" The next, `{lead['over']}`, had {ci(runner, digits=3)}: "
                 + ("the two intervals overlap, so this lowest rests on overlapping intervals; paired, "
                    if overlap else "the intervals are apart; paired, ")
                 + f"its lead is {ci(lead['cost_regret'], digits=3)}"
                 + _interval_says(lead["cost_regret"], " (clear of zero).", " (below zero).",
                                  " (touching zero: no detectable lead)."))
    left = [n for n in board if n not in everywhere]
    return [text + " Rules some grid lacks are left out: " + (", ".join(f"`{n}`" for n in left) or "none") + ".", ""]


def rule_name(name: str, depth_share: float | None) -> str:
    """A judged rule as the prose names it."""
    if name == "depth-only":
        return f"the depth-only rule (train the top {100 * depth_share:.0f}% of the blocks)"
    return {"top25": "top-25%", "argmax-excess/logit-labels": "the paper's rule"}.get(name, f"`{name}`")


def headline(summary: dict) -> str:
    """One or two sentences: the paper's rule against the rules that know only depth on the held-out
    pairs, and what freezelab recommends (`decision.judge`)."""
    d = summary["decision"]
    if not d["rules"]:
        return "The study has no held-out model x data set yet: the paper's rule is not yet tested here."
    share = summary["knee_study"]["development"]["depth_share"]
    paper, now = d["rules"][d["reference"]], so_far(summary)
    rivals = "; ".join(f"{m['cost_regret']:.2f} and {100 * m['frontier_regret_acc']:.1f} for {rule_name(base, share)}"
                       for base, m in paper["rivals"].items())
    text = (f"On the {d['pairs']} held-out model x data set pair{'' if d['pairs'] == 1 else 's'}{now}, the paper's rule (argmax of the excess gain, "
            f"label-restricted logit lens) {'beat' if paper['criteria']['c'] else 'did not beat'} the rules that "
            f"know only depth: its mean cost regret was {paper['mean']['cost_regret']:.2f} of full fine-tuning's cost "
            f"and its mean frontier regret {100 * paper['mean']['frontier_regret_acc']:.1f} accuracy points, against "
            f"{rivals}.")
    if d["status"] == "pending":
        return text + (f" The decision waits for every seed; {rule_name(d['leading'], share)} leads{now}, and "
                       "freezelab keeps the paper's rule until then.")
    if d["recommended"] == d["reference"]:
        return text + " Judged by one bar with every challenger, the paper's rule stays freezelab's recommendation."
    return text + (f" Judged by one bar, freezelab therefore recommends {rule_name(d['recommended'], share)} "
                   f"({d['why']}); `--rule argmax-excess` stays the paper's rule.")


def headline_lines(summary: dict) -> list[str]:
    """headline.md: the headline in bold beside the paper's claim (the results page, the intro)."""
    return [f"**{summary['headline']}**", "", f"The paper's abstract: {PAPER_CLAIM}", ""]


def decision_lines(summary: dict) -> list[str]:
    """Every judged rule's criteria, each met or not, and the recommendation (verdict.md)."""
    study, d = summary["knee_study"], summary["decision"]
    dev_name = " x ".join(study["dev_pair"])
    if "development" not in study:
        return [f"**One bar for every rule:** the development pair ({dev_name}) has no complete seed yet."]
    dev = study["development"]
    miss = {name: dev["scores"][name] for name in dev["chosen"].values()}
    depth = dev["scores"][f"depth-only {dev['depth_share']:.3f}"]
    lines = [f"**Development.** On {dev_name} ({_n(len(dev['seeds']), 'seed')} {dev['seeds']}; knee at cut "
             f"{dev['knee_cut']}) the frozen choices are "
             + ", ".join(f"`{name}` (mean distance to the knee {m[0]:.1f} blocks)" for name, m in miss.items())
             + f", and for the depth-only rule a share of {dev['depth_share']:.3f} of the blocks trained "
             f"({depth[0]:.1f} blocks from the knee).", ""]
    if not d["rules"]:
        return lines + [f"No held-out pair has a complete seed yet (of {len(study['held_out_expected'])})."]
    bar = 100 * d["max_frontier_raise"]
    lines += [f"**One bar for every rule**, on {d['pairs']} of the {len(study['held_out_expected'])} held-out "
              f"pairs{so_far(summary)} (criteria in the method chapter; (a), (b) and (d) compare with the paper's "
              "rule, so they do not apply to it):", "",
              f"| rule | (a) cost regret lower, pairs (needed: {d['min_pairs']}) | (b) worst frontier rise (allowed: "
              f"{bar:g}) | (c) beats top-25% and depth-only | (d) oracle gap rise (allowed: {bar:g}) | mean cost "
              "regret | mean frontier regret | meets all |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    mark = {True: "yes", False: "no", None: "n/a"}
    for name, v in d["rules"].items():
        met = v["criteria"]
        a = f"{v['pairs_lower_cost_regret']} ({mark[met['a']]})" if met["a"] is not None else "n/a"
        b = f"{num(100 * v['worst_frontier_raise'], 1)} ({mark[met['b']]})" if met["b"] is not None else "n/a"
        g = f"{num(100 * v['mean_oracle_gap_raise'], 1)} ({mark[met['d']]})" if met["d"] is not None else "n/a"
        absent = [f"{p['model']} x {p['dataset']}" for p in study["held_out"] if name not in p["rules"]]
        where = f" (on {v['pairs']} of them: no cut on {', '.join(absent)}, whose stored traces lack its lens)" \
            if absent else ""
        lines.append(f"| {name}{where} | {a} | {b} | {mark[met['c']]} | {g} | {v['mean']['cost_regret']:.2f} | "
                     f"{100 * v['mean']['frontier_regret_acc']:.1f} | {mark[v['meets']]} |")
    share = dev["depth_share"]
    said = {"pending": f"**Decision: pending** until every held-out pair has every seed; {rule_name(d.get('leading', d['reference']), share)} leads.",
            "final": f"**Decision: freezelab recommends {rule_name(d['recommended'], share)}** ({d['why']})."}[d["status"]]
    return lines + ["", said + " `--rule argmax-excess` always remains the paper's rule by that name.", ""]


def protocol_lines(summary: dict) -> list[str]:
    """The declared protocol (the method chapter's include), every constant read from the summary."""
    study, d = summary["knee_study"], summary["decision"]
    pair = " x ".join
    families = study.get("development", {}).get("families", {})
    points = f"{100 * d['max_frontier_raise']:g} accuracy points"
    return [
        "- **Development.** Every option runs in every sweep of the study (the knee rules' shares through the "
        "default lens; the paper's rule through every other lens, one family per lens: "
        + "; ".join(f"{family}: " + ", ".join(f"`{n}`" for n in names) for family, names in families.items())
        + "). A lens read only from the stored traces (the virtual lens's option sets) is scored at the nearest "
        f"grid cut. On **one** model x data set, {pair(study['dev_pair'])}, each family keeps the option whose cut "
        "lands nearest the realised knee (least mean |knee distance| over its seeds); ties go to the cheaper "
        "cut, then to the simpler option (the fewest lens options changed from the lens's registered "
        "defaults, then the smaller share), and only then by name. A **depth-only rule**, \"train the top share $s$ of the blocks\", gets its $s$ the same way, from "
        "every cut of the grid. Then all choices are frozen; every other model x data set is held out ("
        + "; ".join(pair(p) for p in study["held_out_expected"]) + ").",
        f"- **One bar for every rule.** The paper's rule (`{d['reference']}`), top-25%, the depth-only rule and "
        "every frozen candidate are judged on the held-out pairs by the same criteria: (a) it lowers the cost "
        f"regret against the paper's rule with an interval above zero on at least {d['min_pairs']} of them, (b) its "
        f"frontier regret exceeds the paper's rule's by at most {points} on every one, (c) its mean cost regret "
        "over them is lower than top-25%'s and the depth-only rule's, with a mean frontier regret no higher, and "
        f"(d) its mean oracle gap exceeds the paper's rule's by at most {points} (cost and frontier regret alone "
        "would reward a rule that always picks the cheapest, worst cut). (a), (b) and (d) compare with the "
        "paper's rule and do not apply to it; (c) does. An interval touches zero when a bound is within "
        f"{summary['protocol']['zero']:g} of it.",
        "- **Recommendation** (declared in issue 22, after the study's first outcome was known): a challenger "
        "meeting every criterion, the lowest mean cost regret first; else the paper's rule if it meets (c); else "
        "the rule meeting the largest share of its criteria. Ties go to the lower mean cost regret, then the lower "
        "mean frontier regret, oracle gap and cost. The decision waits until every held-out pair has all its seeds; `--rule argmax-excess` "
        "always remains the paper's rule (`freezelab.study.decision`).",
    ]
