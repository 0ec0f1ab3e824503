"""The oracle sweep's bookkeeping, the study's metrics on grids with known answers, and the
ci-scale study end to end."""

import json

import numpy as np
import pytest

from freezelab.errors import FreezelabError
from freezelab.study.results import Grid, leaderboard, paired, summarise_pair
from freezelab.study.runner import main as study_main
from freezelab.study.sweep import CutResult, coarse_to_fine, parse_cuts, regret


def test_parse_cuts_dense_every_even_all():
    assert parse_cuts("dense", 18) == list(range(18))  # every cut up to 18 blocks
    assert parse_cuts("dense", 30, [13]) == sorted({*range(0, 30, 2), 13})  # every second beyond
    assert parse_cuts("even:4", 30, [14]) == [0, 10, 14, 19, 29]
    assert parse_cuts("all", 4, [2]) == [0, 1, 2, 3]
    for bad in ("even:1", "odd:3", "even:x", "every:0"):
        with pytest.raises(FreezelabError, match="cuts"):
            parse_cuts(bad, 30, [14])


def test_coarse_to_fine_starts_with_the_ends_and_keeps_every_cut():
    cuts = list(range(0, 30, 2))
    order = coarse_to_fine(cuts)
    assert sorted(order) == cuts and order[:3] == [0, 28, 14]
    assert set(order[:5]) == {0, 28, 14, 6, 20}  # any prefix spans the range


def _cut(k, cost, loss):
    return CutResult(k, cost, cost / 2, 0.0, 1.0 - loss, loss, 0.5, 1.0)


def test_regret_compares_with_cheaper_or_equal_cuts_only():
    cuts = [_cut(0, 1.0, 0.10), _cut(10, 0.7, 0.30), _cut(20, 0.4, 0.20), _cut(29, 0.1, 0.50)]
    assert regret(cuts, 10) == pytest.approx(0.10)  # cut 20 is cheaper and better
    assert regret(cuts, 20) == 0.0 and regret(cuts, 0) == 0.0


N = 200  # test examples


def _sweep(seed, acc_per_cut, loss_per_cut, chosen, gains, full_loss=0.3, before_loss=1.0, variants=None,
           model="m", dataset="d"):
    """A sweep over cuts 0..L-1 of an L-block model (L = len(acc_per_cut)) whose per-example results
    have the given means; cut k costs 1 - k/L."""
    rng = np.random.default_rng(seed)
    L = len(acc_per_cut)

    order = rng.permutation(N)  # examples from easiest to hardest: runs share them, as real runs do

    def correct(p):  # exactly round(p N) correct examples, the easiest ones
        v = np.zeros(N, bool)
        v[order[: round(p * N)]] = True
        return v.tolist()

    def losses(m):
        return (m + rng.normal(0, 0.05, N) - 0).tolist()

    cuts = [{"cut": k, "cost_ratio": 1.0 - k / L, "per_example_correct": correct(a),
             "per_example_loss": losses(l_), "seconds": 10.0 * (L - k) / L, "train_losses": [1.0] * 10,
             "deviation_after": [1.0] * (L + 1)}
            for k, (a, l_) in enumerate(zip(acc_per_cut, loss_per_cut))]
    full = {"per_example_correct": correct(max(acc_per_cut)), "per_example_loss": losses(full_loss),
            "cost_ratio": 1.0, "seconds": 12.0, "lr": 1e-4}
    return {"model": model, "dataset": dataset, "seed": seed, "num_layers": L, "chosen_cut": chosen,
            "cuts": cuts, "strategies": {"full": full, "semantic-plan": {"cost_ratio": cuts[chosen]["cost_ratio"]}},
            "before": {"per_example_loss": losses(before_loss), "per_example_correct": correct(0.2)},
            "variants": {"argmax-excess/logit-labels": chosen, **(variants or {})}, "gains": {"excess": gains},
            "complete": True, "n_train": 8, "n_test": N, "steps": 1, "batch_size": 8, "lr": 1e-4,
            "lora_lr": 1e-3, "full_lr": 1e-4, "acc_before": 0.2, "loss_before": before_loss, "spearman": 0.1,
            "law": {"E": 0.0, "A": 1.0, "alpha": 1.0, "r2": 0.5, "at_bound": ["E"]},
            "deviation": [1.0] * (L + 1)}


