"""Assignment 4, the capstone lab: does a freezing rule work on your data? (``04_capstone.ipynb``)

The student pre-registers a rule (a stored trace in, a cut out) and a success criterion, runs a small
dense oracle sweep, compares the rule with top-25% and the depth-only rule with paired intervals and
writes a one-page report (the rubric: book/assignments/capstone.md). The cells are found by their tags:
``preregistration`` (code: ``def rule(t)`` and ``CRITERION``), ``results`` (every code cell that shows a
result), ``sweep``, ``comparison`` (code) and ``report`` (markdown).

    check_rule(fn)                    fn(t) -> a cut k in 0..L-1 on stored traces (hidden depths and lenses)
    check_preregistration(notebook)   the rule and a criterion are written, and their cell ran before any
                                      result (the saved notebook's execution counts)

``freezelab grade`` also reads its own run of the notebook (`sweep_score`, `comparison_score`,
`report_score`); ``freezelab.classroom.oracles`` scores the rule on the stored oracle sweeps.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from freezelab.classroom.checks.cells import cell_source, notebook_path, read_cells, tagged
from freezelab.classroom.checks.common import (PLACEHOLDER, SMOLLM2_BBC_TRACE, Case, Check, as_int, law_values,
                                               ok, run)

LENSES = ("logit-labels", "logit-full", "cosine", "kl")  # the lens variants every stored trace holds
CRITERION_WORDS = 8  # a success criterion says what is compared, against what, and what counts as success
REPORT_WORDS = (150, 700)  # a one-page report
INTERVAL = re.compile(r"\[\s*[-+]?\d*\.?\d+\s*,\s*[-+]?\d*\.?\d+\s*\]")  # "[lo, hi]"


# ---- the rule ----------------------------------------------------------------------------------------------


def stored_trace(d: np.ndarray, n: int, rng: np.random.Generator) -> SimpleNamespace:
    """A trace as a rule reads it (like `freezelab.study.tracefile.StoredTrace`) around mean deviations `d`:
    `num_layers`, `deviation[lens]` (n, L+1) per lens variant, `cost[k]` (L,) the cached cost ratio of cut k."""
    from freezelab.method.plan import default_cost_curve

    L = d.size - 1
    deviation = {lens: (d * scale + rng.normal(0.0, 0.3, (n, L + 1))).astype(np.float32)
                 for lens, scale in zip(LENSES, (1.0, 2.5, 0.1, 0.5))}
    return SimpleNamespace(num_layers=L, deviation=deviation, cost=default_cost_curve(L)[1], lenses=list(LENSES))


def _rule_cases(rng: np.random.Generator) -> list[Case]:
    depths = [int(rng.integers(6, 13)), int(rng.integers(13, 41))]
    shapes = [law_values(np.arange(L + 1.0), rng.uniform(0.5, 2), rng.uniform(3, 8), rng.uniform(0.4, 1.5))
              for L in depths]
    for d in shapes:
        d[0] += rng.uniform(2.0, 5.0)  # the embedding output: far from the answer
    traces = [("the book's reference trace (L = 30)", SMOLLM2_BBC_TRACE.copy())] + [
        (f"a hidden {L}-block trace", d) for L, d in zip(depths, shapes)]
    return [Case(label, (stored_trace(d, 8, rng),), d.size - 1) for label, d in traces]


def _judge_rule(case: Case, got: Any) -> str:
    L = case.ref
    k = as_int(got, "your rule's cut")
    if not 0 <= k < L:
        raise AssertionError(f"on {case.label}: your rule returned cut {k}; a cut is k = 0..L-1 = 0..{L - 1} "
                             "(blocks 1..k frozen, k+1..L trained: at least the last block trains)")
    return str(k)


RULE = Check(function="rule", hint="read t.num_layers, t.deviation['logit-labels'] (examples x latent spaces "
                                   "0..L) and t.cost (L,); return one whole number k in 0..L-1",
             cases=_rule_cases, judge=_judge_rule,
             success=lambda cases, cuts: ("your rule returns a valid cut on " + ", ".join(
                 f"{c.label}: {k}" for c, k in zip(cases, cuts))))


def check_rule(rule: Callable) -> None:
    """Check ``rule(t) -> k`` on stored traces (the book's reference trace and hidden ones): a whole number in
    0..L-1. Whether the rule is any good is what your sweep and the stored oracles measure."""
    run(RULE, rule)


# ---- pre-registration --------------------------------------------------------------------------------------


def _criterion(source: str) -> str | None:
    """The string assigned to CRITERION at the top level of `source`, if any."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CRITERION" for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    return None


def _written_rule(source: str) -> bool:
    """Whether `source` defines a top-level ``rule`` whose body is more than the stub (a docstring and
    ``raise NotImplementedError``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "rule":
            body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            stub = len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
            return bool(body) and not stub
    return False


def preregistration(cells: list[dict]) -> list[tuple[str, bool, str]]:
    """(what, met, feedback) for each part of the pre-registration in a saved notebook's `cells`."""
    found = tagged(cells, "preregistration", kind="code")
    if not found:
        missing = "no code cell tagged 'preregistration' (or starting with the line # preregistration)"
        return [(part, False, missing) for part in ("rule", "criterion", "order")]
    source = cell_source(found[0])
    criterion = _criterion(source) or ""
    words = len(re.findall(r"\w+", criterion))
    parts = [("rule", _written_rule(source),
              "the pre-registration cell defines no function rule(t) beyond the stub: write your rule there, "
              "under that name"),
             ("criterion", PLACEHOLDER not in criterion and words >= CRITERION_WORDS,
              f"CRITERION is {'still empty' if PLACEHOLDER in criterion or not criterion else f'{words} words'}: "
              f"state in at least {CRITERION_WORDS} words what you compare, against which rule, and what result "
              "counts as success, before you see any result")]
    ran = found[0].get("execution_count")
    results = [c.get("execution_count") for c in tagged(cells, "results", kind="code")]
    first = min((n for n in results if n is not None), default=None)
    if ran is None:
        order = (False, "the pre-registration cell has not run in the saved notebook: run it before any result "
                        "cell, then save")
    elif first is not None and first < ran:
        order = (False, f"a result cell ran (execution count {first}) before the pre-registration cell ({ran}): a "
                        "criterion written after seeing the results is not pre-registered. Restart the kernel and "
                        "run the notebook top to bottom")
    else:
        order = (True, "")
    return parts + [("order", *order)]


def check_preregistration(notebook: str | os.PathLike | None = None) -> None:
    """Check the SAVED notebook: the pre-registration cell defines rule(t) and CRITERION, and ran before every
    cell tagged ``results`` (by their execution counts)."""
    parts = preregistration(read_cells(notebook_path(notebook, "check_preregistration")))
    failed = [feedback for _, met, feedback in parts if not met]
    if failed:
        raise AssertionError("; ".join(failed))
    ok("pre-registered: your rule and criterion ran before any result")


def preregistration_score(cells: list[dict]) -> tuple[float, str]:
    parts = preregistration(cells)
    failed = [feedback for _, met, feedback in parts if not met]
    return (len(parts) - len(failed)) / len(parts), "; ".join(failed) or (
        "pre-registered: the rule and the criterion ran before any result")


# ---- what the grader's run of the notebook shows -------------------------------------------------------------


def _errors(cells: list[dict]) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def _printed(cells: list[dict]) -> str:
    out = []
    for c in cells:
        for o in c.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain", "")
            out.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(out)


def sweep_score(cells: list[dict], folder: Path, since: float) -> tuple[float, str]:
    """The cells tagged ``sweep`` ran without error, and wrote a sweep of at least 3 cuts with its trace (a
    ``sweep.json`` under `folder` written after `since`, time.time())."""
    ran = tagged(cells, "sweep", kind="code")
    if not ran:
        return 0.0, "no code cell tagged 'sweep'"
    errors = _errors(ran)
    fresh = sorted((p for p in folder.rglob("sweep.json") if p.stat().st_mtime >= since),
                   key=lambda p: p.stat().st_mtime)
    cuts = len(json.loads(fresh[-1].read_text()).get("cuts", [])) if fresh else 0
    wrote = bool(fresh) and cuts >= 3 and (fresh[-1].parent / "trace.npz").exists()
    share = (not errors) / 2 + wrote / 2
    if share == 1:
        return 1.0, f"the oracle sweep ran: {cuts} cuts in {fresh[-1].parent.relative_to(folder)}"
    why = [f"the sweep cell raised {errors[0]}"] if errors else []
    if not wrote:
        why.append("no sweep of 3 or more cuts with its trace.npz was written while the notebook ran" if not fresh
                   else f"the sweep has {cuts} cuts (3 or more) or no trace.npz beside it")
    return share, "; ".join(why)


def comparison_score(cells: list[dict]) -> tuple[float, str]:
    """The cells tagged ``comparison`` ran without error and print the rule against top-25% and against the
    depth-only rule, each with an interval [lo, hi]."""
    shown = tagged(cells, "comparison", kind="code")
    if not shown:
        return 0.0, "no code cell tagged 'comparison'"
    text, errors = _printed(shown), _errors(shown)
    lines = text.splitlines()
    refs = {"top-25%": r"top.?25", "the depth-only rule": r"depth"}
    missing = [name for name, pattern in refs.items()
               if not any(re.search(pattern, line, re.I) and INTERVAL.search(line) for line in lines)]
    share = (len(refs) - len(missing)) / len(refs) * (0.5 if errors else 1.0)
    if share == 1:
        return 1.0, "the comparison shows the rule against top-25% and the depth-only rule with paired intervals"
    why = ([f"the comparison cell raised {errors[0]}"] if errors else []) + [
        f"no printed line compares with {name} and gives an interval [lo, hi]" for name in missing]
    return share, "; ".join(why)


def report_score(cells: list[dict]) -> tuple[float, str]:
    """The markdown cell tagged ``report``: written, one page, says whether the criterion was met and quotes an
    interval. Its argument is graded by a person against the rubric."""
    found = tagged(cells, "report", kind="markdown")
    body = re.sub(r"<!--.*?-->", "", "\n".join(cell_source(c) for c in found), flags=re.S).strip()
    if not found or not body or PLACEHOLDER in body:
        return 0.0, f"the report is still empty: write it in the cell tagged 'report' (it said {PLACEHOLDER!r})"
    words = len(re.findall(r"\w+", body))
    parts = [(REPORT_WORDS[0] <= words <= REPORT_WORDS[1],
              f"{words} words: a one-page report is {REPORT_WORDS[0]} to {REPORT_WORDS[1]} words"),
             (bool(re.search(r"criterion", body, re.I) and re.search(r"\b(met|not met|fail\w*|pass\w*)\b", body, re.I)),
              "say whether your pre-registered criterion was met"),
             (bool(INTERVAL.search(body)), "quote at least one paired interval [lo, hi] from your comparison")]
    failed = [why for met, why in parts if not met]
    return (len(parts) - len(failed)) / len(parts), "; ".join(failed) or (
        f"report found ({words} words); your teacher grades its argument against the rubric")


CHECKS = {"check_rule": RULE}
