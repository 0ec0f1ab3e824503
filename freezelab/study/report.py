"""The oracle study's tables, generated prose and figures, from summary.json (`collect.collect`).

Everything the results chapter states with a number is written here from the JSON: `summary.md`
(tables) and `verdict.md` (sentences), both included by book/results.md; figures are PNGs beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from freezelab.study.results import ACC_TOLERANCE, CI, KNEE_SHARE

LEVEL = f"{CI[1] - CI[0]:g}%"  # the bootstrap interval's level, as the tables print it


def ci(x: dict, scale: float = 1.0, digits: int = 2) -> str:
    """'mean [lo, hi]' of a {mean, lo, hi} dict."""
    def f(v: float) -> str:
        text = f"{v * scale:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"
    return f"{f(x['mean'])} [{f(x['lo'])}, {f(x['hi'])}]"


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
             f"block lr {row['lr']:g}, LoRA lr {row['lora_lr']:g} (picked on validation data); "
             f"{row['n_test']} test examples; grid of {len(row['grid'])} cuts.", "",
             f"![{name}: realised result per cut]({stem}.png)", "",
             f"| metric | value [{LEVEL} CI] |", "| --- | --- |",
             f"| chosen cut per seed (argmax-excess, logit-labels) | {row['chosen_cut']} |",
             f"| knee cut per seed (cheapest cut reaching {100 * KNEE_SHARE:g}% of full FT's gain; cut 0 when none "
             f"does) | {_per_seed(row['knee_cut'])} |",
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


def budget_lines(budget: dict) -> list[str]:
    """The study's budget as a sentence (from the scale it ran at)."""
    return [f"Budget: per model x data set, {budget['n_train']} training examples (one epoch of "
            f"{budget['n_train'] // budget['batch_size']} AdamW steps of batch {budget['batch_size']}), "
            f"{budget['n_val']} validation examples for the learning rate (block training from "
            f"{list(budget['lr_grid'])}, LoRA from {list(budget['lora_lr_grid'])}), up to {budget['n_test']} test "
            f"examples, {budget['n_calib']} calibration examples per seed, prompts cut to {budget['max_length']} "
            f"tokens; seeds {list(budget['seeds'])} (language modelling: {list(budget['lm_seeds'])}); "
            f"models {', '.join(budget['models'])}; data sets {', '.join(budget['datasets'])}.", ""]


def _interval_says(x: dict, above: str, below: str, neither: str) -> str:
    """Which side of zero a {mean, lo, hi} interval lies on."""
    return above if x["lo"] > 0 else below if x["hi"] < 0 else neither


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


