"""Assignment 3, a plan under a budget (``03_budget_plan.ipynb``).

    check_benefit(fn)             fn(excess) -> benefit of every cut k = 0..L-1, (L,) nats
    check_budget_cut(fn)          fn(benefit, cost_ratio, budget) -> cut k
    check_defence(notebook)       the markdown cell tagged "defence" states the evidence asked for
                                  (freezelab.classroom.checks.defence)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from freezelab.classroom.checks.common import Case, Check, as_array, as_int, close, gains_of, hidden_rng, run, worst
from freezelab.classroom.checks.fit_law import excess_cases

# ---- the benefit curve -----------------------------------------------------------------------------------


def _benefit_cases(rng: np.random.Generator) -> list[Case]:
    from freezelab.method.plan import benefit_curve

    cases = [excess_cases()[0], ("a short synthetic case", np.array([0.3, -0.5, 0.2, -0.1, -0.8, 0.4, 0.0, -0.2])),
             ("hidden random gains", np.round(rng.normal(0.0, 1.0, int(rng.integers(6, 41))), 2))]
    return [Case(label, (excess,), np.array([c.benefit for c in benefit_curve(gains_of(excess))]))
            for label, excess in cases]


def _judge_benefit(case: Case, got: Any) -> str:
    (excess,), ref = case.args, case.ref
    L = excess.size
    out = as_array(got, "the benefit")
    if out.shape != (L,):
        extra = (": cuts are k = 0..L-1 (at least the last block is trained), so L values"
                 if out.shape == (L + 1,) else "")
        raise AssertionError(f"benefit should have shape (L,) = ({L},), got {out.shape}{extra}")
    if close(out, ref, 1e-8):
        return ""
    short = np.maximum(0.0, -excess)
    where = f"on {case.label}"
    candidates = [
        (np.cumsum((-excess)[::-1])[::-1], "you summed -g_l without clipping: only blocks that fall SHORT of "
                                           "the law (g_l < 0) count, max(0, -g_l)"),
        (np.cumsum(np.maximum(0.0, excess)[::-1])[::-1], "wrong sign: the shortfall is max(0, -g_l) (blocks that "
                                                         "do LESS than the law), not max(0, g_l)"),
        (np.cumsum(short), "you summed over the frozen blocks 1..k+1; the benefit of cut k sums over the "
                           "TRAINED blocks k+1..L (a reversed cumulative sum)"),
        (np.concatenate([[0.0], np.cumsum(short)[:-1]]), "you summed over the frozen blocks 1..k; the benefit "
                                                          "of cut k sums over the TRAINED blocks k+1..L"),
        (np.concatenate([ref[1:], [0.0]]), "off by one: cut k trains blocks k+1..L, i.e. shortfall[k:] with "
                                            "0-based arrays (you started one block too deep)"),
        (ref / ref[0] if ref[0] > 0 else ref, "you returned benefit_ratio (benefit / benefit of cut 0); "
                                              "return the benefit itself, in nats"),
    ]
    for value, message in candidates:
        if close(out, value, 1e-8):
            raise AssertionError(f"{where}: {message}")
    raise AssertionError(f"{where}: " + worst(out, ref, lambda i: f"cut k = {i[0]}"))


BENEFIT = Check(function="predicted_benefit",
                hint="shortfall = np.maximum(0, -excess); benefit[k] = shortfall[k:].sum()",
                cases=_benefit_cases, judge=_judge_benefit,
                success=lambda cases, _: ("predicted benefits match freezelab.method.plan.benefit_curve on "
                                          f"{len(cases)} cases (one hidden)"))


def check_benefit(predicted_benefit: Callable) -> None:
    """Grade ``predicted_benefit(excess) -> (L,)`` against ``freezelab.method.plan.benefit_curve``.

    benefit(k) = sum_{l = k+1..L} max(0, -g_l) nats for the cut k = 0..L-1 (blocks 1..k frozen).
    """
    run(BENEFIT, predicted_benefit)


# ---- the budget cut --------------------------------------------------------------------------------------


def budget_cases(rng: np.random.Generator | None = None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray,
                                                                        float]]:
    """The cases ``check_budget_cut`` grades on: (label, excess, cost ratio, cached cost ratio, budget)."""
    from freezelab.method.plan import default_cost_curve

    rng = hidden_rng() if rng is None else rng
    real = excess_cases()[0][1]
    ratio, cached = default_cost_curve(real.size)
    tie = np.array([-0.4, -0.2, 0.3, 0.5, -0.3, 0.2, 0.1, -0.1])
    r8, c8 = default_cost_curve(tie.size)
    hidden = np.round(rng.normal(0.0, 1.0, int(rng.integers(6, 41))), 2)
    rh, ch = default_cost_curve(hidden.size)
    k = int(rng.integers(1, hidden.size))
    return [
        ("the SmolLM2/BBC gains at budget 0.5", real, ratio, cached, 0.5),
        ("the SmolLM2/BBC gains at budget 0.75", real, ratio, cached, 0.75),
        ("an 8-block case whose best cuts tie", tie, r8, c8, 0.8),
        ("a budget equal to the cost of cut 23", real, ratio, cached, float(ratio[23])),
        ("the cached costs (L - k) / L at budget 0.5", real, cached, cached, 0.5),
        ("hidden random gains", hidden, rh, ch, float(rng.uniform(max(0.4, rh.min()), 0.95))),  # some cut fits
        ("hidden random gains at a budget equal to a cut's cost", hidden, rh, ch, float(rh[k])),
    ]


def _budget_cut_cases(rng: np.random.Generator) -> list[Case]:
    from freezelab.method.plan import benefit_curve, plan

    cases = []
    for label, excess, ratio, cached, budget in budget_cases(rng):
        gains = gains_of(excess)
        benefit = np.array([c.benefit for c in benefit_curve(gains)])
        cut = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached)).cut
        cases.append(Case(label, (benefit, ratio.copy(), budget), cut))
    return cases


def _judge_budget_cut(case: Case, got: Any) -> str:
    (benefit, ratio, budget), ref = case.args, case.ref
    L = benefit.size
    out = as_int(got, "budget_cut's result")
    if out == ref:
        return ""
    where = f"on {case.label}: expected cut {ref}, got {out}"
    if not 0 <= out < L:
        raise AssertionError(f"{where}: a cut is k = 0..L-1 = 0..{L - 1}, the number of frozen blocks "
                             "(the index into benefit and cost_ratio)")
    if ratio[out] > budget + 1e-12:
        if out == 0 or benefit[out] == benefit.max():
            raise AssertionError(f"{where}: your plan ignores the budget: cut {out} costs {ratio[out]:.3f} of "
                                 f"full fine-tuning, more than the budget {budget:.3g}; keep only the cuts with "
                                 "cost_ratio <= budget")
        raise AssertionError(f"{where}: cut {out} costs {ratio[out]:.3f}, more than the budget {budget:.3g}")
    if out > ref and abs(ratio[ref] - budget) <= 1e-12:
        raise AssertionError(f"{where}: cut {ref} costs exactly the budget ({budget:.6g}), so it fits: use "
                             "cost_ratio <= budget, not <")
    if benefit[out] < benefit[ref]:
        raise AssertionError(f"{where}: cut {out} fits the budget (cost {ratio[out]:.3f}) but cut {ref} fits "
                             f"too (cost {ratio[ref]:.3f}) and predicts more benefit ({benefit[ref]:.3f} vs "
                             f"{benefit[out]:.3f} nats): choose the best predicted benefit among the cuts that "
                             "fit, not the cheapest")
    if benefit[out] == benefit[ref] and out < ref:
        raise AssertionError(f"{where}: cuts {out} and {ref} tie on benefit ({benefit[ref]:.3f} nats): ties go "
                             "to the DEEPER cut, which costs less for the same predicted benefit")
    raise AssertionError(where)


BUDGET_CUT = Check(
    function="budget_cut", hint="fits = cost_ratio <= budget; among those cuts pick the highest benefit",
    cases=_budget_cut_cases, judge=_judge_budget_cut,
    success=lambda cases, _: (f"budget cuts match freezelab.method.plan.plan(rule='budget') on {len(cases)} cases "
                              "(including a tie, budgets equal to a cut's cost and two hidden cases)"))


def check_budget_cut(budget_cut: Callable) -> None:
    """Grade ``budget_cut(benefit, cost_ratio, budget) -> k`` against ``plan(gains, rule="budget", ...)``.

    Among the cuts k = 0..L-1 whose cost_ratio[k] <= budget, the one with the highest benefit[k];
    ties go to the deeper (cheaper) cut. benefit and cost_ratio are (L,) numpy arrays.
    """
    run(BUDGET_CUT, budget_cut)


CHECKS = {"check_benefit": BENEFIT, "check_budget_cut": BUDGET_CUT}