def test_metrics_on_a_grid_with_known_answers():
    # cut 2 (cost 0.5) is as good as cut 0; the plan picked cut 1 (cost 0.75), cut 3 is poor
    acc = [0.80, 0.80, 0.80, 0.50]
    loss = [0.30, 0.30, 0.31, 0.80]
    sweeps = [_sweep(s, acc, loss, chosen=1, gains=[0.0, 0.1, 0.5, 0.2]) for s in range(2)]
    row = summarise_pair(sweeps, n_boot=200)
    assert row["chosen_cut"] == [1, 1] and row["grid"] == [0, 1, 2, 3]
    assert row["frontier_regret_acc"]["mean"] == pytest.approx(0.0)  # nothing cheaper-or-equal beats it
    assert row["oracle_gap"]["mean"] == pytest.approx(0.0)
    assert row["cost_regret"]["mean"] == pytest.approx(0.25)  # cut 2 is as accurate and 0.25 cheaper
    assert row["cost_regret"]["lo"] <= 0.25 <= row["cost_regret"]["hi"]
    assert row["knee_cut"] == 2 and row["knee_reached"]  # cheapest cut within 1 point of the best (0.8)
    assert row["knee_cut_per_seed"] == [2, 2]
    assert row["knee_distance"]["mean"] == pytest.approx(1.0)  # the plan trains one block too many
    top = row["rules"]["top25"]  # top25 of 4 blocks = cut 3: cheap and bad
    assert top["cuts"] == [3, 3] and top["frontier_regret_acc"]["mean"] == pytest.approx(0.0)
    assert row["rules"]["half"]["cost_regret"]["mean"] == pytest.approx(0.0)  # cut 2 is the frontier
    assert row["rules"]["all-blocks"]["cost_regret"]["mean"] == pytest.approx(0.5)
    assert leaderboard([row])["half"]["cost_regret"] == pytest.approx(0.0)
    # a uniformly random grid cut, in expectation: oracle gap (0 + 0 + 0 + 0.3) / 4, cost regret (0.5 + 0.25) / 4
    random_cut = row["rules"]["random-cut (expected)"]
    assert random_cut["oracle_gap"]["mean"] == pytest.approx(0.075)
    assert random_cut["cost_regret"]["mean"] == pytest.approx(0.1875) and random_cut["cost"] == pytest.approx(0.625)
    # the verdict weighs top25 against the plan by paired intervals: 0.25 of cost saved (cut 3 has no cheaper
    # rival), no frontier regret either way, 30 points of oracle gap added
    from freezelab.study.prose import top25_outcome

    vs = row["top25_vs_plan"]
    assert vs["delta_cost_regret"]["mean"] == pytest.approx(0.25) and vs["delta_oracle_gap"]["lo"] > 0.2
    assert top25_outcome(vs).endswith("mixed: better on cost regret; no detectable difference on frontier regret; "
                                      "worse on oracle gap")
    from freezelab.study.prose import answer_lines

    (answer, _) = answer_lines({"rows": [row], "rules": leaderboard([row])})
    assert "the plan's cut had the lower cost regret (paired interval clear of zero) on 0, the higher on 1" in answer
    assert "the lower frontier regret on 0, the higher on 0, no detectable difference on 1" in answer
    from freezelab.study.prose import bound_lines

    assert bound_lines([row])[0] == "The law's fit sat on a bound in 2 of the 2 traces: E on 2 (m x d)."
    # a plan at the cheap bad cut has a frontier regret of 0 but an oracle gap of 30 points
    bad = summarise_pair([_sweep(0, acc, loss, chosen=3, gains=[0.0, 0.1, 0.5, 0.2])], n_boot=50)
    assert bad["oracle_gap"]["mean"] == pytest.approx(0.30) and bad["oracle_gap"]["lo"] > 0.2


