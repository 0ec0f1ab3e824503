"""Assignment 2, the scaling law by hand (``02_fit_law.ipynb``).

    check_residuals(fn)           fn(p, l, d) -> dhat(l) - d, p = (E, A, alpha)
    check_fit_law(fn)             fn(d) -> (E, A, alpha) fitted over l = 1..L
    check_gains(fn)               fn(d, E, A, alpha) -> (observed, expected, excess), each (L,)
    check_argmax_cut(fn)          fn(excess) -> k* (1-based) = argmax_{2 <= l <= L-1} g_l, ties deeper
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from freezelab.classroom.checks.common import (SMOLLM2_BBC_TRACE, Case, Check, as_array, as_int, close, gains_of,
                                               law_values, quiet_fit, run, worst)

# ---- residuals -------------------------------------------------------------------------------------------


def _residual_cases(_rng: np.random.Generator) -> list[Case]:
    l = np.arange(1.0, 9.0)
    d = np.array([6.1, 4.2, 3.9, 3.1, 3.0, 2.6, 2.7, 2.3])
    return [Case(f"p = (E, A, alpha) = {p}", (np.array(p, dtype=float), l.copy(), d.copy()),
                 law_values(l, *p) - d) for p in ((1.5, 4.0, 0.7), (0.4, 6.0, 1.6))]


def _judge_residuals(case: Case, got: Any) -> str:
    (E, A, alpha), l, d = case.args
    ref = case.ref
    out = as_array(got, "the residuals")
    if out.shape != ref.shape:
        if out.size == 1:
            raise AssertionError(
                f"expected one residual per point, shape {ref.shape}, got a single number: "
                "scipy.optimize.least_squares squares and sums the residuals itself; return the vector "
                "dhat(l) - d, not its sum of squares")
        raise AssertionError(f"expected shape {ref.shape} (one residual per latent space l), got {out.shape}")
    if close(out, ref, 1e-8):
        return ""
    if close(out, -ref, 1e-8):
        return "flipped"
    candidates = [
        (ref**2, "you returned squared residuals: least_squares squares them itself; return dhat(l) - d"),
        (law_values(l, E, A, -alpha) - d, "wrong sign of the exponent: the law decays with depth, "
                                          "dhat(l) = E + A * l ** (-alpha), not l ** alpha"),
        (E - A * l ** (-alpha) - d, "wrong sign of A: dhat(l) = E + A * l ** (-alpha) (A >= 0 is the part "
                                    "of the deviation that depth removes)"),
        (A * l ** (-alpha) - d, "forgot E, the deviation left at infinite depth: dhat(l) = E + A * l ** (-alpha)"),
        (law_values(l, E, A, alpha), "forgot to subtract the data: return dhat(l) - d"),
        (E + A * np.exp(-alpha * l) - d, "that is an exponential decay; the law is a power law, "
                                         "A * l ** (-alpha)"),
        (law_values(l + 1, E, A, alpha) - d, "you shifted l by one: evaluate the law at l itself "
                                             "(the caller passes l = 1..L)"),
        (E + (A * l) ** (-alpha) - d, "parenthesis: A multiplies l ** (-alpha); (A * l) ** (-alpha) is "
                                      "a different curve"),
    ]
    for value, message in candidates:
        if close(out, value, 1e-8) or close(out, -value, 1e-8):
            raise AssertionError(message)
    raise AssertionError(f"with {case.label}: " + worst(out, ref, lambda i: f"l = {int(l[i[0]])}")
                         + "; expected E + A * l ** (-alpha) - d")


def _residuals_done(_cases: list[Case], notes: list[str]) -> str:
    note = (" (your sign is d - dhat: fine for least squares; freezelab uses dhat - d)" if "flipped" in notes
            else "")
    return f"residuals match E + A * l**(-alpha) - d at 8 points for 2 parameter sets{note}"


RESIDUALS = Check(function="residuals", hint="dhat = E + A * l ** (-alpha); return dhat - d (numpy arrays)",
                  cases=_residual_cases, judge=_judge_residuals, success=_residuals_done)


def check_residuals(residuals: Callable) -> None:
    """Grade ``residuals(p, l, d) -> dhat(l) - d`` with p = (E, A, alpha) and dhat(l) = E + A l^-alpha.

    Residuals of either sign pass (least squares squares them); freezelab uses model minus data.
    """
    run(RESIDUALS, residuals)


# ---- the fit ---------------------------------------------------------------------------------------------


def fit_cases(rng: np.random.Generator) -> list[Case]:
    """Two clean power laws, the reference trace and two hidden 3-block traces; ref: freezelab's fitted law."""
    fixed = np.random.default_rng(0)
    l12, l20 = np.arange(13.0), np.arange(21.0)
    clean = law_values(l12, 1.2, 5.0, 0.9) + fixed.normal(0, 0.02, 13)
    clean[0] = 11.0
    steep = law_values(l20, 2.0, 3.0, 2.0) + fixed.normal(0, 0.05, 21)
    steep[0] = 9.0
    traces = [("a clean power law (L = 12, E = 1.2, A = 5, alpha = 0.9)", clean),
              ("a steep power law (L = 20, E = 2, A = 3, alpha = 2)", steep),
              (f"the book's SmolLM2-135M / BBC News reference trace (L = {SMOLLM2_BBC_TRACE.size - 1}, noisy)",
               SMOLLM2_BBC_TRACE.copy()),
              *last_point_cases(rng)]
    return [Case(label, (d,), quiet_fit(d)) for label, d in traces]


