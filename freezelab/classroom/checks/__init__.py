"""Graders for the classroom assignments (``notebooks/assignments/``): one module per assignment.

Each ``check_*`` function calls the student's function on small inputs (fixed ones and hidden ones drawn
afresh on every run), compares the result with freezelab's own implementation and either prints a short
success message or raises ``AssertionError`` whose message says what is wrong (wrong shape, wrong sign,
off by a constant, a forgotten norm, ...) and how to fix it. A student function that still raises
``NotImplementedError`` makes the check raise ``NotImplementedError`` too. ``freezelab grade`` uses the
same cases and judges (`GRADERS`), but calls the student's functions in a separate process.

- `cosine_lens` (assignment 1): check_semantic_basis, check_cosine_lens
- `fit_law` (assignment 2): check_residuals, check_fit_law, check_gains, check_argmax_cut
- `budget_plan` (assignment 3): check_benefit, check_budget_cut; `defence`: check_defence
- `capstone` (assignment 4): check_rule, check_preregistration
- `common`: the reference trace, `Check` and `Case`, calling and comparing; `cells`: reading a saved notebook
"""

from freezelab.classroom.checks import budget_plan, capstone, cosine_lens, fit_law
from freezelab.classroom.checks.budget_plan import budget_cases, check_benefit, check_budget_cut
from freezelab.classroom.checks.capstone import check_preregistration, check_rule
from freezelab.classroom.checks.common import REFERENCE, SMOLLM2_BBC_TRACE, Check, reference_trace
from freezelab.classroom.checks.cosine_lens import check_cosine_lens, check_semantic_basis
from freezelab.classroom.checks.defence import DEFENCE_BUDGET, check_defence
from freezelab.classroom.checks.fit_law import check_argmax_cut, check_fit_law, check_gains, check_residuals

# check name -> the graded function's cases and judge (what ``freezelab grade`` runs)
GRADERS: dict[str, Check] = {**cosine_lens.CHECKS, **fit_law.CHECKS, **budget_plan.CHECKS, **capstone.CHECKS}

__all__ = [
    "check_semantic_basis",
    "check_cosine_lens",
    "check_residuals",
    "check_fit_law",
    "check_gains",
    "check_argmax_cut",
    "check_benefit",
    "check_budget_cut",
    "check_defence",
    "check_rule",
    "check_preregistration",
    "budget_cases",
    "DEFENCE_BUDGET",
    "GRADERS",
    "REFERENCE",
    "SMOLLM2_BBC_TRACE",
    "reference_trace",
]
