"""The classroom graders (freezelab.checks), the assignment notebooks and their book pages.

- every check passes on the instructor solutions (the functions of notebooks/assignments/solutions/,
  the notebooks run top to bottom, and the solution code shown on the book pages);
- every check fails on typical wrong answers with a message that names the mistake;
- the student notebooks are the solutions with the graded code stubbed out (make_student.py), are
  stored without outputs, and raise NotImplementedError at every check until filled in.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
import torch
from scipy.optimize import least_squares

from freezelab import checks

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = REPO / "notebooks" / "assignments"
SOLUTIONS = ASSIGNMENTS / "solutions"
PAGES = REPO / "book" / "assignments"
NOTEBOOKS = ["01_cosine_lens", "02_fit_law", "03_budget_plan"]
PAGE_OF = {"01_cosine_lens": "cosine_lens", "02_fit_law": "fit_law", "03_budget_plan": "budget_plan"}
# graded function -> its check
GRADED = {
    "semantic_basis_columns": checks.check_semantic_basis,
    "cosine_lens": checks.check_cosine_lens,
    "residuals": checks.check_residuals,
    "fit_law": checks.check_fit_law,
    "gains": checks.check_gains,
    "argmax_cut": checks.check_argmax_cut,
    "predicted_benefit": checks.check_benefit,
    "budget_cut": checks.check_budget_cut,
}


make_student = load_script(ASSIGNMENTS / "make_student.py", "make_student")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _code(path: Path) -> list[str]:
    return [_src(c) for c in _cells(path) if c["cell_type"] == "code"]


def _defines(source: str) -> str | None:
    m = re.match(r"\s*def (\w+)\(", source)
    return m.group(1) if m and m.group(1) in GRADED else None


def _run(sources: list[str], folder: Path, monkeypatch) -> dict:
    """Execute notebook code cells in order, in one fresh namespace, from the notebook's folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(folder)
    ns: dict = {"__name__": "__notebook__"}
    try:
        for source in sources:
            exec(compile(source, "<cell>", "exec"), ns)
    finally:
        plt.close("all")
    return ns


def _solution_functions(name: str, monkeypatch) -> dict:
    """The graded functions of a solution notebook (its first cell, the imports, plus their definitions)."""
    code = _code(SOLUTIONS / f"{name}.ipynb")
    return _run([code[0]] + [c for c in code if _defines(c)], SOLUTIONS, monkeypatch)


# ---- the solutions pass -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_checks_pass_on_solution_functions(name, monkeypatch, capsys):
    ns = _solution_functions(name, monkeypatch)
    graded = [f for f in GRADED if f in ns]
    assert graded, f"{name}: no graded function found"
    for function in graded:
        GRADED[function](ns[function])
    assert capsys.readouterr().out.count("\u2714") == len(graded)


@pytest.mark.parametrize("name", [pytest.param("01_cosine_lens", marks=pytest.mark.slow), "02_fit_law",
                                  "03_budget_plan"])
def test_solution_notebook_runs_top_to_bottom(name, monkeypatch, capsys):
    """Every cell, in order (01 loads SmolLM2-135M and traces 8 prompts in its ungraded part C)."""
    path = SOLUTIONS / f"{name}.ipynb"
    _run(_code(path), path.parent, monkeypatch)
    out = capsys.readouterr().out
    assert out.count("\u2714") == sum("checks.check_" in c for c in _code(path))


