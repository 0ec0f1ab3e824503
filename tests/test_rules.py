"""`freezelab rules score`: rules written later, scored on stored oracle sweeps without a model."""

import json
import types
from pathlib import Path

import numpy as np
import pytest

from freezelab.cli import main
from freezelab.errors import FreezelabError
from freezelab.study.results import load_sweeps
from freezelab.study.rules import PAPER, STUDY, TOP25, leaderboard, score_rules
from freezelab.study.tracefile import write_trace
from test_sweep_study import _sweep

RULES = '''
import numpy as np
from freezelab import fit_scaling_law, layer_gains, plan


def paper(t):
    d = t.deviation["logit-labels"].mean(0)
    return plan(layer_gains(d, fit_scaling_law(d)), rule="argmax-excess").cut


def top25(t):
    return t.num_layers - max(1, t.num_layers // 4)


def _helper():  # private: not a rule
    return 0
'''


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_rules_that_reproduce_the_paper_rule_and_top25_score_exactly_like_them_on_the_stored_study(tmp_path):
    scores = score_rules(_write(tmp_path / "mine.py", RULES), oracles=[STUDY], n_boot=100)
    current = [pair for pair, sweeps in load_sweeps(STUDY).items() if any(s["complete"] for s in sweeps)]
    assert scores.written == ["paper", "top25"] and len(scores.pairs_scored) == len(current) >= 5  # 5 while one pair waits for reruns
    assert scores.pairs["paper"] == scores.pairs[PAPER]  # the same cut on every seed of every pair
    assert scores.rules["paper"] == scores.rules[PAPER] and scores.rules["top25"] == scores.rules[TOP25]
    assert scores.vs["paper"][TOP25] == scores.vs[PAPER][TOP25]
    assert scores.vs["top25"][PAPER] == scores.vs[TOP25][PAPER]
    assert scores.vs["paper"][PAPER]["delta_cost_regret"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    # the metric can fail: the paper's rule is detectably dearer than top-25% for the same accuracy
    assert scores.vs["paper"][TOP25]["delta_cost_regret"]["hi"] < 0
    text = leaderboard(scores)
    assert text.startswith(f"Scored on {len(current)} model x data set pairs") and "paper vs top-25%: cost regret saved -" in text


def _oracle(root: Path, seeds=(0, 1)) -> Path:
    """A stored 4-block study of one pair whose seeds wrote trace.npz: cut k costs 1 - k/4, cuts 0 and 2
    (and the paper's cut 1) in the grid."""
    for seed in seeds:
        sweep = _sweep(seed, [0.8, 0.8, 0.8, 0.5], [0.3, 0.3, 0.31, 0.8], chosen=1, gains=[0.0, 0.1, 0.5, 0.2])
        sweep["cuts"] = [c for c in sweep["cuts"] if c["cut"] != 3]
        folder = root / "runs" / "m" / "d" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "sweep.json").write_text(json.dumps(sweep))
        deviation = np.tile(np.linspace(3.0, 1.0, 5), (6, 1)) + seed
        write_trace(folder / "trace.npz", {"logit-labels": deviation, "cosine": deviation[:, ::-1]},
                    np.array([1.0, 0.75, 0.5, 0.25]), 4)
    return root


def test_a_rule_reads_every_lens_and_the_cost_of_every_cut_and_an_unrun_cut_is_scored_at_the_nearest(tmp_path):
    seen = []

    def cheapest(t):
        seen.append((t.num_layers, t.lenses, t.deviation["cosine"].shape, t.cost.tolist()))
        return int(np.flatnonzero(t.cost <= 0.3)[0])  # cut 3: not in the grid, scored at cut 2

    module = types.ModuleType("my_rules")
    cheapest.__module__ = "my_rules"
    module.cheapest = cheapest
    scores = score_rules(module, oracles=[_oracle(tmp_path)], n_boot=50)
    assert seen == [(4, ["logit-labels", "cosine"], (6, 5), [1.0, 0.75, 0.5, 0.25])] * 2
    assert scores.pairs["cheapest"]["m x d"] == {"cuts": [3, 3], "scored_at": [2, 2]} and scores.snapped["cheapest"] == 2
    assert scores.rules["cheapest"]["cost_regret"]["mean"] == pytest.approx(0.0)  # cut 2 is the frontier
    assert scores.rules[PAPER]["cost_regret"]["mean"] == pytest.approx(0.25)  # cut 1 where cut 2 is as accurate
    assert scores.vs["cheapest"][PAPER]["delta_cost_regret"]["mean"] == pytest.approx(0.25)
    assert "scored at the nearest grid cut: cheapest 2." in leaderboard(scores)


@pytest.mark.parametrize("text, message", [
    (None, "rules file '.*missing.py' not found"),
    ("import numpy as np\nfrom numpy import argmax\n\ndef _private(t):\n    return 0\n", "defines no public function"),
    ("def boom(t):\n    raise ValueError('no trace for me')\n",
     "rule 'boom' raised ValueError on oracle m x d seed 0: no trace for me"),
    ("def deep(t):\n    return t.num_layers\n", r"rule 'deep' returned 4 on oracle m x d seed 0: a cut is an integer in 0\.\.3"),
    ("def half(t):\n    return 1.5\n", "rule 'half' returned 1.5 on oracle m x d seed 0"),
    ("def broken(t)\n    return 0\n", "does not load: SyntaxError"),
])
def test_a_bad_rules_file_is_one_clear_line_and_exit_status_2(tmp_path, capsys, text, message):
    oracles = _oracle(tmp_path / "study")
    path = tmp_path / "missing.py" if text is None else _write(tmp_path / "mine.py", text)
    with pytest.raises(FreezelabError, match=message):
        score_rules(path, oracles=[oracles], n_boot=10)
    assert main(["rules", "score", str(path), "--oracles", str(oracles)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("freezelab: error: ") and err.count("\n") == 1


def test_the_command_prints_the_leaderboard_and_writes_json(tmp_path, capsys):
    path = _write(tmp_path / "mine.py", "def every_block(t):\n    return 0\n")
    out = tmp_path / "scores.json"
    assert main(["rules", "score", str(path), "--oracles", str(_oracle(tmp_path / "study")), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "every_block" in printed and "every_block vs argmax-excess/logit-labels" in printed
    stored = json.loads(out.read_text())
    assert stored["written"] == ["every_block"] and stored["pairs"]["every_block"]["m x d"]["cuts"] == [0, 0]
    with pytest.raises(FreezelabError, match="no complete oracle sweep"):
        score_rules(path, oracles=[tmp_path / "empty"], n_boot=10)


def test_a_pair_whose_runs_wait_for_a_new_learning_rate_is_left_out_and_named(tmp_path):
    import shutil

    root = _oracle(tmp_path / "study")
    shutil.copytree(root / "runs" / "m", root / "runs" / "m2")
    for path in (root / "runs" / "m2").glob("d/seed*/sweep.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "model": "m2"}))
    (root / "runs/m2/d/lr_full.json").write_text(json.dumps({"lr": 3e-5, "val_loss": {"3e-05": 0.4}}))
    scores = score_rules(_write(tmp_path / "mine.py", "def every_block(t):\n    return 0\n"), oracles=[root], n_boot=10)
    assert scores.pairs_scored == ["m x d"] and scores.waiting == ["m2 x d"]
    assert "Left out: m2 x d (no sweep complete at the picked learning rates" in leaderboard(scores)
