"""The capstone lab (assignment 4): its checks can fail, its student copy is the solution stubbed, and
`freezelab grade` gives the solution full marks and the blank copy a complete table of zeros."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from test_grade import grade_cli, raising_cells

from freezelab.classroom import grade
from freezelab.classroom.checks import capstone

REPO = Path(__file__).resolve().parents[1]
SOLUTION = REPO / "notebooks" / "assignments" / "solutions" / "04_capstone.ipynb"
STUDENT = REPO / "notebooks" / "assignments" / "04_capstone.ipynb"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _tagged(path: Path, tag: str) -> dict:
    return capstone.tagged(_cells(path), tag)[0]


def _solution_rule():
    ns: dict = {}
    exec(capstone.cell_source(_tagged(SOLUTION, "preregistration")), ns)
    return ns


def test_the_solution_rule_passes_and_wrong_rules_fail(capsys):
    ns = _solution_rule()
    capstone.check_rule(ns["rule"])
    assert "valid cut" in capsys.readouterr().out
    assert len(re.findall(r"\w+", ns["CRITERION"])) >= capstone.CRITERION_WORDS
    for wrong, message in [(lambda t: t.num_layers, "a cut is k = 0..L-1"),
                           (lambda t: 2.5, "whole number"), (lambda t: [3], "whole number")]:
        with pytest.raises(AssertionError, match=message):
            capstone.check_rule(wrong)


def _nb(prereg: int | None, results: list[int | None], criterion: str = "x " * 10,
        rule: str = "def rule(t):\n    return 1\n"):
    cells = [{"cell_type": "code", "metadata": {"tags": ["preregistration"]}, "execution_count": prereg,
              "outputs": [], "source": f'{rule}\nCRITERION = "{criterion}"\n'}]
    return cells + [{"cell_type": "code", "metadata": {"tags": ["results"]}, "execution_count": n, "outputs": [],
                     "source": "print(1)"} for n in results]


@pytest.mark.parametrize("cells,share,message", [
    (_nb(1, [2, 3]), 1.0, "pre-registered"),
    (_nb(3, [2, 4]), 2 / 3, "before the pre-registration cell"),
    (_nb(None, [None]), 2 / 3, "has not run"),
    (_nb(1, [2], criterion="YOUR ANSWER HERE"), 2 / 3, "still empty"),
    (_nb(1, [2], criterion="better"), 2 / 3, "1 words"),
    (_nb(1, [2], rule="def my_rule(t):\n    return 1\n"), 2 / 3, "defines no function rule"),
    (_nb(1, [2], rule="def rule(t):\n    'doc'\n    raise NotImplementedError\n"), 2 / 3, "beyond the stub"),
    ([], 0.0, "no code cell tagged 'preregistration'"),
], ids=["first", "after-a-result", "not-run", "placeholder", "too-short", "renamed", "stub", "missing"])
def test_preregistration_reads_the_saved_execution_order(cells, share, message):
    got, feedback = capstone.preregistration_score(cells)
    assert got == pytest.approx(share) and message in feedback


def test_preregistration_check_for_students(tmp_path, capsys):
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps({"cells": _nb(1, [2])}))
    capstone.check_preregistration(path)
    assert "pre-registered" in capsys.readouterr().out
    path.write_text(json.dumps({"cells": _nb(5, [2])}))
    with pytest.raises(AssertionError, match="ran .* before the pre-registration"):
        capstone.check_preregistration(path)


def _printed(tag: str, text: str, error: bool = False) -> list[dict]:
    outputs = [{"output_type": "stream", "name": "stdout", "text": text}]
    if error:
        outputs.append({"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": []})
    return [{"cell_type": "code", "metadata": {"tags": [tag]}, "outputs": outputs, "source": ""}]


def test_the_comparison_needs_both_references_with_intervals():
    both = ("your rule vs top-25%: cost regret saved +0.10 [-0.05, +0.20]\n"
            "your rule vs depth-only: cost regret saved -0.02 [-0.10, +0.04]\n")
    assert capstone.comparison_score(_printed("comparison", both))[0] == 1.0
    share, feedback = capstone.comparison_score(_printed("comparison", both.splitlines()[0]))
    assert share == 0.5 and "depth-only" in feedback
    assert capstone.comparison_score(_printed("comparison", "top-25%: 0.1; depth-only: 0.2"))[0] == 0.0
    assert capstone.comparison_score(_printed("comparison", both, error=True))[0] == 0.5


def test_the_sweep_must_be_written_during_the_run(tmp_path):
    run = tmp_path / "capstone_run" / "seed0"
    run.mkdir(parents=True)
    (run / "sweep.json").write_text(json.dumps({"cuts": [{"cut": k} for k in (0, 5, 9)]}))
    (run / "trace.npz").write_bytes(b"")
    ran = _printed("sweep", "")
    assert capstone.sweep_score(ran, tmp_path, since=0.0)[0] == 1.0
    share, feedback = capstone.sweep_score(ran, tmp_path, since=(run / "sweep.json").stat().st_mtime + 1)
    assert share == 0.5 and "no sweep" in feedback  # an old sweep left in the folder earns nothing
    assert capstone.sweep_score(_printed("sweep", "", error=True), tmp_path, since=0.0)[0] == 0.5


def _report(text: str) -> list[dict]:
    return [{"cell_type": "markdown", "metadata": {"tags": ["report"]}, "source": f"<!-- report -->\n{text}"}]


def test_the_report_is_one_page_with_a_verdict_and_an_interval():
    sample = capstone.cell_source(_tagged(SOLUTION, "report"))
    assert capstone.report_score([{"cell_type": "markdown", "metadata": {"tags": ["report"]}, "source": sample}])[0] == 1
    words = " ".join(["word"] * 200)
    assert capstone.report_score(_report("YOUR ANSWER HERE"))[0] == 0
    share, feedback = capstone.report_score(_report(words + " my criterion was not met"))
    assert share == pytest.approx(2 / 3) and "interval" in feedback
    assert capstone.report_score(_report("criterion met [0.1, 0.2]"))[0] == pytest.approx(2 / 3)


def test_the_sample_report_quotes_the_solution_s_own_intervals():
    """The solution's report is a sample answer: every interval it quotes is one its comparison printed."""
    report = capstone.cell_source(_tagged(SOLUTION, "report"))
    printed = "".join("".join(o.get("text", "")) for o in _tagged(SOLUTION, "comparison")["outputs"])
    quoted = capstone.INTERVAL.findall(report)
    assert quoted and all(q in printed for q in quoted), quoted


