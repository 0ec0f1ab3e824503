"""Grade a submitted assignment notebook: ``freezelab grade NOTEBOOK.ipynb [--json PATH] [--seed N]``.

1. The notebook is executed top to bottom in a fresh Jupyter kernel (nbclient, from its own folder, at
   ``FREEZELAB_SCALE=ci``), carrying on past cells that fail: the cells' errors are reported, and the
   checks that read the notebook (a written defence, the capstone's pre-registration and results) read it.
2. The student's functions are called on every case of every check, fixed and hidden, in a separate
   process (`freezelab.classroom.sandbox`) that holds only the notebook's definitions; only the values
   they return come back.
3. Here, where no student code ever ran, each value is judged against freezelab's reference: each case
   earns its share of the check's points.

The hidden cases are drawn from `seed` (recorded in the JSON: ``--seed`` reproduces a grade exactly). The
result is a score table (check, points, passed, feedback) and, with ``--json``, a file for a
learning-management system. The command exits 0 only when every check passes.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from freezelab.classroom import checks
from freezelab.classroom.checks import capstone
from freezelab.classroom.checks.cells import cell_source, tagged
from freezelab.classroom.checks.defence import defence_score
from freezelab.classroom.oracles import score_rule
from freezelab.classroom.sandbox import Call, call_all, definitions
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json


@dataclass(frozen=True)
class Item:
    check: str  # a check of freezelab.classroom.checks
    function: str | None  # the student's function it grades (None: the check reads the notebook itself)
    points: int


@dataclass(frozen=True)
class Submission:
    """What the checks that read a notebook see: the file as submitted, the run the grader made of it."""

    path: Path
    submitted: dict  # the notebook as handed in (its stored execution counts tell the order it ran in)
    executed: dict  # the same after the grader's run
    started: float  # when the grader's run started (time.time())
    run_dir: Path  # where the grader's run writes the capstone's sweep (FREEZELAB_CAPSTONE_RUN)
    seed: int
    oracles: tuple[Path, ...]  # folders of extra oracle sweeps the instructor adds (--oracles)


# Every graded exercise of each assignment (notebooks/assignments/<name>.ipynb), in notebook order.
ASSIGNMENTS: dict[str, tuple[Item, ...]] = {
    "01_cosine_lens": (Item("check_semantic_basis", "semantic_basis_columns", 2),
                       Item("check_cosine_lens", "cosine_lens", 3)),
    "02_fit_law": (Item("check_residuals", "residuals", 1), Item("check_fit_law", "fit_law", 3),
                   Item("check_gains", "gains", 2), Item("check_argmax_cut", "argmax_cut", 2)),
    "03_budget_plan": (Item("check_benefit", "predicted_benefit", 2), Item("check_budget_cut", "budget_cut", 3),
                       Item("check_defence", None, 3)),
    "04_capstone": (Item("check_preregistration", None, 3), Item("check_rule", "rule", 2),
                    Item("check_sweep", None, 2), Item("check_comparison", None, 2),
                    Item("check_rule_on_oracles", None, 3), Item("check_report", None, 3)),
}
STUDY = Path(__file__).resolve().parents[2] / "book" / "results"  # the stored oracle sweeps of a checkout
# The checks that read the notebook: (the submission) -> (share of the points earned, feedback).
NOTEBOOK_CHECKS: dict[str, Callable[[Submission], tuple[float, str]]] = {
    "check_defence": lambda sub: defence_score(sub.path),
    "check_preregistration": lambda sub: capstone.preregistration_score(sub.submitted["cells"]),
    "check_sweep": lambda sub: capstone.sweep_score(sub.executed["cells"], sub.run_dir, sub.started),
    "check_comparison": lambda sub: capstone.comparison_score(sub.executed["cells"]),
    "check_rule_on_oracles": lambda sub: _rule_on_oracles(sub),
    "check_report": lambda sub: capstone.report_score(sub.submitted["cells"]),
}


def _rule_on_oracles(sub: Submission) -> tuple[float, str]:
    """The pre-registered rule on the stored oracle sweeps (the checkout's study and --oracles)."""
    oracles = ((STUDY,) if STUDY.is_dir() else ()) + sub.oracles
    if not oracles:
        return 0.0, "no stored oracle sweeps here (a checkout's book/results): pass --oracles DIR"
    cells = tagged(sub.submitted["cells"], "preregistration", kind="code")
    if not cells:
        return 0.0, "no code cell tagged 'preregistration': the rule to score is defined there"
    return score_rule(definitions([cell_source(cells[0])]), oracles)


def assignment_of(nb: dict, path: Path) -> str:
    """The assignment a notebook belongs to: its ``freezelab.assignment`` metadata, else its file name."""
    name = nb.get("metadata", {}).get("freezelab", {}).get("assignment", path.stem)
    if name not in ASSIGNMENTS:
        raise FreezelabError(f"{path} is not a freezelab assignment (metadata freezelab.assignment or the file name "
                             f"should be one of {', '.join(ASSIGNMENTS)})")
    return name


def read_notebook(path: Path):
    """The notebook at `path` (nbformat v4); FreezelabError, in one line, for anything that is not one."""
    import nbformat

    if not path.is_file():
        raise FreezelabError(f"no notebook at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notebooks written before cell ids: nbformat adds them
            nb = nbformat.read(path, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("it has no cells")
    except Exception as err:  # noqa: BLE001 - whatever the file is, it is not a notebook we can grade
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise FreezelabError(f"{path.name} is not a Jupyter notebook ({why})") from None
    return nb


def _execute(nb, path: Path, timeout: int, run_dir: Path) -> list[dict]:
    """Run `nb` in a fresh kernel from its folder at ci scale, past failing cells; the cells' errors.

    The capstone writes its sweep under `run_dir` (``FREEZELAB_CAPSTONE_RUN``): a fresh folder, so that no
    run stored beside the notebook is reused."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, "FREEZELAB_SCALE": "ci", "MPLBACKEND": "Agg",
                        "FREEZELAB_CAPSTONE_RUN": str(run_dir)})
    return [{"cell": i, "error": f"{o['ename']}: {o['evalue']}"}
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _row(item: Item, share: float, passed: bool, feedback: str) -> dict:
    return {"check": item.check, "function": item.function, "points": round(item.points * share, 2),
            "max_points": item.points, "passed": passed, "feedback": feedback}


def _judge_all(items: tuple[Item, ...], source: str, seed: int) -> dict[str, dict]:
    """Every function check's row: cases drawn from `seed`, called in the sandbox, judged here."""
    graded = [(i, item, checks.GRADERS[item.check]) for i, item in enumerate(items) if item.function]
    cases = {item.check: check.cases(np.random.default_rng([seed, i])) for i, item, check in graded}
    calls = [Call(check.function, case.args, check.hint, check.banned)
             for _, item, check in graded for case in cases[item.check]]
    outcomes = iter(call_all(source, calls))
    rows = {}
    for _, item, check in graded:
        notes, failures = [], []
        for case in cases[item.check]:
            outcome = next(outcomes)
            try:
                if outcome.error is not None:
                    raise AssertionError(outcome.error)
                notes.append(check.judge(case, outcome.value))
            except AssertionError as err:
                failures.append(str(err))
            except Exception as err:  # noqa: BLE001 - a value the judge cannot read fails its case only
                failures.append(f"{item.function} returned something the check could not read: "
                                f"{type(err).__name__}: {err}")
        n = len(cases[item.check])
        if not failures:
            feedback = check.success(cases[item.check], notes)
        else:
            feedback = (failures[0] if len(failures) == n else
                        f"{n - len(failures)} of {n} cases pass; the first that fails: {failures[0]}")
        rows[item.check] = _row(item, (n - len(failures)) / n, not failures, feedback)
    return rows


def grade(path: str | os.PathLike, timeout: int = 600, seed: int | None = None,
          oracles: tuple[str | os.PathLike, ...] = ()) -> dict:
    """Execute the notebook at `path` (carrying on past errors), then grade every check of its assignment."""
    path = Path(path).resolve()
    nb = read_notebook(path)
    assignment = assignment_of(nb, path)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    submitted = json.loads(json.dumps(nb))
    with tempfile.TemporaryDirectory(prefix="freezelab-grade-") as run_dir:
        started = time.time()
        cell_errors = _execute(nb, path, timeout, Path(run_dir))
        items = ASSIGNMENTS[assignment]
        code = [c["source"] for c in submitted["cells"] if c["cell_type"] == "code"]
        rows = _judge_all(items, definitions(code), seed)
        sub = Submission(path, submitted, json.loads(json.dumps(nb)), started, Path(run_dir), seed,
                         tuple(Path(o).resolve() for o in oracles))
        for item in items:
            if item.function is None:
                try:
                    share, feedback = NOTEBOOK_CHECKS[item.check](sub)
                except Exception as err:  # noqa: BLE001 - whatever goes wrong costs this check only
                    share, feedback = 0.0, f"the check could not run: {type(err).__name__}: {err}"
                rows[item.check] = _row(item, share, share == 1.0, feedback)
    checked = [rows[item.check] for item in items]
    score = round(sum(c["points"] for c in checked), 2)
    return {"notebook": str(path), "assignment": assignment, "seed": seed, "score": score,
            "max_score": sum(c["max_points"] for c in checked), "passed": all(c["passed"] for c in checked),
            "checks": checked, "cell_errors": cell_errors}


def table(report: dict, width: int = 100) -> str:
    """The score table: one row per check (its feedback wrapped below the row), then the total and the seed."""
    rows = [f"{report['assignment']}: {Path(report['notebook']).name}",
            f"{'check':<24} {'points':>9}  {'passed':<6}  feedback", "-" * width]
    for c in report["checks"]:
        lines = textwrap.wrap(c["feedback"], width - 45) or [""]
        rows.append(f"{c['check']:<24} {c['points']:>4g} / {c['max_points']:<2}  {'yes' if c['passed'] else 'NO':<6}  "
                    f"{lines[0]}")
        rows += [" " * 44 + line for line in lines[1:]]
    rows += ["-" * width, f"{'score':<24} {report['score']:>4g} / {report['max_score']}",
             f"hidden cases drawn with seed {report['seed']} (freezelab grade --seed {report['seed']} "
             "reproduces this grade)"]
    if report["cell_errors"]:
        rows.append(f"{len(report['cell_errors'])} cell(s) raised while the notebook ran, first: "
                    f"cell {report['cell_errors'][0]['cell']}: {report['cell_errors'][0]['error'][:200]}")
    return "\n".join(rows)


def main(notebook: str, json_path: str | None = None, timeout: int = 600, seed: int | None = None,
         oracles: tuple[str, ...] = ()) -> int:
    """`freezelab grade`: print the table, write the JSON, exit 0 only when every check passed."""
    report = grade(notebook, timeout=timeout, seed=seed, oracles=oracles)
    print(table(report))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_path, report, newline=True)
        print(f"wrote {json_path}")
    return 0 if report["passed"] else 1