def test_verdict_says_when_full_fine_tuning_is_no_ceiling():
    from freezelab.study.prose import pair_sentences

    acc, loss = [0.80, 0.80, 0.80, 0.50], [0.30, 0.30, 0.31, 0.80]
    sweeps = [_sweep(s, acc, loss, chosen=1, gains=[0.0, 0.1, 0.5, 0.2]) for s in range(2)]
    as_good = pair_sentences(summarise_pair(sweeps, n_boot=200))  # full FT is as accurate as the plan's cut
    assert "Full fine-tuning" not in as_good and as_good.startswith("**m on d** (2 seeds): the plan chose cut [1, 1] (per seed);")
    for sweep in sweeps:  # full FT gets the 40 easiest test examples of the plan's 160 wrong
        plan_correct = np.array(sweep["cuts"][1]["per_example_correct"])
        sweep["strategies"]["full"]["per_example_correct"] = (plan_correct & (np.cumsum(plan_correct) > 40)).tolist()
    row = summarise_pair(sweeps, n_boot=200)
    assert row["strategies"]["full"]["acc_minus_plan"]["mean"] == pytest.approx(-0.2)
    assert "Full fine-tuning was less accurate than the plan's cut (-20.0 [" in pair_sentences(row)


def test_verdict_reads_the_knee_at_each_learning_rate():
    from freezelab.study.prose import lr_lines

    curves = {"0.0001": {"cuts": [0, 1, 2, 3], "acc": [0.80, 0.85, 0.845, 0.60], "chosen": True},
              "0.0003": {"cuts": [0, 2], "acc": [0.90, 0.70], "chosen": False}}
    assert lr_lines([{"model": "m", "dataset": "d", "lr_sensitivity": {"0.0001": curves["0.0001"]}}]) == []
    (text, _) = lr_lines([{"model": "m", "dataset": "d", "lr_sensitivity": curves}])
    assert text.endswith("at lr 0.0001 (chosen on validation data) the best cut was 1 (85.0%), the deepest within 1 "
                         "point of it 2; at lr 0.0003 the best cut was 0 (90.0%), the deepest within 1 point of it 0.")


def test_status_states_the_measured_compute_and_what_is_left():
    from freezelab.study.results import sweep_hours
    from freezelab.study.prose import status_sentence

    sweep = {"cuts": [{"seconds": 1800.0}, {"seconds": 900.0}], "cache_seconds": 360.0,
             "strategies": {"full": {"seconds": 540.0}, "semantic-plan": {"cut": 1}}}
    assert sweep_hours(sweep) == pytest.approx(1.0)  # 3600 s; semantic-plan reuses cut 1's run
    status = {"planned": 3, "complete": 2, "missing": [["m", "d", 2]], "hours": 1.5, "median_sweep_hours": 0.75}
    assert status_sentence(status) == (
        "**Status: 2 of 3 planned sweeps (model x data set x seed) are complete; the study is still running.** "
        "Still to come: m x d seed 2. Their runs took 1.5 hours of wall time on the CPU that made them (the cache, "
        "every grid cut and baseline; not the learning-rate picks; partly beside other work), 45 min per sweep at "
        "the median; at that median the 1 sweep still to come would take about 0.8 hours more. Each pair below uses its "
        "complete seeds; its numbers can move as the other seeds arrive.")
    # a sweep trained at a rate that is no longer its pair's pick waits, named, and the move's cost is said
    moving = {**status, "stale": [["m", "d", 2, ["full"]]],
              "reruns": {"rates": 3, "rate_seconds": 5400.0, "runs": 2, "run_seconds": 720.0}}
    assert ("Of these, waiting for a family's own learning rate (picked on validation data) or to be trained again "
            "at it: m x d seed 2 (full). Their runs took") in status_sentence(moving)
    assert ("Giving every family its own learning rate, strictly inside its grid, took 3 added rates measured on "
            "validation data (1.5 hours) and 2 runs trained again at a changed rate (0.2 hours), in wall time on "
            "the CPU that ran them. Each pair below") in status_sentence(moving)
    done = {**status, "complete": 3, "missing": []}
    assert status_sentence(done).endswith("are complete.** Their runs took 1.5 hours of wall time on the CPU that "
                                          "made them (the cache, every grid cut and baseline; not the learning-rate "
                                          "picks; partly beside other work), 45 min per sweep at the median.")


def test_frontier_regret_sees_a_cheaper_better_cut():
    acc = [0.70, 0.60, 0.90, 0.50]  # cut 2 is cheaper than the plan's cut 1 and 30 points better
    sweeps = [_sweep(0, acc, [0.5, 0.6, 0.2, 0.9], chosen=1, gains=[0, 0, 0, 0])]
    row = summarise_pair(sweeps, n_boot=200)
    assert row["frontier_regret_acc"]["mean"] == pytest.approx(0.30)
    assert row["frontier_regret_acc"]["lo"] > 0.2  # a CI that excludes zero
    assert row["frontier_regret_nats"]["mean"] == pytest.approx(0.4, abs=0.03)