def last_point_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Two hidden 3-block traces, each exactly on a law, equal but for d_L: only a fit that uses d_L gets both.

    Three points and three parameters: every correct fit (plain or robust) goes through all of them.
    """
    while True:
        alpha1, alpha2 = rng.uniform(0.3, 0.8), rng.uniform(1.8, 3.0)
        E1, A1 = rng.uniform(1.5, 3.0), rng.uniform(3.0, 8.0)
        d1, d2 = E1 + A1, E1 + A1 * 2.0 ** -alpha1
        A2 = (d1 - d2) / (1 - 2.0 ** -alpha2)  # the second law through the same d_1, d_2
        E2 = d1 - A2
        ends = E1 + A1 * 3.0 ** -alpha1, E2 + A2 * 3.0 ** -alpha2
        if E2 > 0.1 and abs(ends[0] - ends[1]) > 2.5 * max(0.15, 0.05 * (d1 - min(ends))):
            break
    d0 = d1 + rng.uniform(2.0, 6.0)
    return [(f"a hidden 3-block trace on the law ({name}: d = {np.round(d, 3).tolist()})", d)
            for name, d in (("first", np.array([d0, d1, d2, ends[0]])), ("second", np.array([d0, d1, d2, ends[1]])))]


def _judge_fit(case: Case, got: Any) -> str:
    (d,), law = case.args, case.ref
    L = d.size - 1
    l = np.arange(1, L + 1, dtype=float)
    params = as_array(got, "fit_law's result")
    if params.shape != (3,):
        raise AssertionError(f"fit_law should return the three numbers (E, A, alpha), got shape {params.shape}: "
                             "return result.x of least_squares (or a tuple E, A, alpha)")
    where = f"on {case.label}"
    if not np.isfinite(params).all():
        raise AssertionError(f"{where}: the fitted parameters are not finite: {params}")
    E, A, alpha = params
    ref = law(l)
    mine = law_values(l, E, A, alpha)
    tol = max(0.15, 0.05 * float(np.ptp(d[1:])))
    gap = float(np.abs(mine - ref).max())
    if gap <= tol and params.min() >= -1e-6:
        return f"{gap:.3f}"
    if params.min() < -1e-6:
        raise AssertionError(f"{where}: (E, A, alpha) = ({E:.3g}, {A:.3g}, {alpha:.3g}) has a negative "
                             "value; the law needs E, A, alpha >= 0: pass bounds=(0, np.inf) to least_squares")
    if mine[-1] > mine[0] + 1e-9:
        raise AssertionError(f"{where}: your curve grows with depth (dhat(1) = {mine[0]:.3g}, dhat(L) = "
                             f"{mine[-1]:.3g}); check the sign of the exponent: dhat(l) = E + A * l ** (-alpha)")
    # the embedding included (points (l + 1, d_l), l = 0..L) or d paired off by one (points (l, d_(l-1)))
    with_l0 = quiet_fit(d, include_embedding=True)(l - 1)
    shifted = quiet_fit(np.concatenate([[0.0], d[:-1]]))(l)
    if min(np.abs(mine - with_l0).max(), np.abs(mine - shifted).max()) < 0.5 * gap:
        raise AssertionError(f"{where}: your curve fits d_(l-1) at l: the embedding output d_0 slipped in as "
                             "latent space 1, or d is paired off by one. The default fits latent spaces "
                             "l = 1..L only: l = np.arange(1, L + 1) against d[1:] (d[l] is latent space l)")
    if np.abs(mine[:-1] - ref[:-1]).max() <= tol < abs(mine[-1] - ref[-1]):
        raise AssertionError(f"{where}: your curve is right up to l = {L - 1} but misses the last latent space "
                             f"(dhat({L}) = {mine[-1]:.3g}, d_{L} = {d[-1]:.3g}): fit l = 1..L against all of "
                             "d[1:], d_L included")
    if np.allclose(mine, mine.mean(), atol=1e-6):
        raise AssertionError(f"{where}: your curve is flat (A = {A:.3g}, alpha = {alpha:.3g}): either the optimiser "
                             "did not move (start from x0 = (min(d), d[1] - min(d), 1.0)) or the residuals have the "
                             "wrong sign of the exponent (l ** (-alpha)): test them with check_residuals")
    sse_mine, sse_ref = float(np.sum((mine - d[1:]) ** 2)), float(np.sum((ref - d[1:]) ** 2))
    hint = (" Your curve has the smaller squared error, but on a noisy trace plain least squares is pulled by "
            "outlying latent spaces: use loss='soft_l1' (freezelab's robust fit)" if sse_mine < sse_ref else
            " Your fit is worse than it could be: start least_squares from x0 = (min(d), d[1] - min(d), 1.0), "
            "try several alpha starts and keep the lowest cost")
    raise AssertionError(
        f"{where}: your fitted curve is up to {gap:.3g} nats from fit_scaling_law's (tolerance {tol:.3g}): "
        + worst(mine, ref, lambda i: f"l = {i[0] + 1}")
        + f". Yours: E = {E:.3g}, A = {A:.3g}, alpha = {alpha:.3g}; freezelab: E = {law.E:.3g}, "
        f"A = {law.A:.3g}, alpha = {law.alpha:.3g}." + hint)


FIT_LAW = Check(
    function="fit_law",
    hint="fit d[1:] against l = np.arange(1, L + 1) with scipy.optimize.least_squares(residuals, x0, args=(l, "
         "d[1:]), bounds=(0, np.inf)); a 'residuals are not finite' error means l = 0 slipped in, where "
         "l ** (-alpha) is infinite",
    cases=fit_cases, judge=_judge_fit,
    success=lambda cases, gaps: (f"fitted curves match freezelab.method.law.fit_scaling_law on {len(gaps)} traces, "
                                 f"hidden ones included (max gap {', '.join(gaps)} nats)"))


def check_fit_law(fit_law: Callable) -> None:
    """Grade ``fit_law(d) -> (E, A, alpha)`` against ``freezelab.method.law.fit_scaling_law(d)`` on five traces.

    d is d_0..d_L (L+1,); the fit runs over l = 1..L. Graded on the fitted CURVE dhat(1..L) (E and A
    trade off on noisy traces): within max(0.15 nats, 5% of the trace's range) of freezelab's robust fit.
    """
    run(FIT_LAW, fit_law)


# ---- gains -----------------------------------------------------------------------------------------------


def _gains_cases(rng: np.random.Generator) -> list[Case]:
    """A hidden trace: L, the law and the noise change with `rng`."""
    from freezelab.method.gains import layer_gains
    from freezelab.method.law import Law

    L = int(rng.integers(6, 25))
    E, A, alpha = rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0), rng.uniform(0.4, 1.5)
    d = law_values(np.arange(L + 1.0), E, A, alpha) + rng.normal(0, 0.3, L + 1)
    d[0] = E + A + rng.uniform(2.0, 5.0)
    ref = layer_gains(d, Law(E=E, A=A, alpha=alpha, offset=0.0, first_layer=1, r2=0.0))
    return [Case(f"a hidden {L}-block trace", (d, float(E), float(A), float(alpha)), ref)]


def _judge_gains(case: Case, got: Any) -> str:
    ref = case.ref
    L = ref.excess.size
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise AssertionError("gains should return a tuple of three arrays (observed, expected, excess), "
                             f"got {type(got).__name__}")
    names = ("observed", "expected", "excess")
    arrays = [as_array(x, name) for x, name in zip(got, names)]
    for name, out in zip(names, arrays):
        if out.shape != (L,):
            extra = (": one gain per BLOCK l = 1..L, i.e. L values (the L+1 latent spaces give L transitions)"
                     if out.shape == (L + 1,) else "")
            raise AssertionError(f"{name} should have shape (L,) = ({L},), got {out.shape}{extra}")
    obs, exp_, exc = arrays
    block = lambda i: f"block l = {i[0] + 1}"  # noqa: E731
    if not close(obs, ref.observed, 1e-8):
        if close(obs, -ref.observed, 1e-8):
            raise AssertionError("observed has the wrong sign: delta_l = d_(l-1) - d_l, so a drop in deviation is a "
                                 "positive gain (np.diff(d) is d_l - d_(l-1): negate it)")
        raise AssertionError("observed gains differ from d_(l-1) - d_l: " + worst(obs, ref.observed, block))
    if not close(exp_, ref.expected, 1e-8):
        if not np.isfinite(exp_[0]) and np.isfinite(exp_[1:]).all():
            raise AssertionError("expected gain of block 1 is infinite or NaN: dhat(0) = E + A * 0 ** (-alpha) is "
                                 "infinite; as layer_gains does, use the observed d_0 in place of dhat(0)")
        if close(exp_[1:], ref.expected[1:], 1e-8):
            raise AssertionError(f"expected gains are right for blocks 2..L but block 1 is {exp_[0]:.4g}, not "
                                 f"{ref.expected[0]:.4g}: use d_0 in place of dhat(0), so deltahat_1 = d_0 - dhat(1)")
        if close(exp_, -ref.expected, 1e-8) or close(exp_[1:], -ref.expected[1:], 1e-8):
            raise AssertionError("expected has the wrong sign: deltahat_l = dhat(l-1) - dhat(l) (positive: the law "
                                 "decreases with depth)")
        raise AssertionError("expected gains differ from dhat(l-1) - dhat(l): " + worst(exp_, ref.expected, block))
    if not close(exc, ref.excess, 1e-8):
        if close(exc, -ref.excess, 1e-8):
            raise AssertionError("excess has the wrong sign: g_l = delta_l - deltahat_l (observed minus expected)")
        raise AssertionError("excess gains differ from observed - expected: " + worst(exc, ref.excess, block))
    return ""


GAINS = Check(function="gains", hint="observed = d[:-1] - d[1:]; dhat = E + A * l ** (-alpha) for l = 1..L, with "
                                     "d[0] standing in for dhat(0)",
              cases=_gains_cases, judge=_judge_gains,
              success=lambda cases, _: ("observed, expected and excess gains match freezelab.method.gains.layer_gains "
                                        f"on {cases[0].label}"))


def check_gains(gains: Callable) -> None:
    """Grade ``gains(d, E, A, alpha) -> (observed, expected, excess)`` against ``freezelab.method.gains.layer_gains``.

    Each array has shape (L,), index l-1 for block l. As in layer_gains, dhat(0) (infinite) is replaced by d_0.
    """
    run(GAINS, gains)


# ---- the argmax cut --------------------------------------------------------------------------------------


def excess_cases() -> list[tuple[str, np.ndarray]]:
    """The reference trace's excess gains and three small fixed cases (a maximum at 1, at L, a tie)."""
    from freezelab.method.gains import layer_gains

    real = layer_gains(SMOLLM2_BBC_TRACE, quiet_fit(SMOLLM2_BBC_TRACE)).excess
    return [
        ("the SmolLM2/BBC gains", real),
        ("gains whose maximum is at block 1", np.array([2.0, 0.1, 0.5, -0.2, 0.3, -0.1, 0.0, 0.2])),
        ("gains whose maximum is at block L", np.array([0.1, 0.2, -0.3, 0.4, 0.0, -0.1, 0.1, 3.0])),
        ("gains with a tie (blocks 3 and 6)", np.array([0.0, 0.1, 0.7, -0.2, 0.3, 0.7, -0.4, 0.1])),
    ]


def hidden_excess_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Hidden gains of a random depth L: the maximum at block L-1, at block 2, and a tie inside 2..L-1."""
    L = int(rng.integers(6, 41))
    draw = lambda: np.round(rng.normal(0.0, 1.0, L), 2)  # noqa: E731
    last, second, tie = draw(), draw(), draw()
    last[L - 2] = last.max() + 0.5  # block L-1: the deepest block the rule may choose
    second[1] = second.max() + 0.5  # block 2: the shallowest
    i, j = sorted(rng.choice(np.arange(1, L - 1), size=2, replace=False))
    tie[[i, j]] = tie.max() + 0.5  # blocks i+1 and j+1 tie
    return [(f"hidden gains whose maximum is at block L-1 = {L - 1}", last),
            ("hidden gains whose maximum is at block 2", second),
            (f"hidden gains with a tie (blocks {i + 1} and {j + 1})", tie)]


def _argmax_cases(rng: np.random.Generator) -> list[Case]:
    from freezelab.method.plan import plan

    return [Case(label, (excess,), plan(gains_of(excess)).cut)
            for label, excess in excess_cases() + hidden_excess_cases(rng)]


def _judge_argmax(case: Case, got: Any) -> str:
    (excess,), ref = case.args, case.ref
    L = excess.size
    out = as_int(got, "argmax_cut's result")
    if out == ref:
        return ""
    where = f"on {case.label} (excess = {np.round(excess, 2).tolist()})"
    if ref == L - 1 and 2 <= out < ref and excess[out - 1] == excess[1:L - 2].max():
        raise AssertionError(f"{where}: expected block {ref}, got {out}: block L-1 = {L - 1} is in the range "
                             "2..L-1 too; its gain is excess[L - 2], so search excess[1:L - 1] (= excess[1:-1])")
    if out == ref - 1:
        raise AssertionError(f"{where}: expected block {ref}, got {out}: blocks are numbered from 1 "
                             "(excess[l - 1] is g_l): add 1 to the array index")
    overall = int(np.flatnonzero(excess == excess.max())[-1]) + 1
    if out in (overall, int(np.argmax(excess)) + 1) and overall not in range(2, L):
        raise AssertionError(f"{where}: expected block {ref}, got {out}: search only blocks 2..L-1 = 2..{L - 1} "
                             "(METHOD step 5: the cut freezes at least one block and trains at least one more "
                             "than the last)")
    if 1 <= out <= L and excess[out - 1] == excess[ref - 1]:
        raise AssertionError(f"{where}: expected block {ref}, got {out}: blocks {out} and {ref} tie; ties go "
                             "to the DEEPER block (np.argmax returns the first maximum: search the reversed "
                             "array, or use np.flatnonzero(x == x.max())[-1])")
    raise AssertionError(f"{where}: expected block {ref}, got {out}")


ARGMAX_CUT = Check(
    function="argmax_cut", hint="blocks are numbered 1..L and excess[l - 1] is g_l",
    cases=_argmax_cases, judge=_judge_argmax,
    success=lambda cases, _: (f"the argmax rule matches freezelab.method.plan.plan(rule='argmax-excess') on "
                              f"{len(cases)} cases (including ties, maxima at blocks 1 and L, and hidden ones at "
                              "blocks 2 and L-1)"))


def check_argmax_cut(argmax_cut: Callable) -> None:
    """Grade ``argmax_cut(excess) -> k*`` against ``freezelab.method.plan.plan(gains).cut`` (paper rule).

    k* = argmax_{2 <= l <= L-1} g_l with blocks numbered 1..L (excess[l-1] is g_l); ties go to the deeper block.
    """
    run(ARGMAX_CUT, argmax_cut)


CHECKS = {"check_residuals": RESIDUALS, "check_fit_law": FIT_LAW, "check_gains": GAINS,
          "check_argmax_cut": ARGMAX_CUT}