def status_sentence(status: dict) -> str:
    done, planned = status["complete"], status["planned"]
    text = f"**Status: {done} of {planned} planned sweeps (model x data set x seed) are complete"
    if done == planned:
        return text + ".**" + compute_sentence(status)
    left = "; ".join(f"{m} x {d} seed {seed}" for m, d, seed in status["missing"])
    return (text + f"; the study is still running.** Still to come: {left}." + compute_sentence(status)
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
            side = {"better": "top25", "worse": "plan"}.get(_for_top25(delta, sign), "neither")
            count[(metric, side)] = count.get((metric, side), 0) + 1
        ms, md = r["marginal_spearman"], r["marginal_spearman_depth"]
        side = "plan" if ms["lo"] > md["hi"] else "top25" if md["lo"] > ms["hi"] else "neither"
        count[("rank", side)] = count.get(("rank", side), 0) + 1
    c = lambda metric, side: count.get((metric, side), 0)  # noqa: E731
    default = summary["rules"].get("argmax-excess/logit-labels")
    random = summary["rules"].get("random-cut (expected)")
    text = (f"**The answer so far**, over the {_n(len(rows), 'model x data set')} with complete seeds: against "
            f"top-25%, the plan's cut had the lower cost regret (paired interval clear of zero) on {c('cost', 'plan')}, "
            f"the higher on {c('cost', 'top25')}, and no detectable difference on {c('cost', 'neither')}; the lower "
            f"frontier regret on {c('frontier', 'plan')}, the higher on {c('frontier', 'top25')}, no detectable "
            f"difference on {c('frontier', 'neither')}. Its predicted per-block gains ranked the blocks detectably "
            f"better than depth alone on {c('rank', 'plan')}, detectably worse on {c('rank', 'top25')}, and no "
            f"differently on {c('rank', 'neither')}.")
    if default and random:
        text += (f" Over every pair so far, the default rule's mean cost regret was {default['cost_regret']:.2f} and "
                 f"its mean frontier regret {100 * default['frontier_regret_acc']:.1f} points, against "
                 f"{random['cost_regret']:.2f} and {100 * random['frontier_regret_acc']:.1f} for a uniformly random "
                 "grid cut.")
    if c("cost", "plan") == c("frontier", "plan") == c("rank", "plan") == 0:
        text += " On none of these pairs did the trace's cut beat the rules that only know depth."
    return [text, ""]


def bound_lines(rows: Sequence[dict]) -> list[str]:
    """How often the law's fit sat on a bound, over every seed's trace of every pair."""
    fits = [(f"{r['model']} x {r['dataset']}", law) for r in rows for law in r["law"]]
    if not fits:
        return []
    hits = {p: [name for name, law in fits if p in law.get("at_bound", [])] for p in ("E", "A", "alpha")}
    said = "; ".join(f"{p} on {len(names)} ({', '.join(dict.fromkeys(names))})" for p, names in hits.items() if names)
    return [f"The law's fit sat on a bound in {sum(bool(law.get('at_bound')) for _, law in fits)} of the "
            f"{len(fits)} traces so far" + (f": {said}." if said else "."), ""]


def pair_sentences(row: dict) -> str:
    """The verdict's paragraph on one model x data set: the plan against its knee, its frontier, full
    fine-tuning, top25 and depth, every comparison by a paired CI."""
    name = (f"**{model_name(row['model'])} on {row['dataset']}** ({_n(len(row['seeds']), 'seed')}"
            f"{'' if row['complete'] else ', partial'})")
    fr, cr, kd = row["frontier_regret_acc"], row["cost_regret"], row["knee_distance"]
    ms, md = row["marginal_spearman"], row["marginal_spearman_depth"]
    parts = [f"{name}: the plan chose cut {_per_seed(row['chosen_cut'])}; the knee was at cut "
             f"{_per_seed(row['knee_cut'])}, a distance of {ci(kd, digits=1)} blocks (knee minus plan: > 0 "
             "means the plan trained more blocks than the knee needed)."]
    parts.append(f"Frontier regret {ci(fr, 100, 1)} accuracy points"
                 + _interval_says(fr, " (the interval is above zero: a cheaper cut did better).",
                                  ".", " (no cheaper cut was detectably better; the best cheaper cut is "
                                       "picked in hindsight, so this regret leans high)."))
    parts.append(f"Cost regret {ci(cr)} of full fine-tuning's cost"
                 + _interval_says(cr, ": a cheaper cut was as accurate.", ".", "."))
    full = row["strategies"].get("full")
    if full is not None and full["acc_minus_plan"]["hi"] < 0:
        parts.append(f"Full fine-tuning was less accurate than the plan's cut ({ci(full['acc_minus_plan'], 100, 1)} "
                     "points, paired): at the shared learning rate it is no ceiling, so a knee measured "
                     "against its gain says little here.")
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
    lines = [status_sentence(summary["status"]), ""] + answer_lines(summary) + budget_lines(summary["budget"])
    if not summary["rows"]:
        lines.append("**No model x data set has finished a run yet**: the study is still running.")
    for row in summary["rows"]:
        lines += [pair_sentences(row), ""]
    lines += bound_lines(summary["rows"]) + lr_lines(summary["rows"])
    everywhere = {name: r for name, r in summary["rules"].items() if r["pairs"] == len(summary["rows"])}
    if everywhere:  # a rule whose cut some grid lacks is not ranked against the others
        key = lambda r: (round(r["cost_regret"], 9), round(r["frontier_regret_acc"], 9))  # noqa: E731
        best = min(everywhere.values(), key=key)
        tied = [f"`{name}`" for name, r in everywhere.items() if key(r) == key(best)]  # the same cuts, often
        lines.append(f"Over all {_n(len(summary['rows']), 'pair')} so far, among the rules measured on every one, "
                     f"the lowest mean cost regret was {' and '.join(tied)}'s ({best['cost_regret']:.2f}, frontier "
                     f"regret {100 * best['frontier_regret_acc']:.1f} accuracy points, oracle gap "
                     f"{100 * best['oracle_gap']:.1f}, mean cost {best['cost']:.2f}; a mean over pairs, without an "
                     "interval: the per-pair tables have them). Rules some grid lacks are left out: "
                     + (", ".join(f"`{n}`" for n, r in summary["rules"].items() if n not in everywhere) or "none")
                     + ".")
    return lines


def knee_lines(study: dict) -> list[str]:
    """The knee study's outcome as sentences (verdict.md), each number read from the summary."""
    dev_name = " x ".join(study["dev_pair"])
    if "development" not in study:
        return [f"**Aiming at the knee:** the development pair ({dev_name}) has no complete seed yet."]
    dev = study["development"]
    miss = {name: dev["scores"][name] for name in dev["chosen"].values()}
    depth = dev["scores"][f"depth-only {dev['depth_share']:.3f}"]
    lines = [f"**Aiming at the knee.** On the development pair ({dev_name}, {_n(len(dev['seeds']), 'seed')} "
             f"{dev['seeds']}) the frozen choices are "
             + ", ".join(f"`{name}` (mean distance to the knee {m[0]:.1f} blocks)" for name, m in miss.items())
             + f", and for the depth-only rule a share of {dev['depth_share']:.3f} of the blocks trained "
             f"({depth[0]:.1f} blocks from the knee)."]
    n_expected = len(study["held_out_expected"])
    pairs = study.get("held_out", [])
    if not pairs:
        return lines + [f"No held-out pair has a complete seed yet (of {n_expected})."]
    bar = 100 * study["max_frontier_raise"]
    for name, v in study["verdicts"].items():
        m, met = v["mean"], v["criteria"]
        gap = 100 * v["mean_oracle_gap_raise"]
        text = (f"`{name}`, on {v['pairs']} of the {n_expected} held-out pairs so far: (a) it lowered the cost regret "
                f"against `{study['default']}` with an interval above zero on {v['pairs_lower_cost_regret']} "
                f"(needed: {study['min_pairs']}); (b) its frontier regret rose by up to "
                f"{100 * v['worst_frontier_raise']:.1f} accuracy points on a pair (allowed: {bar:g}); (c) its mean cost "
                f"regret was {m[name]['cost_regret']:.2f} against {m['top25']['cost_regret']:.2f} for top-25% and "
                f"{m['depth-only']['cost_regret']:.2f} for the depth-only rule, with mean frontier regrets of "
                f"{100 * m[name]['frontier_regret_acc']:.1f}, {100 * m['top25']['frontier_regret_acc']:.1f} and "
                f"{100 * m['depth-only']['frontier_regret_acc']:.1f} points; (d) its mean oracle gap "
                f"{'rose' if gap >= 0 else 'fell'} by {abs(gap):.1f} points (allowed: a rise of {bar:g}). "
                "Criteria met so far: " + ", ".join(f"({k}) {'yes' if ok else 'no'}" for k, ok in met.items()) + ".")
        decision = {"pending": " **Decision: pending** until every held-out pair has every seed; "
                               + ("the criteria hold so far." if v["meets"] else "the criteria do not hold so far."),
                    "fails": " **Decision: it fails**, and `argmax-excess` stays the default.",
                    "becomes the default": " **Decision: it meets every criterion.**"}[v["decision"]]
        lines += ["", text + decision]
    return lines


def protocol_lines(study: dict) -> list[str]:
    """The knee study's declared protocol (the method chapter's include), every constant read from
    the summary's `knee_study` block, which records `knee_study`'s module constants."""
    pair = " x ".join
    shares = sorted({float(name.split("/")[0].rsplit("-", 1)[1]) for name in study["families"]["knee"]})
    lenses = [name.split("/")[1] for name in study["families"]["lens"]]
    points = f"{100 * study['max_frontier_raise']:g} accuracy points"
    return [
        "- **Development.** Every option runs in every sweep of the study ($q \\in \\{"
        + ", ".join(f"{q:g}" for q in shares) + "\\}$ for both knee rules, through the default lens; "
        f"argmax-excess through the {len(lenses)} other lenses, " + ", ".join(f"`{x}`" for x in lenses) + "). "
        f"On **one** model x data set, {pair(study['dev_pair'])}, each family keeps the option whose cut lands "
        "nearest the realised knee (least mean |knee distance| over its seeds, ties to the cheaper cut). "
        "A **depth-only rule**, \"train the top share $s$ of the blocks\", gets its $s$ the same way, from every "
        "cut of the grid. Then all choices are frozen; every other model x data set is held out ("
        + "; ".join(pair(p) for p in study["held_out_expected"]) + ").",
        f"- **Decision.** A candidate becomes the default only if, on the held-out pairs, (a) it lowers the "
        f"cost regret against `{study['default']}` with an interval above zero on at least {study['min_pairs']} "
        f"of them, (b) its frontier regret exceeds the default's by at most {points} on every one, and (c) its "
        "mean cost regret over them is lower than top-25%'s and the depth-only rule's, with a mean frontier "
        f"regret no higher, and (d) its mean oracle gap over them exceeds the default's by at most {points} "
        "(cost and frontier regret alone would reward a rule that always picks the cheapest, worst cut). "
        "The decision waits until every held-out pair has all its seeds; the results chapter reports the "
        "outcome either way (`freezelab.study.knee`).",
    ]


def knee_table(study: dict) -> list[str]:
    """Per held-out pair, each frozen rule's metrics and its paired difference from the default."""
    if not study.get("held_out"):
        return []
    lines = ["## Aiming at the knee: held-out pairs", "",
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
        lines += ["## Rule leaderboard (means over every model x data set so far)", "",
                  "Means over pairs, without intervals (each pair's table has them). The cheapest cuts have zero "
                  "frontier and cost regret by construction (nothing is cheaper); the oracle gap is what they pay.", "",
                  "| rule | pairs | frontier regret (acc points) | oracle gap (acc points) | cost regret | "
                  "knee distance | cost |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in sorted(summary["rules"].items(), key=lambda kv: kv[1]["cost_regret"]):
            lines.append(f"| {name} | {r['pairs']} | {100 * r['frontier_regret_acc']:.1f} | {100 * r['oracle_gap']:.1f} | "
                         f"{r['cost_regret']:.2f} | {r['knee_distance']:.1f} | {r['cost']:.2f} |")
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
    (out / "protocol.md").write_text("\n".join(protocol_lines(summary["knee_study"])) + "\n")
    (out / "verdict.md").write_text("\n".join(verdict_lines(summary) + [""] + knee_lines(summary["knee_study"])) + "\n")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11})
    return plt


def figure_grid(row: dict, path: Path) -> None:
    """Accuracy and loss of every grid cut vs modelled cost, strategies as markers, plan and knee marked."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(8, 8), layout="constrained", sharex=True)
    for ax, key, unit in ((axes[0], "acc", "test accuracy"), (axes[1], "loss", "test loss (nats)")):
        ax.plot(row["grid_cost"], row[f"grid_{key}"], "o-", color="0.45", label="cut k (mean over seeds)")
        for k, x, y in zip(row["grid"], row["grid_cost"], row[f"grid_{key}"]):
            ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(2, 4), fontsize=8, color="0.3")
        for i, (name, s) in enumerate(sorted(row["strategies"].items())):
            ax.errorbar(s["cost_ratio"], s[key]["mean"], yerr=[[s[key]["mean"] - s[key]["lo"]], [s[key]["hi"] - s[key]["mean"]]],
                        fmt="*" if name == "semantic-plan" else "s", ms=13 if name == "semantic-plan" else 6,
                        color=plt.cm.tab10(i % 10), label=name, zorder=3)
        ax.axhline(row[f"{key}_before"], ls=":", color="k", label="before fine-tuning")
        ax.set_ylabel(unit)
    axes[1].set_xlabel("modelled cost (share of full fine-tuning's step)")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{row['model']} on {row['dataset']}: knee at cut {_per_seed(row['knee_cut'])}, "
                 f"plan at {_per_seed(row['chosen_cut'])}")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_training(sweeps: Sequence[dict], path: Path) -> None:
    """Training loss per step (moving mean over 8 steps) of cut 0, the plan, the last block and full FT."""
    plt = _plt()
    s = sweeps[0]
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    cuts = {c["cut"]: c for c in s["cuts"]}
    shown = {"cut 0 (every block)": cuts.get(0), f"plan (cut {s['chosen_cut']})": cuts.get(s["chosen_cut"]),
             f"cut {max(cuts)} (last blocks only)": cuts.get(max(cuts)), "full fine-tuning": s["strategies"].get("full")}
    for label, run in shown.items():
        if run and run.get("train_losses"):
            y = np.convolve(run["train_losses"], np.ones(8) / 8, mode="valid")
            ax.plot(np.arange(len(y)) + 8, y, label=label)
    ax.set(xlabel="optimizer step", ylabel="training loss (nats, mean of 8 steps)",
           title=f"{s['model']} on {s['dataset']}, seed {s['seed']}: has the loss flattened within one epoch?")
    ax.legend(fontsize=9)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_marginal(row: dict, sweeps: Sequence[dict], path: Path) -> None:
    """Predicted excess gain g_l per block beside the realised marginal loss reduction of the grid."""
    plt = _plt()
    L = row["num_layers"]
    g = np.mean([s["gains"]["excess"] for s in sweeps], 0)
    edges = row["grid"] + [L]
    values = row["grid_loss"] + [row["loss_before"]]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), layout="constrained", sharex=True)
    a1.bar(np.arange(1, L + 1), g, color="tab:blue")
    a1.set(ylabel="predicted g_l (nats)", title=f"{row['model']} on {row['dataset']}: per-block gains")
    for a, b, v0, v1 in zip(edges[:-1], edges[1:], values[:-1], values[1:]):
        a2.bar((a + b + 1) / 2, (v1 - v0) / (b - a), width=b - a, color="tab:orange", edgecolor="w")
    a2.set(xlabel="block l", ylabel="realised loss removed per block (nats)")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_retrace(row: dict, sweeps: Sequence[dict], path: Path) -> None:
    """The calibration set's deviation d_l before fine-tuning and after the plan, the knee and full FT."""
    plt = _plt()
    s = sweeps[0]
    cuts = {c["cut"]: c for c in s["cuts"]}
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    ax.plot(s["deviation"], "k-o", ms=3, label="before fine-tuning")
    shown = {f"after the plan (cut {s['chosen_cut']})": cuts.get(s["chosen_cut"], {}),
             f"after the knee cut ({row['knee_cut'][0]})": cuts.get(row["knee_cut"][0], {}),
             "after full fine-tuning": s["strategies"].get("full", {})}
    for label, run in shown.items():
        if run.get("deviation_after"):
            ax.plot(run["deviation_after"], "-o", ms=3, label=label)
    ax.set(xlabel="latent space l", ylabel="deviation d_l (nats, label-restricted logit lens)",
           title=f"{s['model']} on {s['dataset']}, seed {s['seed']}: where fine-tuning moved the trace")
    ax.legend(fontsize=9)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_lr(row: dict, path: Path) -> None:
    """Realised accuracy per cut (seed 0) at the validation-chosen learning rate and either side."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for lr, curve in sorted(row["lr_sensitivity"].items(), key=lambda kv: float(kv[0])):
        ax.plot(curve["cuts"], curve["acc"], "-o", ms=3, lw=2.5 if curve["chosen"] else 1.2,
                label=f"lr {lr}" + (" (chosen on validation data)" if curve["chosen"] else ""))
    ax.axhline(row["acc_before"], ls=":", color="k", label="before fine-tuning")
    ax.set(xlabel="cut k (blocks 1..k frozen)", ylabel="test accuracy (seed 0)",
           title=f"{row['model']} on {row['dataset']}: how much of the knee is the optimiser?")
    ax.legend(fontsize=9)
    fig.savefig(path, dpi=150)
    plt.close(fig)