@pytest.mark.slow
def test_solution_notebook_runs_in_a_kernel():
    """The same under Jupyter (nbclient), the way students and teachers run it (starts a kernel: seconds)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(SOLUTIONS / "02_fit_law.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(SOLUTIONS)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert printed.count("\u2714") == 4 and "k* = 14" in printed


# ---- the student notebooks ----------------------------------------------------------------------------


def test_student_notebooks_are_the_solutions_stubbed():
    expected = make_student.student_notebooks()
    assert sorted(p.name for p in expected) == [f"{n}.ipynb" for n in NOTEBOOKS]
    for path, text in expected.items():
        assert path.exists(), f"{path.name} missing: run python notebooks/assignments/make_student.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date with solutions/{path.name}: run python notebooks/assignments/make_student.py")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_student_notebook_is_clean_and_hides_the_solutions(name):
    student = _cells(ASSIGNMENTS / f"{name}.ipynb")
    code = [c for c in student if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "stored outputs"
    text = "\n".join(_src(c) for c in student)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    stubs = [c for c in code if _defines(_src(c))]
    assert stubs and all("# YOUR CODE HERE\n" in _src(c) and "raise NotImplementedError" in _src(c) for c in stubs)
    # every solution line of the graded functions is gone (bar the signature and docstring)
    for cell in stubs:
        body = [ln.strip() for ln in _src(cell).splitlines()[2:]]
        assert body == ["# YOUR CODE HERE", "raise NotImplementedError"], body
    # each graded function has its check right after it
    sources = [_src(c) for c in code]
    for i, source in enumerate(sources):
        if _defines(source):
            assert "checks.check_" in sources[i + 1], f"no check cell after {_defines(source)}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_student_notebook_raises_not_implemented_at_every_check(name, monkeypatch):
    path = ASSIGNMENTS / f"{name}.ipynb"
    code = _code(path)
    ns = _run([code[0]], path.parent, monkeypatch)
    seen = 0
    for source in code[1:]:
        if _defines(source):
            exec(source, ns)
        elif "checks.check_defence" in source:
            with pytest.raises(AssertionError, match="still empty"):
                exec(source.replace("budget=BUDGET", "budget=0.5"), ns)
        elif "checks.check_" in source:
            function = re.search(r"check_\w+\((\w+)\)", source).group(1)
            with pytest.raises(NotImplementedError, match=rf"{function} is not implemented yet.*YOUR CODE HERE"):
                exec(source, ns)
            seen += 1
    assert seen == sum(1 for s in code if _defines(s))


# ---- the book pages ------------------------------------------------------------------------------------


def _page_solutions(page: str) -> dict[str, str]:
    """{function name: code} of the python blocks inside the page's {solution} directives."""
    text = (PAGES / f"{page}.md").read_text(encoding="utf-8")
    blocks = re.findall(r"````\{solution\}[^\n]*\n:class: dropdown\n(.*?)\n````", text, re.S)
    code = [m for b in blocks for m in re.findall(r"```python\n(.*?)\n```", b, re.S)]
    return {re.match(r"def (\w+)", c).group(1): c for c in code}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_book_page_shows_the_solution_code_and_it_passes(name, monkeypatch, capsys):
    page = PAGE_OF[name]
    text = (PAGES / f"{page}.md").read_text(encoding="utf-8")
    assert f"notebooks/assignments/{name}.ipynb" in text, "no link to the student notebook"
    labels = re.findall(r"````\{exercise\}[^\n]*\n:label: ([\w-]+)", text)
    solved = re.findall(r"````\{solution\} ([\w-]+)\n:class: dropdown", text)
    assert labels and sorted(labels) == sorted(solved), "every exercise needs a hidden (dropdown) solution"
    shown = _page_solutions(page)
    notebook = {_defines(c): c for c in _code(SOLUTIONS / f"{name}.ipynb") if _defines(c)}
    assert set(shown) == set(notebook)
    for function, code in notebook.items():
        clean = "\n".join(ln for ln in code.splitlines() if "SOLUTION" not in ln)
        assert shown[function] == clean, f"{page}.md shows a different {function} than the solution notebook"
    ns = _run([_code(SOLUTIONS / f"{name}.ipynb")[0], *shown.values()], SOLUTIONS, monkeypatch)
    for function in shown:
        GRADED[function](ns[function])