def test_marginal_spearman_rewards_a_predictor_that_knows_which_blocks_matter():
    # realised: blocks 3 and 1 remove most loss; depth order cannot say so, the gains do
    loss = [0.20, 0.60, 0.65, 0.95]  # + before 1.0: block 1 -> 0.4, block 2 -> 0.05, block 3 -> 0.30, block 4 -> 0.05
    good = summarise_pair([_sweep(0, [0.8] * 4, loss, chosen=1, gains=[0.4, 0.05, 0.3, 0.06])], n_boot=100)
    assert good["marginal_spearman"]["mean"] == pytest.approx(1.0)
    assert good["marginal_spearman_depth"]["mean"] < 0.5
    wrong = summarise_pair([_sweep(0, [0.8] * 4, loss, chosen=1, gains=[0.0, 0.4, 0.05, 0.3])], n_boot=100)
    assert wrong["marginal_spearman"]["mean"] < 0


def test_paired_bootstrap_interval():
    a = np.array([[1.0, 0.0] * 100])
    assert paired(a, np.zeros_like(a))["mean"] == pytest.approx(0.5)
    d = paired(a, a)
    assert d["mean"] == 0 and d["lo"] == 0 and d["hi"] == 0  # identical runs differ by exactly nothing
    lo, hi = paired(a, np.zeros_like(a), n_boot=500)["lo"], paired(a, np.zeros_like(a), n_boot=500)["hi"]
    assert 0.38 < lo < 0.5 < hi < 0.62


def test_grid_keeps_only_cuts_every_seed_ran():
    a = _sweep(0, [0.8] * 4, [0.3] * 4, 1, [0] * 4)
    b = _sweep(1, [0.8] * 4, [0.3] * 4, 1, [0] * 4)
    b["cuts"] = b["cuts"][:3]  # seed 1 was interrupted before cut 3
    assert Grid([a, b]).cuts == [0, 1, 2]


def test_study_refuses_to_mix_runs_of_another_budget(tmp_path):
    (tmp_path / "scale.json").write_text(json.dumps({"scale": "ci", "n_train": 2, "batch_size": 1}))
    with pytest.raises(FreezelabError, match="another budget"):
        study_main(["--scale", "ci", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "scale.json").read_text())["n_train"] == 2  # left as it was


@pytest.mark.slow
def test_committed_cut_costs_come_from_the_pinned_pricing(smollm, bbc):
    """Every modelled cost of the study is priced on scale.json's fixed constants, not on the day's
    calibration: the ledger reproduces seed 0's stored cut costs of SmolLM2 x BBC News exactly."""
    from pathlib import Path

    from freezelab.costmodel.ledger import cut_cost_curve
    from freezelab.model.encode import encode
    from freezelab.study.runner import SCALES, study_split

    results = Path(__file__).parents[1] / "book" / "results"
    scale = SCALES["full"]
    assert tuple(json.loads((results / "scale.json").read_text())["pricing"]) == scale.pricing
    parts, _ = study_split(bbc, scale, 0)
    enc = encode(smollm.tokenizer, bbc, parts.train, scale.max_length)
    seq_len = round(float(np.mean([len(p) for p in enc.prompts])))
    ratio, cached = cut_cost_curve(smollm, seq_len, len(enc.label_ids), scale.batch_size, scale.device)
    stored = json.loads((results / "runs" / "smollm2-135m" / "bbc-news" / "seed0" / "sweep.json").read_text())
    cuts = [c["cut"] for c in stored["cuts"]]
    assert len(cuts) >= 16
    np.testing.assert_allclose([c["cost_ratio"] for c in stored["cuts"]], cached[cuts], rtol=1e-12)
    np.testing.assert_allclose([c["cost_ratio_uncached"] for c in stored["cuts"]], ratio[cuts], rtol=1e-12)