def test_the_student_copy_asks_for_the_rule_the_criterion_and_the_report():
    prereg = capstone.cell_source(_tagged(STUDENT, "preregistration"))
    assert "raise NotImplementedError" in prereg and 'CRITERION = "YOUR ANSWER HERE"' in prereg
    assert "BEGIN" not in prereg and "END" not in prereg
    assert capstone.cell_source(_tagged(STUDENT, "report")) == "<!-- report -->\nYOUR ANSWER HERE"
    assert all(c.get("execution_count") is None for c in _cells(STUDENT) if c["cell_type"] == "code")


@pytest.mark.slow
def test_the_rule_travels_to_the_sandbox_as_a_stored_trace():
    from freezelab.classroom.sandbox import Call, call_all, definitions

    source = definitions([capstone.cell_source(_tagged(SOLUTION, "preregistration"))])
    cases = capstone.RULE.cases(np.random.default_rng([4, 1]))
    outcomes = call_all(source, [Call("rule", c.args) for c in cases])
    assert [capstone.RULE.judge(c, o.value) for c, o in zip(cases, outcomes)] == [str(_solution_rule()["rule"](*c.args))
                                                                                  for c in cases]


@pytest.mark.slow
def test_grade_gives_full_marks_to_the_solution(tmp_path):
    status, table, report = grade_cli(SOLUTION, tmp_path)
    assert [c["check"] for c in report["checks"]] == [i.check for i in grade.ASSIGNMENTS["04_capstone"]]
    assert status == 0 and report["score"] == report["max_score"] == 15 and report["cell_errors"] == [], table
    assert "cost regret saved against" in {c["check"]: c for c in report["checks"]}["check_rule_on_oracles"]["feedback"]


@pytest.mark.slow
def test_grade_gives_the_blank_copy_a_complete_table(tmp_path):
    status, table, report = grade_cli(STUDENT, tmp_path)
    rows = [i.check for i in grade.ASSIGNMENTS["04_capstone"]]
    assert status == 1 and [c["check"] for c in report["checks"]] == rows and all(row in table for row in rows)
    scores = {c["check"]: c["points"] for c in report["checks"]}
    assert scores["check_rule"] == scores["check_rule_on_oracles"] == scores["check_report"] == 0
    assert scores["check_preregistration"] == scores["check_comparison"] == 0  # the sweep is given: it runs
    assert report["score"] == scores["check_sweep"]
    assert {e["cell"] for e in report["cell_errors"]} <= raising_cells(STUDENT)  # only the stubs and checks raised
