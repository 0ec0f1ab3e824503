"""`freezelab grade` cannot be changed by the submission it grades.

The student's functions run in a separate process (freezelab.classroom.sandbox) that holds only the
notebook's definitions; the values they return are judged in the grading process. Tampering with numpy
or the checks, in a cell or inside the graded function, changes nothing; the seed reproduces a grade;
each case earns its share; a file that is not a notebook is refused in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from freezelab.classroom import grade
from freezelab.classroom.sandbox import Call, call_all, decode, definitions, encode
from freezelab.errors import FreezelabError

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "notebooks" / "assignments" / "solutions"
CORRECT_ARGMAX = """
import numpy as np

def argmax_cut(excess):
    inner = np.asarray(excess)[1:-1]
    return 2 + int(np.flatnonzero(inner == inner.max())[-1])
"""


def grade_cli(notebook: Path, tmp_path: Path, *extra: str) -> tuple[int, str, dict]:
    """`freezelab grade NOTEBOOK --json ... EXTRA` in a subprocess: (exit status, the table, the JSON)."""
    out = tmp_path / "scores.json"
    proc = subprocess.run([sys.executable, "-m", "freezelab.cli", "grade", str(notebook), "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=1800)
    assert out.exists(), proc.stderr
    return proc.returncode, proc.stdout, json.loads(out.read_text())


def raising_cells(notebook: Path) -> set[int]:
    """The indices (in the notebook's cells) of the code cells tagged `raises-exception`: a student
    edition's stubs and the checks that call them, the only cells that may raise before it is done."""
    cells = json.loads(notebook.read_text())["cells"]
    return {i for i, c in enumerate(cells) if "raises-exception" in c.get("metadata", {}).get("tags", [])}


def _submission(tmp_path: Path, replace: dict[str, str], extra_cell: str | None = None) -> Path:
    """Assignment 2's solution with the code cells starting with each key replaced (and a cell added)."""
    nb = json.loads((SOLUTIONS / "02_fit_law.ipynb").read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for start, new in replace.items():
            if cell["cell_type"] == "code" and source.startswith(start):
                cell["source"] = new
    if extra_cell:
        nb["cells"].insert(3, {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                               "source": extra_cell})
    path = tmp_path / "02_fit_law.ipynb"
    path.write_text(json.dumps(nb))
    return path


ZEROS = "def residuals(p, l, d):\n    return np.zeros_like(d)\n"


@pytest.mark.slow
def test_the_tampering_line_does_not_pass_a_wrong_function(tmp_path):
    """`np.allclose = lambda *a, **k: True` once made a function that returns zeros pass check_residuals."""
    path = _submission(tmp_path, {"def residuals(": ZEROS}, extra_cell="np.allclose = lambda *a, **k: True")
    status, table, report = grade_cli(path, tmp_path, "--seed", "3")
    rows = {c["check"]: c for c in report["checks"]}
    assert status == 1 and report["score"] < report["max_score"]
    assert rows["check_residuals"]["points"] == 0 and not rows["check_residuals"]["passed"]
    assert "expected E + A * l ** (-alpha) - d" in rows["check_residuals"]["feedback"]
    assert rows["check_gains"]["passed"] and report["seed"] == 3 and "--seed 3" in table


@pytest.mark.slow
def test_patching_from_inside_the_function_body_changes_nothing(tmp_path):
    """The graded function patches numpy, the checks' comparison and freezelab's fit before returning zeros."""
    body = ("def residuals(p, l, d):\n"
            "    import freezelab.classroom.checks.common as common\n"
            "    import freezelab.method.law as law\n"
            "    np.allclose = lambda *a, **k: True\n"
            "    common.close = lambda *a, **k: True\n"
            "    law.fit_scaling_law = lambda *a, **k: None\n"
            "    return np.zeros_like(d)\n")
    status, _, report = grade_cli(_submission(tmp_path, {"def residuals(": body}), tmp_path)
    rows = {c["check"]: c for c in report["checks"]}
    assert status == 1 and rows["check_residuals"]["points"] == 0
    assert rows["check_gains"]["passed"] and rows["check_argmax_cut"]["passed"]  # nothing leaked out


@pytest.mark.slow
def test_a_file_that_is_not_a_notebook_is_refused_in_one_line(tmp_path):
    path = tmp_path / "essay.ipynb"
    path.write_text("my answers, as plain text")
    proc = subprocess.run([sys.executable, "-m", "freezelab.cli", "grade", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "essay.ipynb is not a Jupyter notebook" in proc.stderr, proc.stderr
    path.write_text('{"cells": 3}')
    with pytest.raises(FreezelabError, match="is not a Jupyter notebook"):
        grade.read_notebook(path)


def test_definitions_keep_imports_functions_and_constants_only():
    source = definitions(["%pip install -q x\nimport numpy as np\nnp.allclose = lambda *a, **k: True\nN = 3\n"
                          "lm = load_model('smollm2-135m')\nprint(1 / 0)",
                          "def f(x):\n    return x * N\n", "this is not python("])
    assert "np.allclose" not in source and "load_model" not in source and "print" not in source
    assert "import numpy as np" in source and "N = 3" in source and "def f(x):" in source


def test_values_travel_as_json_and_nothing_else():
    value = (np.arange(6, dtype=np.float32).reshape(2, 3), 3, [np.int64(2), None], "s")
    back = decode(json.loads(json.dumps(encode(value))))
    assert back[0].dtype == np.float32 and back[0].shape == (2, 3) and back[1:] == (3, [2, None], "s")
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(TypeError):
        decode({"__reduce__": ["os.system", "true"]})


@pytest.mark.slow
def test_the_seed_reproduces_the_hidden_cases_and_each_case_earns_its_share():
    """One sandbox process: an argmax that never looks at block L-1 fails only the hidden case there."""
    items = grade.ASSIGNMENTS["02_fit_law"]
    stops_early = CORRECT_ARGMAX.replace("[1:-1]", "[1:-2]")
    first = grade._judge_all(items, definitions([CORRECT_ARGMAX, stops_early.replace("argmax_cut", "unused")]), 11)
    again = grade._judge_all(items, definitions([stops_early]), 11)
    assert first["check_argmax_cut"]["passed"] and first["check_argmax_cut"]["points"] == 2
    row = again["check_argmax_cut"]
    passed = int(row["feedback"].split(" of 7 cases pass")[0])
    assert not row["passed"] and 0 < passed < 7 and row["points"] == round(2 * passed / 7, 2)
    assert "block L-1" in row["feedback"]
    missing = first["check_residuals"]
    assert missing["points"] == 0 and "no function residuals" in missing["feedback"]
    cases = [grade.checks.GRADERS["check_argmax_cut"].cases(np.random.default_rng([11, 3])) for _ in range(2)]
    other = grade.checks.GRADERS["check_argmax_cut"].cases(np.random.default_rng([12, 3]))
    hidden = lambda cs: b"".join(c.args[0].tobytes() for c in cs[-3:])  # noqa: E731
    assert hidden(cases[0]) == hidden(cases[1]) != hidden(other)


@pytest.mark.slow
def test_a_function_that_kills_its_process_fails_its_own_case_only():
    source = definitions(["import os\n\ndef f(x):\n    if x == 1:\n        os._exit(3)\n    return x + 1\n"])
    outcomes = call_all(source, [Call("f", (0,)), Call("f", (1,)), Call("f", (2,))])
    assert [o.value for o in outcomes] == [1, None, 3]
    assert "could not be called" in outcomes[1].error
