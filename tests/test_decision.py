"""The knee against the best, one bar for every rule, the recommendation and the generated headline."""

import json
from pathlib import Path

import numpy as np
import pytest

from freezelab.study.decision import judge, plan_note, recommendation, variant
from freezelab.study.knee import knee_study
from freezelab.study.prose import PAPER_CLAIM, headline, rerun_sentence, top25_outcome
from freezelab.study.report import README_BEGIN, README_END, write_readme
from freezelab.study.results import Grid, side
from test_sweep_study import _sweep, tiny_folder  # noqa: F401 (a fixture)

ROOT = Path(__file__).parents[1]
VARIANTS = {"knee-0.7/logit-labels": 3, "knee-0.9/logit-labels": 0, "knee-gain-0.5/logit-labels": 4,
            "knee-gain-0.7/logit-labels": 2, "knee-gain-0.9/logit-labels": 0, "argmax-excess/cosine": 6,
            "argmax-excess/kl": 2, "argmax-excess/logit-full": 1}


def _pair(model, dataset, acc, loss, knee_cut, seeds=(0,)):
    """An 8-block pair (cut k costs 1 - k/8) whose paper rule picks cut 1 and whose knee-0.5 candidate `knee_cut`."""
    variants = {**VARIANTS, "knee-0.5/logit-labels": knee_cut}
    return (model, dataset), [_sweep(s, acc, loss, chosen=1, gains=[0.1] * 8, variants=variants, model=model,
                                     dataset=dataset) for s in seeds]


# development: the knee (cheapest cut within 1 point of the best, 0.8) is cut 5
DEV = _pair("smollm2-135m", "bbc-news", [0.8] * 6 + [0.7, 0.6], [0.3] * 5 + [0.31, 0.5, 0.7], knee_cut=5)
HELD_ACC, HELD_LOSS = [0.8] * 4 + [0.7] * 4, [0.3] * 4 + [0.5] * 4  # held out: the knee moves to cut 3
EXPECTED = [DEV[0]] + [(m, "other") for m in ("a", "b", "c")]


def _study(knee_cut, seeds_of=None, n_boot=50):
    held = [_pair(m, "other", HELD_ACC, HELD_LOSS, knee_cut=knee_cut) for m in ("a", "b", "c")]
    return knee_study(dict([DEV, *held]), EXPECTED, seeds_of or {p: 1 for p in EXPECTED}, n_boot=n_boot)


def test_the_knee_is_the_cheapest_cut_within_tolerance_of_the_best_grid_cut_or_full_fine_tuning():
    acc = [0.80, 0.80, 0.795, 0.60]
    grid = Grid([_sweep(0, acc, [0.3] * 4, chosen=1, gains=[0] * 4)])
    assert grid.knee(grid.acc[0].mean(-1), 0.80) == (2, True)  # 0.795 is within 1 point of 0.80
    assert grid.knee(grid.acc[0].mean(-1), 0.806) == (1, True)  # full FT raises the best: cut 2 falls out
    assert grid.knee(grid.acc[0].mean(-1), 0.90) == (0, False)  # none within 1 point: the most accurate cut


