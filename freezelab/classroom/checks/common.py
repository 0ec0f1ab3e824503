"""What every grader shares: the reference trace, a graded check as cases plus a judge, and the helpers
that call a student's function, read its result and say where it is wrong.

A `Check` is data: ``cases(rng)`` draws the inputs (fixed ones and hidden ones from `rng`), ``judge(case,
out)`` compares one returned value with freezelab's reference (returns a note, or raises AssertionError
with feedback). The same check runs two ways: in a student's notebook (`run`: the function is called
here, the first failing case raises) and in ``freezelab grade`` (the function is called in a separate
process, `freezelab.classroom.sandbox`, and only the returned values come back to be judged).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The book's canonical reference trace (written by book/reference/make_reference.py; the method page, the
# chapters and the assignments quote it): SmolLM2-135M on BBC News at the notebooks' full scale,
# label-restricted logit lens.
REFERENCE = Path(__file__).resolve().parents[2] / "smollm2_bbc.json"
PLACEHOLDER = "YOUR ANSWER HERE"
_PACKAGE = str(Path(__file__).resolve().parents[2]) + os.sep  # freezelab/: the reference implementation


def reference_trace() -> dict:
    """The reference run: its deviation d_0..d_L (nats), the law's fit, the chosen cut, its scale."""
    return json.loads(REFERENCE.read_text())


SMOLLM2_BBC_TRACE = np.array(reference_trace()["deviation"])  # d_0..d_L of the reference trace, nats


@dataclass(frozen=True)
class Case:
    """One input of a graded function: `args` go to the student's function, `ref` stays with the judge."""

    label: str
    args: tuple
    ref: Any = None


@dataclass(frozen=True)
class Check:
    """A graded exercise: the student's function, its cases, how one result is judged, the success message."""

    function: str  # the name the notebook defines
    hint: str  # shown when the function raises
    cases: Callable[[np.random.Generator], list[Case]]
    judge: Callable[[Case, Any], str]  # a note on success; AssertionError (the feedback) on failure
    success: Callable[[list[Case], list[str]], str]
    banned: tuple[str, ...] = ()  # functions the exercise rules out


def run(check: Check, fn: Callable, rng: np.random.Generator | None = None) -> None:
    """Grade `fn` here and now (a student's notebook): every case in order, the first failure raises."""
    cases = check.cases(hidden_rng() if rng is None else rng)
    notes = [check.judge(case, call(fn, check.hint, *copy.deepcopy(case.args), banned=check.banned))
             for case in cases]
    ok(check.success(cases, notes))


def ok(message: str) -> None:
    print(f"\u2714 {message}")


def hidden_rng() -> np.random.Generator:
    """A fresh generator for the hidden cases: new values on every run, so no answer can be hard-coded."""
    return np.random.default_rng()


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "your function")


def _origin(obj: Any) -> str | None:
    """'freezelab.x.y' when `obj` is a freezelab module, function or class (the reference implementation)."""
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    elif callable(obj):
        name = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', type(obj).__name__)}"
    else:
        return None
    return name if name.split(".")[0] == "freezelab" else None


def _code_names(code: types.CodeType):
    """The global and attribute names a code object uses, nested functions and lambdas included."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _borrowed(fn: Callable, banned: tuple[str, ...], seen: set | None = None) -> str | None:
    """What in `fn`'s code (or in the notebook's own helpers it calls) is freezelab's or a banned name."""
    code = getattr(fn, "__code__", None)
    seen = set() if seen is None else seen
    if code is None or code in seen:
        return None
    seen.add(code)
    scope = {**getattr(fn, "__globals__", {}),
             **{name: cell.cell_contents for name, cell in zip(code.co_freevars, fn.__closure__ or ())
                if name != "__class__"}}
    for name in _code_names(code):
        obj = scope.get(name)
        own = isinstance(obj, types.FunctionType) and obj.__module__ == fn.__module__  # a helper of the notebook
        if name in banned and not own:
            return name
        if _origin(obj):
            return _origin(obj)
        found = own and _borrowed(obj, banned, seen)
        if found:
            return found
    return None