def test_toc_lists_the_assignment_pages():
    import yaml

    toc = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
    classroom = next(p for p in toc["parts"] if p["caption"] == "Classroom")
    index = next(c for c in classroom["chapters"] if c["file"] == "assignments/index")
    assert [s["file"] for s in index["sections"]] == [f"assignments/{PAGE_OF[n]}" for n in NOTEBOOKS]


# ---- wrong answers fail with a helpful message ----------------------------------------------------------


def _fails(check, fn, pattern: str) -> None:
    with pytest.raises(AssertionError, match=re.compile(pattern, re.S)):
        check(fn)


def _cos_variant(expr: str):
    def cosine_lens(hn, s_y):
        s = s_y[:, None, :]
        dot, nh, ns = (hn * s).sum(-1), hn.norm(dim=-1), s.norm(dim=-1)  # noqa: F841 - used by eval
        return eval(expr)

    return cosine_lens


SEMANTIC_BASIS_WRONG = [
    (lambda W, y: W[y], "rows W\\[y\\] of the LM head"),
    (lambda W, y: torch.linalg.pinv(W)[:, y], "transposed"),
    (lambda W, y: torch.linalg.pinv(W), "whole pseudo-inverse"),
    (lambda W, y: torch.nn.functional.normalize(torch.linalg.pinv(W)[:, y].T, dim=-1), "wrong length"),
    (lambda W, y: torch.linalg.pinv(W)[y], "raised IndexError.*columns y"),
]


@pytest.mark.parametrize("fn,pattern", SEMANTIC_BASIS_WRONG)
def test_semantic_basis_check_explains_mistakes(fn, pattern):
    _fails(checks.check_semantic_basis, fn, pattern)


COSINE_WRONG = [
    ("1 - dot", "forgot the norms"),
    ("1 - dot / nh", "forgot the norm of s_y"),
    ("1 - dot / ns", "forgot the norm of N\\(h_l\\)"),
    ("1 - dot / (nh**2 * ns**2)", "squared norms"),
    ("dot / (nh * ns)", "cosine similarity itself"),
    ("-dot / (nh * ns)", "off by the constant 1"),
    ("1 + dot / (nh * ns)", "wrong sign"),
    ("1.5 - dot / (nh * ns)", "off by a constant.*\\+0.5"),
    ("2 * (1 - dot / (nh * ns))", "off by a factor"),
    ("(1 - dot / (nh * ns)).T", "transposed"),
    ("1 - hn * s / (nh * ns)[..., None]", "kept the hidden dimension"),
    ("(1 - dot / (nh * ns)).mean(0)", "averaged or summed"),
    ("1 - (hn * s_y[:1, None]).sum(-1) / (nh * ns[:1])", "basis of the first target"),
    ("1 - (hn * s_y).sum(-1)", "raised RuntimeError.*s_y\\[:, None, :\\]"),
]


@pytest.mark.parametrize("expr,pattern", COSINE_WRONG)
def test_cosine_lens_check_explains_mistakes(expr, pattern):
    _fails(checks.check_cosine_lens, _cos_variant(expr), pattern)


RESIDUALS_WRONG = [
    ("(E + A * l ** (-alpha) - d) ** 2", "squared residuals"),
    ("np.sum((E + A * l ** (-alpha) - d) ** 2)", "not its sum of squares"),
    ("E + A * l ** alpha - d", "sign of the exponent"),
    ("E - A * l ** (-alpha) - d", "wrong sign of A"),
    ("A * l ** (-alpha) - d", "forgot E"),
    ("E + A * l ** (-alpha)", "subtract the data"),
    ("E + A * np.exp(-alpha * l) - d", "exponential"),
    ("E + A * (l + 1) ** (-alpha) - d", "shifted l by one"),
]


@pytest.mark.parametrize("expr,pattern", RESIDUALS_WRONG)
def test_residuals_check_explains_mistakes(expr, pattern):
    _fails(checks.check_residuals, eval(f"lambda p, l, d: (lambda E, A, alpha: {expr})(*p)"), pattern)


