"""Assignment 3's written defence: the markdown cell tagged "defence" states the evidence asked for.

Its argument is graded by a person; the check reads the numbers it quotes. In ``freezelab grade`` each
piece of evidence earns its share of the points (`defence_score`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from freezelab.classroom.checks.cells import notebook_path, tagged_text
from freezelab.classroom.checks.common import PLACEHOLDER, SMOLLM2_BBC_TRACE, ok, quiet_fit

DEFENCE_BUDGET = 0.5  # assignment 3's budget, a share of full fine-tuning's cost


def _numbers(text: str) -> list[tuple[float, int]]:
    """(value, decimals) of every number written in `text`; a percentage counts as a share (49% -> 0.49, 2)."""
    found = []
    for m in re.finditer(r"(?<![\w.])(\d+)(?:\.(\d+))?(\s*(?:%|per ?cent))?", text):
        decimals = len(m.group(2) or "")
        value = float(m.group(1) + "." + (m.group(2) or "0"))
        if m.group(3):
            value, decimals = value / 100, decimals + 2
        found.append((value, decimals))
    return found


def says(text: str, target: float, min_decimals: int) -> bool:
    """Whether `text` states `target` rounded to some precision of at least `min_decimals` decimals."""
    return any(d >= min_decimals and abs(v - target) <= 0.5 * 10.0 ** -d + 1e-9 for v, d in _numbers(text))


def cut_named(text: str, k: int) -> bool:
    return any(d == 0 and v == k for v, d in _numbers(text))


def _defence_evidence(budget: float) -> list[tuple[str, Callable[[str], bool]]]:
    """What a defence of the budget plan must state, from freezelab's plan on the SmolLM2/BBC trace.

    The numbers are the ones the notebook prints (a correct solution reproduces them), so a defence written
    without running it, or one that only names the budget, fails.
    """
    from freezelab.method.gains import layer_gains
    from freezelab.method.plan import benefit_curve, default_cost_curve, plan

    law = quiet_fit(SMOLLM2_BBC_TRACE)
    gains = layer_gains(SMOLLM2_BBC_TRACE, law)
    ratio, cached = default_cost_curve(gains.excess.size)
    benefit = np.array([c.benefit for c in benefit_curve(gains)])
    k = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached)).cut
    kc = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached), cached=True).cut
    star = plan(gains).cut
    return [  # the values themselves are not in the feedback: Part C prints them
        ("your cut and its cost ratio", lambda t: cut_named(t, k) and says(t, ratio[k], 2)),
        ("the argmax plan (k*) and its cost ratio", lambda t: cut_named(t, star) and says(t, ratio[star], 2)),
        ("the predicted benefit of both, in nats",
         lambda t: says(t, benefit[k], 1) and says(t, benefit[star], 1)),
        ("how far the law fits the trace: its R^2",  # the value right after "R^2", not any number (0.5 budget)
         lambda t: any(says(t[m.end():m.end() + 40], law.r2, 1) for m in re.finditer(r"R\s*(\^\s*2|²|2\b)", t))),
        ("what caching the frozen prefix changes: the cut the budget buys with the prefix cached, and its cached "
         "cost ratio", lambda t: cut_named(t, kc) and says(t, cached[kc], 2) and bool(re.search(r"cach", t, re.I))),
    ]


def _verdict(source: str, budget: float, saved: str) -> tuple[int, int, str]:
    """(pieces of evidence stated, pieces asked for, feedback) for a defence's markdown source."""
    evidence = _defence_evidence(budget)
    body = re.sub(r"<!--.*?-->", "", source, flags=re.S).strip()
    if not body or PLACEHOLDER in body:
        return 0, len(evidence), (f"your defence is still empty: replace {PLACEHOLDER!r} in the defence cell with a "
                                  f"few sentences{saved}")
    missing = [what for what, stated in evidence if not stated(body)]
    if missing:
        return len(evidence) - len(missing), len(evidence), (
            f"your defence (budget {budget:g}) does not yet state " + "; ".join(missing)
            + f" (each number as your notebook computes it, rounded as you like; cost ratios to 2 decimals or "
              f"more){saved}")
    words = len(re.findall(r"\w+", body))
    return len(evidence), len(evidence), (f"defence found ({words} words) with the evidence asked for; your teacher "
                                          "grades what it argues")


def check_defence(notebook: str | os.PathLike | None = None, *, text: str | None = None, budget: float = DEFENCE_BUDGET,
                  tag: str = "defence") -> None:
    """Check that the written defence states the evidence the assignment asks for (its argument is graded by a
    person): the chosen cut and its cost, the argmax plan and its cost, both predicted benefits, the law's R^2,
    and the cut the budget buys with the frozen prefix cached, with its cached cost, each number as the notebook
    prints it.

    Reads the markdown cell tagged `tag` (or starting with ``<!-- defence -->``) from the SAVED notebook file
    `notebook` (default: the notebook of this Jupyter session); `text` checks a string instead.
    """
    source = text if text is not None else tagged_text(notebook_path(notebook, "check_defence"), tag)
    saved = "" if text is not None else " (the check reads the SAVED notebook: save it first, Ctrl-S / Cmd-S)"
    stated, asked, feedback = _verdict(source, budget, saved)
    if stated < asked:
        raise AssertionError(feedback)
    ok(feedback)


def defence_score(path: Path) -> tuple[float, str]:
    """``freezelab grade``: the share of the evidence the notebook's defence states, and the feedback."""
    try:
        source = tagged_text(path, "defence")
    except AssertionError as err:
        return 0.0, str(err)
    stated, asked, feedback = _verdict(source, DEFENCE_BUDGET, "")
    return stated / asked, feedback