def call(fn: Callable, hint: str, *args: Any, banned: tuple[str, ...] = ()) -> Any:
    """fn(*args), refused if fn uses freezelab's own implementation or a `banned` function (read from its code,
    and watched while it runs); NotImplementedError stays one (with a note), other errors become a hinted
    AssertionError."""
    if not callable(fn):
        raise AssertionError(f"expected a function, got {type(fn).__name__}: pass the function itself, "
                             "without calling it (check(my_function), not check(my_function(...)))")
    refuse = ("{name} uses {what}: the assignment is to write it yourself from numpy, torch and scipy; "
              "freezelab's own implementation is what your code is graded against" + ("" if not banned else
              " (and this exercise rules out " + " / ".join(banned) + ": use dot products and norms)"))
    found = _borrowed(fn, banned)
    if found:
        raise AssertionError(refuse.format(name=_name(fn), what=found))
    calls: list[str] = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(_PACKAGE):
            calls.append(f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}")
        elif event == "c_call" and getattr(arg, "__name__", None) in banned:
            calls.append(arg.__name__)

    previous, failure = sys.getprofile(), None
    sys.setprofile(watch)
    try:
        out = fn(*args)
    except NotImplementedError:
        raise NotImplementedError(
            f"{_name(fn)} is not implemented yet: replace `raise NotImplementedError` under "
            "`# YOUR CODE HERE` with your code, run that cell, then run this check again"
        ) from None
    except Exception as err:  # noqa: BLE001 - a student's bug of any kind becomes a graded failure
        failure = err
    finally:
        sys.setprofile(previous)
    if calls:
        raise AssertionError(refuse.format(name=_name(fn), what=calls[0]))
    if failure is not None:
        raise AssertionError(f"{_name(fn)} raised {type(failure).__name__}: {failure}\nHint: {hint}") from failure
    return out


def as_array(x: Any, what: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array, list or number."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    try:
        out = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise AssertionError(f"{what} should be an array (numpy or torch), got {type(x).__name__}") from None
    return out


def as_int(x: Any, what: str) -> int:
    """A whole number from an int, a numpy integer or a one-element array or tensor."""
    size = x.numel() if hasattr(x, "numel") else getattr(x, "size", None)
    if size == 1 and hasattr(x, "item"):
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer, float, np.floating)):
        raise AssertionError(f"{what} should be one whole number, got {type(x).__name__}: {x!r}")
    if not np.isfinite(x) or float(x) != int(x):
        raise AssertionError(f"{what} should be a whole number, got {x!r}")
    return int(x)


def close(a: np.ndarray, b: np.ndarray, atol: float, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=False))


def worst(out: np.ndarray, ref: np.ndarray, labels: Callable[[tuple], str]) -> str:
    """Where `out` is furthest from `ref` (finite entries compared; non-finite ones reported first)."""
    bad = ~np.isfinite(out)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{bad.sum()} value(s) are NaN or infinite, e.g. at {labels(idx)} (expected {ref[idx]:.4g})"
    gap = np.abs(out - ref)
    idx = tuple(int(i) for i in np.unravel_index(np.argmax(gap), gap.shape))
    return (f"the largest error is at {labels(idx)}: expected {ref[idx]:.6g}, got {out[idx]:.6g} "
            f"(max |error| {gap.max():.3g}, mean |error| {gap.mean():.3g})")


def constant_gap(out: np.ndarray, ref: np.ndarray, atol: float) -> float | None:
    """c when out = ref + c for a constant c != 0, else None."""
    diff = out - ref
    if np.isfinite(diff).all() and np.ptp(diff) < atol and abs(diff.mean()) > atol:
        return float(diff.mean())
    return None


def constant_factor(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> float | None:
    """c when out = c * ref for a constant c != 1, else None."""
    mask = np.abs(ref) > 1e-6
    if not mask.any() or not np.isfinite(out).all():
        return None
    ratio = out[mask] / ref[mask]
    if np.ptp(ratio) < rtol * max(1.0, abs(ratio.mean())) and abs(ratio.mean() - 1) > rtol:
        return float(ratio.mean())
    return None


def law_values(l, E, A, alpha) -> np.ndarray:
    """dhat(l) = E + A l^-alpha (inf at l = 0), float64."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return E + A * np.asarray(l, dtype=float) ** (-alpha)


def quiet_fit(d, **kw):
    """freezelab's law fit without its low-R^2 warnings (the reference trace is noisy)."""
    from freezelab.method.law import fit_scaling_law

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_scaling_law(d, **kw)


def gains_of(excess: np.ndarray):
    """A Gains whose excess is `excess` (observed = excess, expected = 0): what the plan rules read."""
    from freezelab.method.gains import Gains

    return Gains(observed=excess.copy(), expected=np.zeros_like(excess), excess=excess.copy())
