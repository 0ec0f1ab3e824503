"""The oracle sweep's bookkeeping and the ci-scale reproduction study end to end."""

import json

import pytest

from freezelab.errors import FreezelabError
from freezelab.study import main as study_main
from freezelab.study import summarise
from freezelab.sweep import CutResult, parse_cuts, regret


def test_parse_cuts_always_has_full_and_chosen():
    assert parse_cuts("even:4", 30, 14) == [0, 10, 14, 19, 29]
    assert parse_cuts("all", 4, 2) == [0, 1, 2, 3]
    for bad in ("even:1", "odd:3", "even:x"):
        with pytest.raises(FreezelabError, match="cuts"):
            parse_cuts(bad, 30, 14)


def _cut(k, cost, loss):
    return CutResult(k, cost, cost / 2, 0.0, 1.0 - loss, loss, 0.5, 1.0)


def test_regret_compares_with_cheaper_or_equal_cuts_only():
    cuts = [_cut(0, 1.0, 0.10), _cut(10, 0.7, 0.30), _cut(20, 0.4, 0.20), _cut(29, 0.1, 0.50)]
    assert regret(cuts, 10) == pytest.approx(0.10)  # cut 20 is cheaper and better
    assert regret(cuts, 20) == 0.0  # nothing cheaper beats it
    assert regret(cuts, 0) == 0.0  # the best overall


def _sweep(seed, plan_loss, top25_loss):
    def strategy(loss, ratio, seconds):
        return {"acc": 0.5, "loss": loss, "cost_ratio": ratio, "step_seconds": seconds}
    return {"model": "m", "dataset": "d", "seed": seed, "chosen_cut": 20, "spearman": 0.5, "regret": 0.1 * seed,
            "loss_before": 1.0, "acc_before": 0.4, "complete": True,
            "cuts": [{"cut": 0, "step_seconds": 2.0}, {"cut": 20, "step_seconds": 1.0}],
            "strategies": {"semantic-plan": strategy(plan_loss, 0.5, 1.0), "full": strategy(0.2, 1.0, 4.0),
                           "top25": strategy(top25_loss, 0.45, 0.9)}}


def test_summary_says_which_cheaper_strategies_beat_the_plan():
    (row,) = summarise([_sweep(0, 0.5, 0.4), _sweep(1, 0.5, 0.7)])["rows"]
    assert row["strategies"]["top25"]["loss"] == pytest.approx(0.55)  # mean over seeds
    assert row["beaten_by"] == [] and row["best_strategy"] == "full"  # full is better but dearer
    assert row["regret"] == pytest.approx(0.05) and row["regret_std"] == pytest.approx(0.05)
    assert row["strategies"]["full"]["cost_ratio_measured"] == 1.0
    assert row["strategies"]["semantic-plan"]["cost_ratio_measured_blocks"] == 0.5  # vs cut 0's step
    (row,) = summarise([_sweep(0, 0.5, 0.4), _sweep(1, 0.5, 0.5)])["rows"]
    assert row["beaten_by"] == ["top25"]


def test_study_refuses_to_mix_runs_of_another_budget(tmp_path):
    (tmp_path / "scale.json").write_text(json.dumps({"scale": "ci", "steps": 2, "lr": 1.0}))
    with pytest.raises(FreezelabError, match="another budget"):
        study_main(["--scale", "ci", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "scale.json").read_text())["lr"] == 1.0  # left as it was


@pytest.mark.slow
def test_study_at_ci_scale(tmp_path):
    study_main(["--scale", "ci", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "scale.json").read_text())["steps"] == 2  # the budget, recorded
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["rows"]
    assert row["model"] == "smollm2-135m" and row["dataset"] == "movie-polarity" and row["seeds"] == [0]
    assert {"full", "top25", "semantic-plan"} <= set(row["strategies"])
    for s in row["strategies"].values():
        assert 0 < s["cost_ratio"] <= 1 and 0 <= s["acc"] <= 1 and s["loss"] > 0
    assert row["strategies"]["full"]["cost_ratio"] == pytest.approx(1.0, abs=0.01)
    assert row["regret"] >= 0
    sweep = json.loads(next(tmp_path.glob("runs/*/*/seed0/sweep.json")).read_text())
    assert sweep["complete"] and [c["cut"] for c in sweep["cuts"]][0] == 0 and sweep["chosen_cut"] in [c["cut"] for c in sweep["cuts"]]
    curve = json.loads(next(tmp_path.glob("runs/*/*/seed0/plan.json")).read_text())["curve"]
    top25 = curve[30 - 30 // 4]  # baselines are priced like the cut curve (label rows only)
    assert sweep["strategies"]["top25"]["cost_ratio"] == pytest.approx(top25["cost_ratio"])
    assert not list(tmp_path.glob("**/checkpoint.pt"))  # finished runs keep no checkpoints
    ablation = json.loads((tmp_path / "ablations.json").read_text())[0]
    assert set(ablation["lens_rule"]) == {"logit-full", "logit-labels", "cosine", "kl"}
    text = (tmp_path / "summary.md").read_text()
    assert row["best_strategy"] in row["strategies"] and set(row["beaten_by"]) < set(row["strategies"])
    assert "## Overview" in text and "| semantic-plan |" in text and (tmp_path / "smollm2-135m_movie-polarity.png").exists()