def test_residuals_of_either_sign_pass(capsys):
    checks.check_residuals(lambda p, l, d: d - (p[0] + p[1] * l ** (-p[2])))
    assert "fine for least squares" in capsys.readouterr().out


def _fit_variant(sign=-1.0, bounds=True, shifted=False, loss="linear", x0=None):
    """A hand fit with one deliberate mistake: the exponent's sign, no bounds, the data window, the start."""

    def fit_law(d):
        d = np.asarray(d, float)
        L = d.size - 1
        y = d[:-1] if shifted else d[1:]  # shifted: pairs l = 1..L with d_0..d_(L-1)
        l = np.arange(1, L + 1, dtype=float)
        start = x0 or [max(y.min(), 0), max(y[0] - y.min(), 1e-3), 1.0]
        kw = {"bounds": (0, np.inf)} if bounds else {}
        return tuple(least_squares(lambda p: p[0] + p[1] * l ** (sign * p[2]) - y, start, loss=loss, **kw).x)

    return fit_law


def test_fit_check_accepts_a_plain_least_squares_fit(capsys):
    checks.check_fit_law(_fit_variant())
    assert "match" in capsys.readouterr().out


@pytest.mark.parametrize("fn,pattern", [
    (_fit_variant(sign=+1.0), "flat.*wrong sign of the exponent"),
    (_fit_variant(bounds=False), "negative value.*bounds=\\(0, np.inf\\)"),
    (_fit_variant(shifted=True), "fits d_\\(l-1\\) at l"),
    (_fit_variant(x0=[0.0, 0.0, 0.0]), "flat"),
    (lambda d: (1.0, 2.0), "three numbers"),
    (lambda d: tuple(least_squares(lambda p: p[0] + p[1] * np.arange(len(d)) ** (-p[2]) - d, [1, 1, 1]).x),
     "raised ValueError.*l = 0 slipped in"),
])
def test_fit_check_explains_mistakes(fn, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _fails(checks.check_fit_law, fn, pattern)


def _gains_variant(kind):
    def gains(d, E, A, alpha):
        d = np.asarray(d, float)
        l = np.arange(d.size, dtype=float)
        with np.errstate(divide="ignore"):
            dhat = E + A * l ** (-alpha)
        o = d[:-1] - d[1:]
        raw = dhat[:-1] - dhat[1:]  # block 1 infinite
        e = raw.copy()
        e[0] = d[0] - dhat[1]
        return {
            "observed sign": (np.diff(d), e, np.diff(d) - e),
            "dhat(0)": (o, raw, o - raw),
            "block 1 zero": (o, np.r_[0.0, e[1:]], o - np.r_[0.0, e[1:]]),
            "expected sign": (o, -e, o + e),
            "excess sign": (o, e, e - o),
            "L+1": (np.r_[0.0, o], np.r_[0.0, e], np.r_[0.0, o - e]),
            "two": (o, e),
        }[kind]

    return gains


@pytest.mark.parametrize("kind,pattern", [
    ("observed sign", "observed has the wrong sign.*np.diff"),
    ("dhat(0)", "block 1 is infinite"),
    ("block 1 zero", "use d_0 in place of dhat\\(0\\)"),
    ("expected sign", "expected has the wrong sign"),
    ("excess sign", "excess has the wrong sign"),
    ("L+1", "one gain per BLOCK"),
    ("two", "three arrays"),
])
def test_gains_check_explains_mistakes(kind, pattern):
    _fails(checks.check_gains, _gains_variant(kind), pattern)


@pytest.mark.parametrize("fn,pattern", [
    (lambda g: int(np.argmax(g)) + 1, "search only blocks 2..L-1"),
    (lambda g: 1 + int(np.argmax(g[1:-1])), "numbered from 1"),
    (lambda g: 2 + int(np.argmax(g[1:-1])), "ties go to the DEEPER block"),
    (lambda g: "14", "one whole number"),
])
def test_argmax_cut_check_explains_mistakes(fn, pattern):
    _fails(checks.check_argmax_cut, fn, pattern)


def _shortfall(g):
    return np.maximum(0.0, -np.asarray(g))


@pytest.mark.parametrize("fn,pattern", [
    (lambda g: np.cumsum((-g)[::-1])[::-1], "without clipping"),
    (lambda g: np.cumsum(np.maximum(0.0, g)[::-1])[::-1], "wrong sign"),
    (lambda g: np.cumsum(_shortfall(g)), "frozen blocks"),
    (lambda g: np.r_[np.cumsum(_shortfall(g)[::-1])[::-1][1:], 0.0], "off by one"),
    (lambda g: (lambda b: b / b[0])(np.cumsum(_shortfall(g)[::-1])[::-1]), "benefit_ratio"),
    (lambda g: np.r_[np.cumsum(_shortfall(g)[::-1])[::-1], 0.0], "k = 0..L-1"),
])
def test_benefit_check_explains_mistakes(fn, pattern):
    _fails(checks.check_benefit, fn, pattern)


def _best(benefit, fits):
    b = benefit[fits]
    return int(fits[np.flatnonzero(b == b.max())[-1]])


@pytest.mark.parametrize("fn,pattern", [
    (lambda b, r, budget: int(np.argmax(b)), "ignores the budget: cut 0 costs 1.000"),
    (lambda b, r, budget: int(np.flatnonzero(r <= budget)[-1]), "predicts more benefit.*not the cheapest"),
    (lambda b, r, budget: int(np.flatnonzero(r <= budget)[0]), "ties go to the DEEPER cut"),
    (lambda b, r, budget: _best(b, np.flatnonzero(r < budget)), "exactly the budget.*<="),
    (lambda b, r, budget: len(b), "k = 0..L-1"),
])
def test_budget_cut_check_explains_mistakes(fn, pattern):
    _fails(checks.check_budget_cut, fn, pattern)


# ---- the written defence --------------------------------------------------------------------------------


def test_defence_check_reads_the_saved_notebook(tmp_path, monkeypatch, capsys):
    checks.check_defence(SOLUTIONS / "03_budget_plan.ipynb")
    assert "mentions the budget" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="still empty.*save it first"):
        checks.check_defence(ASSIGNMENTS / "03_budget_plan.ipynb")
    nb = json.loads((ASSIGNMENTS / "03_budget_plan.ipynb").read_text())
    for cell in nb["cells"]:
        if "defence" in cell["metadata"].get("tags", []):
            cell["metadata"]["tags"] = []  # found by its marker line alone
            cell["source"] = "<!-- defence -->\nI train the top 7 blocks (cut 23): it is the best cut I can afford."
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="does not mention the budget"):
        checks.check_defence(path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # the notebook of this Jupyter session
    with pytest.raises(AssertionError, match="does not mention the budget"):
        checks.check_defence()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and _src(cell).startswith("<!-- defence -->"):
            cell["cell_type"] = "code"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="no markdown cell tagged 'defence'"):
        checks.check_defence(path)
    with pytest.raises(AssertionError, match="no notebook at"):
        checks.check_defence(tmp_path / "missing.ipynb")


@pytest.mark.parametrize("text,passes", [
    ("Within the budget I pick cut 23.", True),
    ("Cut 23 costs less than half of full fine-tuning.", True),
    ("Cut 23 costs 0.489, under 50% of full fine-tuning.", True),
    ("Cut 23 costs 0.489 of full fine-tuning.", False),
    ("", False),
    ("<!-- defence -->\nYOUR ANSWER HERE", False),
])
def test_defence_check_on_text(text, passes):
    if passes:
        checks.check_defence(text=text)
    else:
        with pytest.raises(AssertionError):
            checks.check_defence(text=text)
