"""Grade a submitted assignment notebook: ``freezelab grade NOTEBOOK.ipynb [--json PATH]``.

The notebook is executed top to bottom in a fresh Jupyter kernel (nbclient, from its own folder, at
``FREEZELAB_SCALE=ci``), carrying on past cells that fail. Then, in that kernel, every check of the
assignment runs on the student's functions, each on its own: a failing or missing function costs its
points and nothing else. The result is a score table (check, points, passed, feedback) and, with
``--json``, a file for a learning-management system. The command exits 0 only when every check passes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import textwrap
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json


@dataclass(frozen=True)
class Item:
    check: str  # a function of freezelab.classroom.checks
    function: str | None  # the student's function it grades (None: the check reads the notebook itself)
    points: int


# Every graded exercise of each assignment (notebooks/assignments/<name>.ipynb), in notebook order.
ASSIGNMENTS: dict[str, tuple[Item, ...]] = {
    "01_cosine_lens": (Item("check_semantic_basis", "semantic_basis_columns", 2),
                       Item("check_cosine_lens", "cosine_lens", 3)),
    "02_fit_law": (Item("check_residuals", "residuals", 1), Item("check_fit_law", "fit_law", 3),
                   Item("check_gains", "gains", 2), Item("check_argmax_cut", "argmax_cut", 2)),
    "03_budget_plan": (Item("check_benefit", "predicted_benefit", 2), Item("check_budget_cut", "budget_cut", 3),
                       Item("check_defence", None, 3)),
}
DEFENCE_BUDGET = 0.5  # the budget assignment 3 sets (a student's BUDGET variable does not move it)
MARKER = "FREEZELAB-GRADE:"


def run_checks(assignment: str, namespace: dict, notebook: str) -> list[dict]:
    """Every check of `assignment` on the functions in `namespace` (runs inside the student's kernel).

    The checks module is reloaded first, so a notebook that patched it is graded by the original.
    """
    checks = importlib.reload(importlib.import_module("freezelab.classroom.checks"))
    results = []
    for item in ASSIGNMENTS[assignment]:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                if item.function is None:
                    getattr(checks, item.check)(notebook, budget=DEFENCE_BUDGET)
                elif not callable(namespace.get(item.function)):
                    raise AssertionError(f"no function {item.function} in the notebook: keep its name and run its "
                                         "cell")
                else:
                    getattr(checks, item.check)(namespace[item.function])
            passed, feedback = True, printed.getvalue().strip().lstrip("\u2714 ")
        except (AssertionError, NotImplementedError) as err:
            passed, feedback = False, str(err)
        except Exception as err:  # noqa: BLE001 - whatever goes wrong costs this check only
            passed, feedback = False, f"the check could not run: {type(err).__name__}: {err}"
        results.append({**asdict(item), "max_points": item.points, "points": item.points if passed else 0,
                        "passed": passed, "feedback": feedback})
    return results


def assignment_of(nb: dict, path: Path) -> str:
    """The assignment a notebook belongs to: its ``freezelab.assignment`` metadata, else its file name."""
    name = nb.get("metadata", {}).get("freezelab", {}).get("assignment", path.stem)
    if name not in ASSIGNMENTS:
        raise FreezelabError(f"{path} is not a freezelab assignment (metadata freezelab.assignment or the file name "
                             f"should be one of {', '.join(ASSIGNMENTS)})")
    return name


def grade(path: str | os.PathLike, timeout: int = 600) -> dict:
    """Execute the notebook at `path` (carrying on past errors), then run every check of its assignment."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path).resolve()
    if not path.is_file():
        raise FreezelabError(f"no notebook at {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notebooks written before cell ids: nbformat adds them
        nb = nbformat.read(path, as_version=4)
    assignment = assignment_of(nb, path)
    nb.cells.append(nbformat.v4.new_code_cell(
        "from freezelab.classroom.grade import MARKER as _MARKER, run_checks as _run_checks\n"
        f"print(_MARKER + __import__('json').dumps(_run_checks({assignment!r}, globals(), {str(path)!r})))"))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, "FREEZELAB_SCALE": "ci", "MPLBACKEND": "Agg"})
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    if MARKER not in printed:
        errors = [o for o in nb.cells[-1].outputs if o.get("output_type") == "error"]
        why = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else printed.strip() or "no output"
        raise FreezelabError(f"the grading cell did not run in {path.name}'s kernel ({why})")
    checks = json.loads(printed.split(MARKER, 1)[1].splitlines()[0])
    cell_errors = [{"cell": i, "error": f"{o['ename']}: {o['evalue']}"}
                   for i, cell in enumerate(nb.cells[:-1]) if cell.cell_type == "code"
                   for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    score, max_score = sum(c["points"] for c in checks), sum(c["max_points"] for c in checks)
    return {"notebook": str(path), "assignment": assignment, "score": score, "max_score": max_score,
            "passed": all(c["passed"] for c in checks), "checks": checks, "cell_errors": cell_errors}


def table(report: dict, width: int = 100) -> str:
    """The score table: one row per check (its feedback wrapped below the row), then the total."""
    rows = [f"{report['assignment']}: {Path(report['notebook']).name}",
            f"{'check':<22} {'points':>7}  {'passed':<6}  feedback", "-" * width]
    for c in report["checks"]:
        lines = textwrap.wrap(c["feedback"], width - 41) or [""]
        rows.append(f"{c['check']:<22} {c['points']:>3} / {c['max_points']:<1}  {'yes' if c['passed'] else 'NO':<6}  "
                    f"{lines[0]}")
        rows += [" " * 40 + line for line in lines[1:]]
    rows += ["-" * width, f"{'score':<22} {report['score']:>3} / {report['max_score']}"]
    if report["cell_errors"]:
        rows.append(f"{len(report['cell_errors'])} cell(s) raised while the notebook ran, first: "
                    f"cell {report['cell_errors'][0]['cell']}: {report['cell_errors'][0]['error'][:200]}")
    return "\n".join(rows)


def main(notebook: str, json_path: str | None = None, timeout: int = 600) -> int:
    """`freezelab grade`: print the table, write the JSON, exit 0 only when every check passed."""
    report = grade(notebook, timeout=timeout)
    print(table(report))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_path, report, newline=True)
        print(f"wrote {json_path}")
    return 0 if report["passed"] else 1