def test_a_bound_within_1e9_of_zero_touches_zero():
    assert side({"mean": 0.1, "lo": 1e-17, "hi": 0.2}) == 0 and side({"mean": -0.1, "lo": -0.2, "hi": -1e-12}) == 0
    assert side({"mean": 0.1, "lo": 2e-9, "hi": 0.2}) == 1 and side({"mean": -0.1, "lo": -0.2, "hi": -2e-9}) == -1
    # top-25% whose frontier regret is lower by [-1.6, -1e-17] points is not "better": the interval touches zero
    zero = {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    vs = {"delta_cost_regret": zero, "delta_oracle_gap": zero,
          "delta_frontier_regret_acc": {"mean": -0.007, "lo": -0.016, "hi": -1e-17}}
    assert top25_outcome(vs).endswith("not detectably different from the plan")
    vs["delta_frontier_regret_acc"]["hi"] = -1e-6
    assert "frontier regret -0.7 [-1.6, 0.0] added, in points (better)" in top25_outcome(vs)  # -1e-4 points


def test_development_picks_one_option_per_family_with_the_declared_tie_break():
    dev = _study(3)["development"]
    assert dev["knee_cut"] == 5 and dev["depth_share"] == pytest.approx(3 / 8)
    assert dev["chosen"] == {"knee": "knee-0.5/logit-labels", "knee-gain": "knee-gain-0.5/logit-labels",
                             "lens:cosine": "argmax-excess/cosine", "lens:kl": "argmax-excess/kl",
                             "lens:logit": "argmax-excess/logit-full"}
    # an exact tie (the same cuts): the fewest options changed from the lens's defaults win, not name order
    from freezelab.method.lens import LENSES, lens_spec
    from freezelab.study.knee import develop

    entry = LENSES["virtual"]
    default = {k: v[0] for k, v in entry.options.items()}
    names = [f"argmax-excess/{lens_spec(entry, {**default, **change})}" for change in
             ({k: v[-1] for k, v in entry.options.items()}, {}, {"distance": entry.options["distance"][-1]})]
    assert sorted(names)[0] != names[1]  # name order would pick another
    sweeps = [{**s, "variants": {**s["variants"], **dict(zip(names, (5, 5, 6)))}} for s in DEV[1]]
    assert develop(sweeps)["chosen"]["lens:virtual"] == names[1]


def test_one_bar_judges_the_paper_rule_and_recommends_a_challenger_that_meets_every_criterion():
    d = judge(_study(3))
    paper = d["rules"]["argmax-excess/logit-labels"]
    assert paper["criteria"] == {"a": None, "b": None, "c": False, "d": None} and not paper["meets"]
    assert paper["mean"]["cost_regret"] == pytest.approx(0.25)  # cut 1 where cut 3 is as accurate
    knee = d["rules"]["knee-0.5/logit-labels"]
    assert knee["criteria"] == {"a": True, "b": True, "c": True, "d": True} and knee["pairs_lower_cost_regret"] == 3
    top = d["rules"]["top25"]  # cut 6: cheap, 10 points below the best
    assert top["criteria"] == {"a": True, "b": True, "c": True, "d": False}
    assert top["mean_oracle_gap_raise"] == pytest.approx(0.1)
    assert d["status"] == "final" and d["recommended"] == "knee-0.5/logit-labels" and d["why"] == "meets every criterion"


def test_with_no_rule_meeting_every_criterion_the_one_meeting_the_most_is_recommended_and_a_seed_to_come_waits():
    d = judge(_study(4))  # knee-0.5 at cut 4: 10 points below the best, and dearer than the cheapest as accurate
    assert not any(v["meets"] for v in d["rules"].values())
    # top-25% (cut 6) and the kl lens (cut 2) meet 3 of 4, with the same mean cost and frontier regret;
    # cut 2 is as accurate as the best, cut 6 is 10 points below it: the lower oracle gap wins
    assert d["rules"]["top25"]["met_share"] == d["rules"]["argmax-excess/kl"]["met_share"] == pytest.approx(3 / 4)
    assert d["recommended"] == "argmax-excess/kl" and d["why"] == "meets the most criteria"
    pending = judge(_study(3, {**{p: 1 for p in EXPECTED}, DEV[0]: 2}))
    assert pending["status"] == "pending" and pending["recommended"] == "argmax-excess/logit-labels"
    assert pending["leading"] == "knee-0.5/logit-labels"


def _summary(study, missing):
    summary = {"status": {"missing": missing}, "knee_study": study, "decision": judge(study)}
    return {**summary, "headline": headline(summary)}


def test_the_headline_says_so_far_only_while_sweeps_are_missing():
    study = _study(3)
    done, running = _summary(study, []), _summary(study, [["a", "other", 1]])
    assert done["headline"].startswith("On the 3 held-out model x data set pairs, the paper's rule")
    assert "so far" not in done["headline"] and "recommends `knee-0.5/logit-labels`" in done["headline"]
    assert running["headline"].startswith("On the 3 held-out model x data set pairs so far, the paper's rule")
    assert "did not beat the rules that know only depth: its mean cost regret was 0.25" in done["headline"]


def test_plan_prints_a_note_only_when_the_study_recommends_another_rule(tmp_path):
    path = tmp_path / "recommendation.json"
    summary = _summary(_study(3), [])
    path.write_text(json.dumps(recommendation(summary)))
    paper = variant("argmax-excess", None, "logit", True)
    assert paper == "argmax-excess/logit-labels" and variant("knee", 0.5, "logit", True) == "knee-0.5/logit-labels"
    note = plan_note(paper, 30, path)
    assert note.startswith("note: freezelab's oracle study recommends knee-0.5/logit-labels (meets every criterion)")
    assert "`freezelab plan --rule knee --share 0.5`" in note
    assert plan_note("knee-0.5/logit-labels", 30, path) is None
    depth = {**recommendation(summary), "recommended": "depth-only", "depth_share": 0.3}
    path.write_text(json.dumps(depth))
    assert "(K = 9 of 30 blocks here)" in plan_note(paper, 30, path)
    assert plan_note(paper, 30, tmp_path / "none.json") is None


def test_the_committed_headline_opens_the_results_page_the_readme_and_the_intro():
    summary = json.loads((ROOT / "book" / "results" / "summary.json").read_text())
    text = summary["headline"]
    assert (ROOT / "book" / "results" / "headline.md").read_text().startswith(f"**{text}**")
    assert PAPER_CLAIM in (ROOT / "book" / "results" / "headline.md").read_text()
    assert f"**{text}**" in (ROOT / "README.md").read_text() and PAPER_CLAIM in (ROOT / "README.md").read_text()
    for page in ("intro.md", "results.md"):
        assert "```{include} results/headline.md" in (ROOT / "book" / page).read_text()
    results = (ROOT / "book" / "results.md").read_text()
    assert results.index("results/headline.md") < results.index("results/verdict.md")
    shipped = json.loads((ROOT / "freezelab" / "recommendation.json").read_text())
    assert shipped["headline"] == text and shipped["recommended"] == summary["decision"]["recommended"]
    assert ("so far" in text) == bool(summary["status"]["missing"])
    assert rerun_sentence(summary["status"]) in (ROOT / "README.md").read_text()  # what the new rates cost
    chapter = json.loads((ROOT / "notebooks" / "07_does_it_work.ipynb").read_text())
    shown = ["".join(o.get("data", {}).get("text/markdown", "")) for c in chapter["cells"] for o in c.get("outputs", [])]
    assert any(f"**{text}**" in md for md in shown)  # chapter 7's stored output: re-execute it after a collect


def test_the_readme_verdict_is_the_one_collect_writes(tmp_path):
    summary = json.loads((ROOT / "book" / "results" / "summary.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    write_readme(readme, summary)
    assert readme.read_text() == (ROOT / "README.md").read_text()  # the committed README is current
    moved = {**summary, "headline": "A new verdict.", "status": {**summary["status"], "reruns": {
        "rates": 4, "rate_seconds": 7200.0, "runs": 9, "run_seconds": 3600.0}}}
    write_readme(readme, moved)
    text = readme.read_text()
    assert "**A new verdict.**" in text and summary["headline"] not in text and PAPER_CLAIM in text
    assert "took 4 added rates measured on validation data (2.0 hours) and 9 runs trained again" in text
    assert text.count(README_BEGIN) == 1 and text.endswith((ROOT / "README.md").read_text().split(README_END)[1])
    readme.write_text("# a README without the block\n")
    with pytest.raises(ValueError, match="needs one verdict block"):
        write_readme(readme, summary)


@pytest.mark.slow
def test_collect_is_deterministic_and_writes_the_decision_and_headline(tmp_path):
    from freezelab.errors import FreezelabError
    from freezelab.study.collect import collect
    from freezelab.study.runner import SCALES, main

    for (model, dataset), sweeps in [DEV, *[_pair(m, "other", HELD_ACC, HELD_LOSS, knee_cut=3) for m in "abc"]]:
        for s in sweeps:
            folder = tmp_path / "runs" / model / dataset / f"seed{s['seed']}"
            folder.mkdir(parents=True)
            for c in s["cuts"]:  # the per-cut means a stored sweep carries beside its per-example results
                c.update(acc=float(np.mean(c["per_example_correct"])), loss=float(np.mean(c["per_example_loss"])))
            (folder / "sweep.json").write_text(json.dumps(s))
    # a pair whose rates were not all picked on validation data waits, named, and the decision without it
    unpicked = collect(tmp_path, "ci", SCALES["ci"], n_boot=20)
    assert unpicked["status"]["complete"] == 0 and unpicked["decision"]["status"] == "pending"
    assert ["a", "other", 0, ["blocks", "lora", "full"]] in unpicked["status"]["stale"]
    with pytest.raises(FreezelabError, match=r"not complete at their pair's current rates, so nothing was summarised: "
                                             r"smollm2-135m x movie-polarity seed 0; `make results` trains them"):  # the ci scale's plan
        main(["--collect", "--if-complete", "--scale", "ci", "--out", str(tmp_path)])
    for model, dataset in [DEV[0], *[(m, "other") for m in "abc"]]:  # the rates the sweeps were trained at
        for fam, lr in (("blocks", 1e-4), ("lora", 1e-3), ("full", 1e-4)):
            (tmp_path / "runs" / model / dataset / f"lr_{fam}.json").write_text(json.dumps(
                {"lr": lr, "grid": [lr / 3, lr, lr * 3], "val_loss": {repr(lr / 3): 0.5, repr(lr): 0.4, repr(lr * 3): 0.6}}))
    first = collect(tmp_path, "ci", SCALES["ci"], n_boot=20)
    text = (tmp_path / "summary.json").read_text()
    again = collect(tmp_path, "ci", SCALES["ci"], n_boot=20)
    assert (tmp_path / "summary.json").read_text() == text and again["headline"] == first["headline"]
    # the ci scale plans another pair, still missing here: the decision waits, the tense says so
    d = first["decision"]
    assert list(first)[0] == "headline" and d["status"] == "pending" and d["leading"] == "knee-0.5/logit-labels"
    assert "so far" in first["headline"] and "freezelab keeps the paper's rule until then" in first["headline"]
    verdict = (tmp_path / "verdict.md").read_text()
    assert verdict.startswith("**Status:") and "**Decision: pending**" in verdict
    (lead,) = [r["lead"] for r in first["rules"].values() if "lead" in r]  # the lowest's lead, paired
    assert f"The next, `{lead['over']}`, had" in verdict and "paired, its lead is" in verdict
    # full fine-tuning of pair "a" gets a new rate: its sweeps wait for their reruns, named in the status
    (tmp_path / "runs/a/other/lr_full.json").write_text(json.dumps(
        {"lr": 3e-5, "grid": [1e-5, 3e-5, 1e-4], "val_loss": {"1e-05": 0.5, "3e-05": 0.4, "0.0001": 0.6},
         "seconds": {"1e-05": 60.0}}))
    moved = collect(tmp_path, "ci", SCALES["ci"], n_boot=20)
    assert moved["status"]["stale"] == [["a", "other", 0, ["full"]]]
    assert moved["status"]["reruns"] == {"rates": 1, "rate_seconds": 60.0, "runs": 0, "run_seconds": 0.0}
    assert "or to be trained again at it: a x other seed 0 (full)" in (tmp_path / "verdict.md").read_text()
    assert moved["decision"]["pairs"] == first["decision"]["pairs"] - 1


def test_freezelab_plan_prints_the_study_recommendation_under_its_table(tiny_folder, capsys):
    from freezelab.cli import main

    shipped = json.loads((ROOT / "freezelab" / "recommendation.json").read_text())
    assert main(["plan", "--model", tiny_folder, "--device", "cpu", "--data", "movie-polarity", "--n-calib", "4",
                 "--max-length", "16", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    differs = shipped["status"] == "final" and shipped["recommended"] != "argmax-excess/logit-labels"
    assert ("note: freezelab's oracle study recommends" in out) == differs
    if differs:
        note = next(line for line in out.splitlines() if line.startswith("note:"))
        assert shipped["recommended"] in note and shipped["usage"] in note


def test_a_rule_judged_on_fewer_pairs_names_the_pairs_it_missed():
    from freezelab.study.prose import decision_lines

    summary = json.loads((ROOT / "book" / "results" / "summary.json").read_text())
    d, held = summary["decision"], summary["knee_study"]["held_out"]
    rows = {line.split(" | ")[0][2:]: line for line in decision_lines(summary) if line.startswith("| ") and "---" not in line}
    for name, v in d["rules"].items():
        (row,) = [r for key, r in rows.items() if key.startswith(name + " ") or key == name]
        missed = [f"{p['model']} x {p['dataset']}" for p in held if name not in p["rules"]]
        assert (v["pairs"] < d["pairs"]) == bool(missed)
        assert all(pair in row for pair in missed) and (f"on {v['pairs']} of them" in row) == bool(missed)


def test_full_fine_tuning_is_said_to_have_its_own_rate_only_when_it_had_one():
    from freezelab.study.prose import pair_sentences

    summary = json.loads((ROOT / "book" / "results" / "summary.json").read_text())
    row = next(r for r in summary["rows"] if "full" in r["strategies"])
    full = {**row["strategies"]["full"], "acc_minus_plan": {"mean": -0.03, "lo": -0.05, "hi": -0.01}}  # said only then
    row = {**row, "strategies": {**row["strategies"], "full": full}}
    own = {**row, "lr": {**row["lr"], "full": {"grid": [full["lr"]], "chosen": full["lr"], "val_loss": {}}}}
    assert "at its own learning rate picked on validation data" in pair_sentences(own)
    other = {**row, "lr": {**row["lr"], "full": {"grid": [3 * full["lr"]], "chosen": 3 * full["lr"], "val_loss": {}}}}
    assert f"at the block-training rate {full['lr']:g} (no rate of its own yet)" in pair_sentences(other)


def test_the_study_module_reports_a_bad_request_in_one_line_with_status_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "freezelab.study", "--collect", "--if-complete", "--scale", "ci",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("python -m freezelab.study: error: 1 planned sweep(s) are not complete")