@pytest.mark.slow
def test_study_at_ci_scale(tmp_path):
    study_main(["--scale", "ci", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["rows"]
    assert row["model"] == "smollm2-135m" and row["dataset"] == "movie-polarity" and row["seeds"] == [0]
    assert row["complete"] and {"full", "top25", "lora", "semantic-plan"} <= set(row["strategies"])
    sweep = json.loads(next(tmp_path.glob("runs/*/*/seed0/sweep.json")).read_text())
    assert sweep["steps"] == 16 // 4  # one epoch
    from freezelab.study.runner import SCALES

    for family, first_grid, rate in (("blocks", "lr_grid", "lr"), ("lora", "lora_lr_grid", "lora_lr"),
                                     ("full", "full_lr_grid", "full_lr")):
        lr = json.loads(next(tmp_path.glob(f"runs/*/*/lr_{family}.json")).read_text())
        assert set(getattr(SCALES["ci"], first_grid)) <= set(lr["grid"]) and sweep[rate] == lr["lr"] in lr["grid"]
        assert set(lr["val_loss"]) == {repr(r) for r in lr["grid"]} and lr["interior"] == (lr["grid"][0] < lr["lr"]
                                                                                          < lr["grid"][-1])
    for c in sweep["cuts"]:
        assert len(c["per_example_loss"]) == sweep["n_test"] == len(c["per_example_correct"])
        assert len(c["deviation_after"]) == 31
    assert sweep["strategies"]["lora"]["lr"] == sweep["lora_lr"] and sweep["strategies"]["full"]["lr"] == sweep["full_lr"]
    # what a rule reads: every lens's per-example deviations on the calibration set, and every cut's cost
    from freezelab.study.tracefile import load_trace

    seed0 = tmp_path / "runs/smollm2-135m/movie-polarity/seed0"
    t = load_trace(seed0 / "trace.npz")
    assert t.num_layers == 30 and t.cost.shape == (30,) and t.deviation["logit-labels"].shape == (8, 31)
    np.testing.assert_allclose(t.deviation["logit-labels"].mean(0), sweep["deviation"], rtol=1e-5)
    (seed0 / "trace.npz").unlink()  # --retrace writes it again from a forward of the calibration set alone
    study_main(["--scale", "ci", "--out", str(tmp_path), "--retrace"])
    again = load_trace(seed0 / "trace.npz")
    assert again.lenses == t.lenses and np.array_equal(again.cost, t.cost)
    np.testing.assert_allclose(again.deviation["logit-labels"], t.deviation["logit-labels"], rtol=1e-4, atol=1e-5)
    for s in row["strategies"].values():
        assert 0 < s["cost_ratio"] <= 1 and 0 <= s["acc"]["mean"] <= 1
    full = sweep["strategies"]["full"]
    assert full["cost_ratio"] == pytest.approx(1.0)
    assert not list(tmp_path.glob("**/checkpoint.pt"))  # finished runs keep no checkpoints
    for key in ("frontier_regret_acc", "frontier_regret_nats", "oracle_gap", "cost_regret", "knee_distance",
                "marginal_spearman", "marginal_spearman_depth"):
        assert row[key]["lo"] <= row[key]["hi"]
    text = (tmp_path / "summary.md").read_text()
    assert "## smollm2-135m on movie-polarity" in text and "| semantic-plan |" in text
    assert (tmp_path / "smollm2-135m_movie-polarity_retrace.png").exists()
    verdict = (tmp_path / "verdict.md").read_text()
    assert "SmolLM2-135M-Instruct (dequantised Q4 GGUF) on movie-polarity** (1 seed)" in verdict
    assert verdict.startswith("**Status: 1 of 1 planned sweeps") and summary["status"]["missing"] == []
    # a sweep stopped between finetune writing its own result.json and the sweep storing what it measures
    # beside it (wall time, the re-trace): rerunning the study trains that run again; the others are read
    stored = {p: p.read_text() for p in tmp_path.glob("runs/*/*/seed0/runs/*/result.json")}
    top = tmp_path / "runs/smollm2-135m/movie-polarity/seed0/runs/cut00/result.json"
    own = {k: v for k, v in json.loads(top.read_text()).items() if k not in ("wall_seconds", "deviation_after")}
    top.write_text(json.dumps(own))
    study_main(["--scale", "ci", "--out", str(tmp_path)])
    again = json.loads(top.read_text())
    assert "wall_seconds" in again and len(again["deviation_after"]) == 31
    assert [p for p, text in stored.items() if p != top and p.read_text() != text] == []
    # the protocol the book quotes is the one the metrics ran with
    from freezelab.study.results import ACC_TOLERANCE, ZERO

    assert summary["protocol"]["acc_tolerance"] == ACC_TOLERANCE and summary["protocol"]["zero"] == ZERO
    assert "at least 3 of them" in (tmp_path / "protocol.md").read_text()  # decision.MIN_PAIRS
    assert summary["headline"].startswith("The study has no held-out model x data set yet")  # no development pair
    assert (tmp_path / "headline.md").read_text().startswith(f"**{summary['headline']}**")


# ---- learning rates per family, stale runs and the stored trace -------------------------------------------

def test_an_edge_pick_extends_the_grid_until_the_rate_is_interior(tmp_path):
    from freezelab.study.rates import lr_step, pick_lr

    assert [lr_step(3e-4, True), lr_step(3e-4, False), lr_step(1e-4, True), lr_step(1e-4, False)] == \
        [1e-3, 1e-4, 3e-4, 3e-5]
    measured = []

    def measure(lr):  # a validation loss with its minimum at 2e-3
        measured.append(lr)
        return float(np.log10(lr / 2e-3) ** 2)

    out = tmp_path / "lr_blocks.json"
    pick = pick_lr(measure, (1e-4, 3e-4), out, {"steps": 4})
    assert measured == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # 3e-4, then 1e-3 and 3e-3 were on the upper edge
    assert pick["lr"] == 3e-3 and pick["interior"] and pick["grid"] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    assert json.loads(out.read_text()) == {**pick, "steps": 4} and set(pick["seconds"]) == set(pick["val_loss"])
    assert pick_lr(measure, (1e-4, 3e-4), out) == pick and len(measured) == 5  # read back, nothing measured
    # an old pick stored on its lower edge keeps its measured values: only the new rate is measured
    old = tmp_path / "lr_lora.json"
    old.write_text(json.dumps({"lr": 1e-2, "val_loss": {"0.01": 0.1, "0.03": 0.2}, "steps": 4}))
    pick = pick_lr(lambda lr: measured.append(lr) or 0.3, (1e-2, 3e-2), old)
    assert measured[5:] == [3e-3] and pick["lr"] == 1e-2 and pick["interior"]
    assert pick["val_loss"] == {"0.003": 0.3, "0.01": 0.1, "0.03": 0.2} and pick["steps"] == 4
    # a grid of one rate is extended on both sides
    assert pick_lr(lambda lr: abs(np.log10(lr / 1e-3)), (1e-3,))["grid"] == [3e-4, 1e-3, 3e-3]



def test_every_committed_sweep_stores_what_a_rule_reads():
    """Each stored sweep's trace.npz: the default lens's deviations average to the d_0..d_L that sweep.json
    planned with, and the cost of every cut is the one its runs were priced at."""
    from pathlib import Path

    from freezelab.study.tracefile import LENS_VARIANTS, load_trace

    sweeps = sorted((Path(__file__).parents[1] / "book" / "results" / "runs").glob("*/*/seed*/sweep.json"))
    assert len(sweeps) >= 14
    for path in sweeps:
        stored, t = json.loads(path.read_text()), load_trace(path.parent / "trace.npz")
        L = stored["num_layers"]
        assert t.num_layers == L and t.cost.shape == (L,) and set(LENS_VARIANTS) <= set(t.lenses), path
        assert all(d.shape == (64, L + 1) for d in t.deviation.values()), path
        np.testing.assert_allclose(t.deviation["logit-labels"].mean(0), stored["deviation"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(t.cost[[c["cut"] for c in stored["cuts"]]], [c["cost_ratio"] for c in stored["cuts"]],
                                   rtol=1e-12)

def _tokenizer():
    """SmolLM2's tokenizer, without loading its weights."""
    from transformers import AutoTokenizer

    from freezelab.model.models import OFFLINE_MODELS, cache_dir

    converted = cache_dir() / "models" / "smollm2-135m"
    if (converted / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(converted)
    gguf = OFFLINE_MODELS["smollm2-135m"].locate()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 4-block random twin of SmolLM2 with its real tokenizer, saved as a local model folder (each
    run of a sweep loads a fresh copy by name)."""
    from freezelab.model.models import random_model

    folder = tmp_path_factory.mktemp("tiny-smollm2")
    random_model("smollm2-135m", hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_a_stale_run_trains_again_and_a_current_one_does_not(tiny_folder, tmp_path):
    from dataclasses import replace

    from freezelab.model.data import load_task, split
    from freezelab.model.models import load_model
    from freezelab.study.rates import Rates
    from freezelab.study.sweep import SweepConfig, run_sweep
    from freezelab.study.tracefile import LENS_VARIANTS, load_trace

    lm, task = load_model(tiny_folder, device="cpu", dtype="fp32"), load_task("movie-polarity")
    parts = split(task, seed=0, n_calib=6)
    parts = type(parts)(parts.train[:8], parts.train[:6], parts.test[:4])
    config = SweepConfig(cuts="even:2", steps=1, lr=Rates(1e-4, 1e-3, 3e-5), batch_size=4, strategies=("full",),
                         n_test=4, max_length=24)
    first = run_sweep(lm, task, parts, config, out=tmp_path, progress=False)
    assert first.complete and first.strategies["full"]["lr"] == 3e-5 and first.full_lr == 3e-5
    runs = tmp_path / "runs"
    stored = {p.parent.name: p.read_text() for p in runs.glob("*/result.json")}
    assert {"cut00", "cut03", "full"} <= set(stored)
    # trace.npz: every lens's per-example deviations, the cost of every cut, L
    t = load_trace(tmp_path / "trace.npz")
    assert t.num_layers == 4 and t.cost.shape == (4,) and set(LENS_VARIANTS) <= set(t.lenses)
    assert all(d.shape == (6, 5) for d in t.deviation.values())
    np.testing.assert_allclose(t.deviation["logit-labels"].mean(0), first.deviation, rtol=1e-5)
    np.testing.assert_allclose(t.cost[[c.cut for c in first.cuts]], [c.cost_ratio for c in first.cuts])
    # full fine-tuning's rate changes: only its run is stale; with block training's turn still to come
    # (families=full) a stale cut waits, left out of the results
    cut = runs / "cut03" / "result.json"
    cut.write_text(json.dumps({**json.loads(cut.read_text()), "lr": 3e-4}))
    moved = replace(config, lr=Rates(1e-4, 1e-3, 1e-5), families=("full",))
    second = run_sweep(lm, task, parts, moved, out=tmp_path, progress=False)
    assert not second.complete and second.pending == {"blocks": ["cut03"]} and 3 not in [c.cut for c in second.cuts]
    assert second.strategies["full"]["lr"] == 1e-5 and second.reruns["full"]["from_lr"] == 3e-5
    assert json.loads(cut.read_text())["lr"] == 3e-4  # waited: not trained
    assert sorted(n for n, text in stored.items() if (runs / n / "result.json").read_text() != text) == ["cut03", "full"]
    assert json.loads((tmp_path / "sweep.json").read_text())["pending"] == {"blocks": ["cut03"]}
    # every family's turn: the stale cut trains again at the block rate, nothing else does
    again = {p.parent.name: p.read_text() for p in runs.glob("*/result.json")}
    third = run_sweep(lm, task, parts, replace(moved, families=("blocks", "lora", "full")), out=tmp_path,
                      progress=False)
    assert third.complete and not third.pending and set(third.reruns) == {"cut03", "full"}
    assert json.loads(cut.read_text())["lr"] == 1e-4 and third.reruns["cut03"]["from_lr"] == 3e-4
    assert [n for n, text in again.items() if (runs / n / "result.json").read_text() != text] == ["cut03"]


def test_a_retrace_that_did_not_move_has_no_rank_correlation_and_no_warning():
    import warnings

    from freezelab.study.results import retrace

    still = _sweep(0, [0.8, 0.7, 0.6, 0.5], [0.3, 0.4, 0.5, 0.6], chosen=1, gains=[0.1, 0.3, 0.2, 0.0])
    moved = _sweep(1, [0.8, 0.7, 0.6, 0.5], [0.3, 0.4, 0.5, 0.6], chosen=1, gains=[0.1, 0.3, 0.2, 0.0])
    moved["cuts"][0]["deviation_after"] = [1.0, 0.9, 0.5, 0.4, 0.3]  # the largest change at block 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = retrace([still, moved])
    assert r["cut0"]["per_seed"][0] is None and r["cut0"]["mean"] == r["cut0"]["per_seed"][1]
    assert r["cut0"]["per_seed"][1] == pytest.approx(np.sqrt(0.1))  # ranks (2, 4, 3, 1) vs (2, 4, 2, 2): ties
    json.dumps(r, allow_nan=False)
