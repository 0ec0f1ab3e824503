"""Graders for the classroom assignments (``notebooks/assignments/``).

Each ``check_*`` function calls the student's function on small, fixed, deterministic inputs,
compares the result with freezelab's own implementation and either prints a short success
message or raises ``AssertionError`` whose message says what is wrong (wrong shape, wrong sign,
off by a constant, a forgotten norm, ...) and how to fix it. A student function that still raises
``NotImplementedError`` makes the check raise ``NotImplementedError`` too.

Assignment 1, the cosine lens (``01_cosine_lens.ipynb``):
    check_semantic_basis(fn)      fn(W, y) -> s_y, (n, d): columns y of pinv(W), one row per target
    check_cosine_lens(fn)         fn(hn, s_y) -> (n, L+1): 1 - cos(N(h_l), s_y)
Assignment 2, the scaling law by hand (``02_fit_law.ipynb``):
    check_residuals(fn)           fn(p, l, d) -> dhat(l) - d, p = (E, A, alpha)
    check_fit_law(fn)             fn(d) -> (E, A, alpha) fitted over l = 1..L
    check_gains(fn)               fn(d, E, A, alpha) -> (observed, expected, excess), each (L,)
    check_argmax_cut(fn)          fn(excess) -> k* (1-based) = argmax_{2 <= l <= L-1} g_l, ties deeper
Assignment 3, a plan under a budget (``03_budget_plan.ipynb``):
    check_benefit(fn)             fn(excess) -> benefit of every cut k = 0..L-1, (L,) nats
    check_budget_cut(fn)          fn(benefit, cost_ratio, budget) -> cut k
    check_defence(notebook)       the markdown cell tagged "defence" states the evidence asked for
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
    "SMOLLM2_BBC_TRACE",
    "reference_trace",
]

# The book's canonical reference trace (written by book/reference/make_reference.py; the method page, the
# chapters and the assignments quote it): SmolLM2-135M on BBC News at the notebooks' full scale,
# label-restricted logit lens.
REFERENCE = Path(__file__).resolve().parents[1] / "smollm2_bbc.json"


def reference_trace() -> dict:
    """The reference run: its deviation d_0..d_L (nats), the law's fit, the chosen cut, its scale."""
    return json.loads(REFERENCE.read_text())


SMOLLM2_BBC_TRACE = np.array(reference_trace()["deviation"])  # d_0..d_L of the reference trace, nats

PLACEHOLDER = "YOUR ANSWER HERE"
# Assignment 1 asks for the cosine from dot products and norms: these (torch.nn.functional.cosine_similarity,
# torch.cosine_similarity, torch.nn.CosineSimilarity) are refused.
COSINE_BANNED = ("cosine_similarity", "CosineSimilarity")
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # freezelab/: the reference implementation


# ---- shared helpers ---------------------------------------------------------------------------------


def _ok(message: str) -> None:
    print(f"\u2714 {message}")


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


def _call(fn: Callable, hint: str, *args: Any, banned: tuple[str, ...] = ()) -> Any:
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


def _array(x: Any, what: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array, list or number."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    try:
        out = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise AssertionError(f"{what} should be an array (numpy or torch), got {type(x).__name__}") from None
    return out


def _close(a: np.ndarray, b: np.ndarray, atol: float, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=False))


def _worst(out: np.ndarray, ref: np.ndarray, labels: Callable[[tuple], str]) -> str:
    """Where `out` is furthest from `ref` (finite entries compared; non-finite ones reported first)."""
    bad = ~np.isfinite(out)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{bad.sum()} value(s) are NaN or infinite, e.g. at {labels(idx)} (expected {ref[idx]:.4g})"
    gap = np.abs(out - ref)
    idx = tuple(int(i) for i in np.unravel_index(np.argmax(gap), gap.shape))
    return (f"the largest error is at {labels(idx)}: expected {ref[idx]:.6g}, got {out[idx]:.6g} "
            f"(max |error| {gap.max():.3g}, mean |error| {gap.mean():.3g})")


def _constant_gap(out: np.ndarray, ref: np.ndarray, atol: float) -> float | None:
    """c when out = ref + c for a constant c != 0, else None."""
    diff = out - ref
    if np.isfinite(diff).all() and np.ptp(diff) < atol and abs(diff.mean()) > atol:
        return float(diff.mean())
    return None


def _constant_factor(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> float | None:
    """c when out = c * ref for a constant c != 1, else None."""
    mask = np.abs(ref) > 1e-6
    if not mask.any() or not np.isfinite(out).all():
        return None
    ratio = out[mask] / ref[mask]
    if np.ptp(ratio) < rtol * max(1.0, abs(ratio.mean())) and abs(ratio.mean() - 1) > rtol:
        return float(ratio.mean())
    return None


def _hidden_rng() -> np.random.Generator:
    """A fresh generator for the hidden cases: new values on every run, so no answer can be hard-coded."""
    return np.random.default_rng()


def _as_int(x: Any, what: str) -> int:
    """A whole number from an int, a numpy integer or a one-element array or tensor."""
    size = x.numel() if hasattr(x, "numel") else getattr(x, "size", None)
    if size == 1 and hasattr(x, "item"):
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer, float, np.floating)):
        raise AssertionError(f"{what} should be one whole number, got {type(x).__name__}: {x!r}")
    if not np.isfinite(x) or float(x) != int(x):
        raise AssertionError(f"{what} should be a whole number, got {x!r}")
    return int(x)


# ---- assignment 1: the cosine lens ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cosine_case():
    """A tiny random Llama-style model (3 blocks, d = 16, V = 48) and a fixed trace of 5 examples.

    The final norm's weight is random (so |N(h)| differs between vectors) and the states turn
    towards N^-1(s_y) with depth, so the reference deviation falls from about 1 towards 0.
    Returns (W, y, hn, s_y, reference deviation (n, L+1)); tensors are float32.
    """
    import torch

    from freezelab.method.basis import semantic_basis
    from freezelab.method.lens import deviation, normed
    from freezelab.model.models import load_model
    from freezelab.method.trace import Trace

    with torch.random.fork_rng():  # random_model seeds torch's global generator: keep the student's state
        lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", hidden_size=16, intermediate_size=32,
                        num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, vocab_size=48,
                        max_position_embeddings=64)
    g = torch.Generator().manual_seed(0)
    n, layers, d = 5, lm.num_layers + 1, lm.hidden_size
    with torch.no_grad():
        lm.final_norm.weight.copy_(0.5 + 2 * torch.rand(d, generator=g))
    targets = torch.tensor([3, 17, 17, 42, 8])
    s = semantic_basis(lm)[:, targets].T  # (n, d)
    towards = s / lm.final_norm.weight.detach()  # N(towards) points along s_y
    towards = towards / towards.norm(dim=-1, keepdim=True)
    noise = torch.randn(n, layers, d, generator=g)
    noise = noise / noise.norm(dim=-1, keepdim=True)
    t = torch.linspace(0.0, 0.9, layers)[None, :, None]
    scale = 0.5 + 3 * torch.rand(n, layers, 1, generator=g)
    hidden = scale * ((1 - t) * noise + t * towards[:, None, :])
    trace = Trace(hidden.float(), targets, None, None, 0.0)
    ref = deviation(trace, lm, lens="cosine").per_example
    W = lm.lm_head.weight.detach().clone()
    return W, targets, normed(lm, trace), s.clone(), ref


def check_semantic_basis(semantic_basis_columns: Callable) -> None:
    """Grade ``semantic_basis_columns(W, y) -> s_y`` against column y of ``freezelab.method.basis.semantic_basis``.

    W: (V, d) float32 tensor (the LM head), y: (n,) int64 tensor of token ids; s_y: (n, d), row i = s_{y_i}.
    """
    W, y, _, s_ref, _ = _cosine_case()
    V, d = W.shape
    n = y.shape[0]
    out = _array(_call(semantic_basis_columns, "pinv(W) has shape (d, V): take its columns y and transpose "
                       "them to (n, d), e.g. torch.linalg.pinv(W)[:, y].T", W.clone(), y.clone()),
                 "s_y")
    ref = s_ref.double().numpy()
    Wn = W.double().numpy()
    shape = f"expected shape (n, d) = ({n}, {d}): one semantic basis vector per target"
    if out.shape != ref.shape:
        if out.shape == (d, n):
            raise AssertionError(f"{shape}, got {out.shape}: transposed. pinv(W)[:, y] is (d, n); return its .T")
        if out.shape in ((d, V), (V, d)):
            raise AssertionError(f"{shape}, got {out.shape}: that is the whole pseudo-inverse; keep only the "
                                 "columns of the targets y (one per example)")
        if out.shape == (n, V):
            raise AssertionError(f"{shape}, got {out.shape}: you indexed rows of pinv(W) (or took logits); "
                                 "s_v is COLUMN v of pinv(W), which is (d, V)")
        raise AssertionError(f"{shape}, got {out.shape}")
    if _close(out, ref, atol=1e-4 * np.abs(ref).max()):
        _ok(f"semantic bases match freezelab.method.basis.semantic_basis on {n} targets (V = {V}, d = {d})")
        return
    if _close(out, Wn[y.numpy()], atol=1e-6):
        raise AssertionError("these are the rows W[y] of the LM head (the unembedding vectors), not the semantic "
                             "bases: s_v is column v of the pseudo-inverse pinv(W) (d x V)")
    unit = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    if _close(out / np.linalg.norm(out, axis=-1, keepdims=True), unit, atol=1e-4):
        raise AssertionError("your vectors point the right way but have the wrong length: do not normalise "
                             "s_y; the columns of pinv(W) are used as they are")
    if _close(out, ref[::-1], atol=1e-4 * np.abs(ref).max()):
        raise AssertionError("right vectors, wrong order: row i must be the basis of target y[i]")
    raise AssertionError("s_y differs from column y of pinv(W): "
                         + _worst(out, ref, lambda i: f"target {i[0]} (token {int(y[i[0]])}), coordinate {i[1]}")
                         + ". Use torch.linalg.pinv(W) (not W.T, not an inverse of W: W is not square)")


def check_cosine_lens(cosine_lens: Callable) -> None:
    """Grade ``cosine_lens(hn, s_y) -> (n, L+1)`` against ``freezelab.method.lens(..., lens="cosine")``.

    hn: (n, L+1, d) float32 tensor of normed states N(h_l); s_y: (n, d) semantic bases of the targets.
    The fixed input has n = 5 examples, L + 1 = 4 latent spaces and d = 16.
    """
    _, _, hn, s, ref = _cosine_case()
    n, layers, d = hn.shape
    out = _array(_call(cosine_lens, "broadcast s_y over the latent spaces with s_y[:, None, :] (shape (n, 1, d)) "
                       "and reduce over the last axis", hn.clone(), s.clone(), banned=COSINE_BANNED), "the deviation")
    shape = f"expected shape (n, L+1) = ({n}, {layers}): one deviation per example and latent space"
    if out.shape != ref.shape:
        if out.shape == (layers, n):
            raise AssertionError(f"{shape}, got {out.shape}: transposed; rows are examples, columns latent spaces")
        if out.shape == (n, layers, d):
            raise AssertionError(f"{shape}, got {out.shape}: you kept the hidden dimension d = {d}; sum the "
                                 "elementwise product over the last axis (dim=-1) to get the dot product")
        if out.shape == (n, layers, 1):
            raise AssertionError(f"{shape}, got {out.shape}: drop the trailing axis (keepdim=False, or .squeeze(-1))")
        if out.shape in ((n,), (layers,), ()):
            raise AssertionError(f"{shape}, got {out.shape}: you averaged or summed over examples or latent "
                                 "spaces; return every (example, latent space) value")
        raise AssertionError(f"{shape}, got {out.shape}")
    if _close(out, ref, atol=1e-4):
        _ok(f"cosine lens matches freezelab.method.lens(lens='cosine') on {n} examples x {layers} latent spaces "
            f"(max |error| {np.abs(out - ref).max():.1e})")
        return
    h = hn.double().numpy()
    sv = s.double().numpy()[:, None, :]
    dot = (h * sv).sum(-1)
    nh, ns = np.linalg.norm(h, axis=-1), np.linalg.norm(sv, axis=-1)
    cos = dot / (nh * ns)
    candidates = [
        (cos, "you returned the cosine similarity itself; the deviation is 1 - cos(N(h_l), s_y) "
              "(0 when the state points along s_y, up to 2 when it points away)"),
        (-cos, "off by the constant 1: you returned -cos; the deviation is 1 - cos"),
        (1 + cos, "wrong sign: you returned 1 + cos; the deviation is 1 - cos, which must shrink as N(h_l) "
                  "turns towards s_y"),
        (1 - dot, "forgot the norms: 1 - <N(h_l), s_y> uses the raw dot product; divide it by "
                  "|N(h_l)| * |s_y| to get the cosine"),
        (1 - dot / nh, "forgot the norm of s_y: divide the dot product by |s_y| as well as by |N(h_l)|"),
        (1 - dot / ns, "forgot the norm of N(h_l): divide the dot product by |N(h_l)| as well as by |s_y|"),
        (1 - dot / (nh**2 * ns**2), "you divided by the squared norms: take the square root of the sums of "
                                    "squares (torch.linalg.norm, or .norm(dim=-1))"),
        (1 - dot / nh**2, "you divided by |N(h_l)|^2: the cosine divides by |N(h_l)| * |s_y|"),
        (1 - dot / ns**2, "you divided by |s_y|^2: the cosine divides by |N(h_l)| * |s_y|"),
    ]
    for value, message in candidates:
        if _close(out, value, atol=1e-4):
            raise AssertionError(message)
    first = 1 - (h * sv[:1]).sum(-1) / (nh * ns[:1])
    if _close(out, first, atol=1e-4):
        raise AssertionError("every example was compared with the basis of the first target: pair example i "
                             "with s_y[i] (broadcast s_y[:, None, :])")
    c = _constant_gap(out, ref, 1e-4)
    if c is not None:
        raise AssertionError(f"off by a constant: your deviation is freezelab's {c:+.4g} everywhere")
    f = _constant_factor(out, ref)
    if f is not None:
        raise AssertionError(f"off by a factor: your deviation is {f:.4g} x freezelab's everywhere")
    raise AssertionError(
        "the deviation differs from 1 - cos(N(h_l), s_y): "
        + _worst(out, ref, lambda i: f"example {i[0]}, latent space l = {i[1]}")
        + ". Test it by hand: cosine_lens(s_y[:, None, :], s_y) must be all zeros")


# ---- assignment 2: the scaling law by hand --------------------------------------------------------------


def _law_values(l, E, A, alpha) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return E + A * np.asarray(l, dtype=float) ** (-alpha)


def check_residuals(residuals: Callable) -> None:
    """Grade ``residuals(p, l, d) -> dhat(l) - d`` with p = (E, A, alpha) and dhat(l) = E + A l^-alpha.

    Residuals of either sign pass (least squares squares them); freezelab uses model minus data.
    """
    l = np.arange(1.0, 9.0)
    d = np.array([6.1, 4.2, 3.9, 3.1, 3.0, 2.6, 2.7, 2.3])
    flipped = False
    for p in ((1.5, 4.0, 0.7), (0.4, 6.0, 1.6)):
        E, A, alpha = p
        out = _array(_call(residuals, "dhat = E + A * l ** (-alpha); return dhat - d (numpy arrays)",
                           np.array(p, dtype=float), l.copy(), d.copy()), "the residuals")
        ref = _law_values(l, E, A, alpha) - d
        if out.shape != ref.shape:
            if out.size == 1:
                raise AssertionError(
                    f"expected one residual per point, shape {ref.shape}, got a single number: "
                    "scipy.optimize.least_squares squares and sums the residuals itself; return the vector "
                    "dhat(l) - d, not its sum of squares")
            raise AssertionError(f"expected shape {ref.shape} (one residual per latent space l), got {out.shape}")
        if _close(out, ref, 1e-8):
            continue
        if _close(out, -ref, 1e-8):
            flipped = True
            continue
        candidates = [
            (ref**2, "you returned squared residuals: least_squares squares them itself; return dhat(l) - d"),
            (_law_values(l, E, A, -alpha) - d, "wrong sign of the exponent: the law decays with depth, "
                                               "dhat(l) = E + A * l ** (-alpha), not l ** alpha"),
            (E - A * l ** (-alpha) - d, "wrong sign of A: dhat(l) = E + A * l ** (-alpha) (A >= 0 is the part "
                                       "of the deviation that depth removes)"),
            (A * l ** (-alpha) - d, "forgot E, the deviation left at infinite depth: dhat(l) = E + A * l ** (-alpha)"),
            (_law_values(l, E, A, alpha), "forgot to subtract the data: return dhat(l) - d"),
            (E + A * np.exp(-alpha * l) - d, "that is an exponential decay; the law is a power law, "
                                             "A * l ** (-alpha)"),
            (_law_values(l + 1, E, A, alpha) - d, "you shifted l by one: evaluate the law at l itself "
                                                  "(the caller passes l = 1..L)"),
            (E + (A * l) ** (-alpha) - d, "parenthesis: A multiplies l ** (-alpha); (A * l) ** (-alpha) is "
                                          "a different curve"),
        ]
        for value, message in candidates:
            if _close(out, value, 1e-8) or _close(out, -value, 1e-8):
                raise AssertionError(message)
        raise AssertionError(f"with p = (E, A, alpha) = {p}: "
                             + _worst(out, ref, lambda i: f"l = {int(l[i[0]])}")
                             + "; expected E + A * l ** (-alpha) - d")
    note = " (your sign is d - dhat: fine for least squares; freezelab uses dhat - d)" if flipped else ""
    _ok(f"residuals match E + A * l**(-alpha) - d at 8 points for 2 parameter sets{note}")


def _fit_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    l12, l20 = np.arange(13.0), np.arange(21.0)
    clean = _law_values(l12, 1.2, 5.0, 0.9) + rng.normal(0, 0.02, 13)
    clean[0] = 11.0
    steep = _law_values(l20, 2.0, 3.0, 2.0) + rng.normal(0, 0.05, 21)
    steep[0] = 9.0
    return [("a clean power law (L = 12, E = 1.2, A = 5, alpha = 0.9)", clean),
            ("a steep power law (L = 20, E = 2, A = 3, alpha = 2)", steep),
            (f"the book's SmolLM2-135M / BBC News reference trace (L = {SMOLLM2_BBC_TRACE.size - 1}, noisy)",
             SMOLLM2_BBC_TRACE.copy()),
            *_last_point_cases(_hidden_rng())]


def _last_point_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
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


def _quiet_fit(d, **kw):
    from freezelab.method.law import fit_scaling_law

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_scaling_law(d, **kw)


def check_fit_law(fit_law: Callable) -> None:
    """Grade ``fit_law(d) -> (E, A, alpha)`` against ``freezelab.method.law.fit_scaling_law(d)`` on three traces.

    d is d_0..d_L (L+1,); the fit runs over l = 1..L. Graded on the fitted CURVE dhat(1..L) (E and A
    trade off on noisy traces): within max(0.15 nats, 5% of the trace's range) of freezelab's robust fit.
    """
    gaps = []
    for label, d in _fit_cases():
        L = d.size - 1
        l = np.arange(1, L + 1, dtype=float)
        got = _call(fit_law, "fit d[1:] against l = np.arange(1, L + 1) with scipy.optimize.least_squares"
                    "(residuals, x0, args=(l, d[1:]), bounds=(0, np.inf)); a 'residuals are not finite' error "
                    "means l = 0 slipped in, where l ** (-alpha) is infinite", d.copy())
        params = _array(got, "fit_law's result")
        if params.shape != (3,):
            raise AssertionError(f"fit_law should return the three numbers (E, A, alpha), got shape {params.shape}: "
                                 "return result.x of least_squares (or a tuple E, A, alpha)")
        if not np.isfinite(params).all():
            raise AssertionError(f"on {label}: the fitted parameters are not finite: {params}")
        E, A, alpha = params
        law = _quiet_fit(d)
        ref = law(l)
        mine = _law_values(l, E, A, alpha)
        tol = max(0.15, 0.05 * float(np.ptp(d[1:])))
        gap = float(np.abs(mine - ref).max())
        if gap <= tol and params.min() >= -1e-6:
            gaps.append(gap)
            continue
        where = f"on {label}"
        if params.min() < -1e-6:
            raise AssertionError(f"{where}: (E, A, alpha) = ({E:.3g}, {A:.3g}, {alpha:.3g}) has a negative "
                                 "value; the law needs E, A, alpha >= 0: pass bounds=(0, np.inf) to least_squares")
        if mine[-1] > mine[0] + 1e-9:
            raise AssertionError(f"{where}: your curve grows with depth (dhat(1) = {mine[0]:.3g}, dhat(L) = "
                                 f"{mine[-1]:.3g}); check the sign of the exponent: dhat(l) = E + A * l ** (-alpha)")
        # the embedding included (points (l + 1, d_l), l = 0..L) or d paired off by one (points (l, d_(l-1)))
        with_l0 = _quiet_fit(d, include_embedding=True)(l - 1)
        shifted = _quiet_fit(np.concatenate([[0.0], d[:-1]]))(l)
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
            + _worst(mine, ref, lambda i: f"l = {i[0] + 1}")
            + f". Yours: E = {E:.3g}, A = {A:.3g}, alpha = {alpha:.3g}; freezelab: E = {law.E:.3g}, "
            f"A = {law.A:.3g}, alpha = {law.alpha:.3g}." + hint)
    _ok(f"fitted curves match freezelab.method.law.fit_scaling_law on {len(gaps)} traces, hidden ones included (max gap "
        + ", ".join(f"{g:.3f}" for g in gaps) + " nats)")


def check_gains(gains: Callable) -> None:
    """Grade ``gains(d, E, A, alpha) -> (observed, expected, excess)`` against ``freezelab.method.gains.layer_gains``.

    Each array has shape (L,), index l-1 for block l. As in layer_gains, dhat(0) (infinite) is replaced by d_0.
    """
    from freezelab.method.gains import layer_gains
    from freezelab.method.law import Law

    rng = _hidden_rng()  # a hidden trace: L, the law and the noise change on every run
    L = int(rng.integers(6, 25))
    E, A, alpha = rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0), rng.uniform(0.4, 1.5)
    d = _law_values(np.arange(L + 1.0), E, A, alpha) + rng.normal(0, 0.3, L + 1)
    d[0] = E + A + rng.uniform(2.0, 5.0)
    ref = layer_gains(d, Law(E=E, A=A, alpha=alpha, offset=0.0, first_layer=1, r2=0.0))
    got = _call(gains, "observed = d[:-1] - d[1:]; dhat = E + A * l ** (-alpha) for l = 1..L, with d[0] "
                "standing in for dhat(0)", d.copy(), E, A, alpha)
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise AssertionError("gains should return a tuple of three arrays (observed, expected, excess), "
                             f"got {type(got).__name__}")
    names = ("observed", "expected", "excess")
    arrays = [_array(x, name) for x, name in zip(got, names)]
    for name, out in zip(names, arrays):
        if out.shape != (L,):
            extra = (": one gain per BLOCK l = 1..L, i.e. L values (the L+1 latent spaces give L transitions)"
                     if out.shape == (L + 1,) else "")
            raise AssertionError(f"{name} should have shape (L,) = ({L},), got {out.shape}{extra}")
    obs, exp_, exc = arrays
    block = lambda i: f"block l = {i[0] + 1}"  # noqa: E731
    if not _close(obs, ref.observed, 1e-8):
        if _close(obs, -ref.observed, 1e-8):
            raise AssertionError("observed has the wrong sign: delta_l = d_(l-1) - d_l, so a drop in deviation is a "
                                 "positive gain (np.diff(d) is d_l - d_(l-1): negate it)")
        raise AssertionError("observed gains differ from d_(l-1) - d_l: " + _worst(obs, ref.observed, block))
    if not _close(exp_, ref.expected, 1e-8):
        if not np.isfinite(exp_[0]) and np.isfinite(exp_[1:]).all():
            raise AssertionError("expected gain of block 1 is infinite or NaN: dhat(0) = E + A * 0 ** (-alpha) is "
                                 "infinite; as layer_gains does, use the observed d_0 in place of dhat(0)")
        if _close(exp_[1:], ref.expected[1:], 1e-8):
            raise AssertionError(f"expected gains are right for blocks 2..L but block 1 is {exp_[0]:.4g}, not "
                                 f"{ref.expected[0]:.4g}: use d_0 in place of dhat(0), so deltahat_1 = d_0 - dhat(1)")
        if _close(exp_, -ref.expected, 1e-8) or _close(exp_[1:], -ref.expected[1:], 1e-8):
            raise AssertionError("expected has the wrong sign: deltahat_l = dhat(l-1) - dhat(l) (positive: the law "
                                 "decreases with depth)")
        raise AssertionError("expected gains differ from dhat(l-1) - dhat(l): " + _worst(exp_, ref.expected, block))
    if not _close(exc, ref.excess, 1e-8):
        if _close(exc, -ref.excess, 1e-8):
            raise AssertionError("excess has the wrong sign: g_l = delta_l - deltahat_l (observed minus expected)")
        raise AssertionError("excess gains differ from observed - expected: " + _worst(exc, ref.excess, block))
    _ok(f"observed, expected and excess gains match freezelab.method.gains.layer_gains on a hidden {L}-block trace")


def _excess_cases() -> list[tuple[str, np.ndarray]]:
    from freezelab.method.gains import layer_gains

    real = layer_gains(SMOLLM2_BBC_TRACE, _quiet_fit(SMOLLM2_BBC_TRACE)).excess
    return [
        ("the SmolLM2/BBC gains", real),
        ("gains whose maximum is at block 1", np.array([2.0, 0.1, 0.5, -0.2, 0.3, -0.1, 0.0, 0.2])),
        ("gains whose maximum is at block L", np.array([0.1, 0.2, -0.3, 0.4, 0.0, -0.1, 0.1, 3.0])),
        ("gains with a tie (blocks 3 and 6)", np.array([0.0, 0.1, 0.7, -0.2, 0.3, 0.7, -0.4, 0.1])),
    ]


def _hidden_excess_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
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


def _gains_of(excess: np.ndarray):
    from freezelab.method.gains import Gains

    return Gains(observed=excess.copy(), expected=np.zeros_like(excess), excess=excess.copy())


def check_argmax_cut(argmax_cut: Callable) -> None:
    """Grade ``argmax_cut(excess) -> k*`` against ``freezelab.method.plan.plan(gains).cut`` (paper rule).

    k* = argmax_{2 <= l <= L-1} g_l with blocks numbered 1..L (excess[l-1] is g_l); ties go to the deeper block.
    """
    from freezelab.method.plan import plan

    for label, excess in _excess_cases() + _hidden_excess_cases(_hidden_rng()):
        L = excess.size
        ref = plan(_gains_of(excess)).cut
        out = _as_int(_call(argmax_cut, "blocks are numbered 1..L and excess[l - 1] is g_l", excess.copy()),
                      "argmax_cut's result")
        if out == ref:
            continue
        where = f"on {label} (excess = {np.round(excess, 2).tolist()})"
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
    _ok("the argmax rule matches freezelab.method.plan.plan(rule='argmax-excess') on 7 cases (including ties, maxima at "
        "blocks 1 and L, and hidden ones at blocks 2 and L-1)")


# ---- assignment 3: a plan under a budget ----------------------------------------------------------------


def _benefit_cases() -> list[tuple[str, np.ndarray]]:
    cases = _excess_cases()
    hidden = _hidden_rng()
    return [cases[0], ("a short synthetic case", np.array([0.3, -0.5, 0.2, -0.1, -0.8, 0.4, 0.0, -0.2])),
            ("hidden random gains", np.round(hidden.normal(0.0, 1.0, int(hidden.integers(6, 41))), 2))]


def check_benefit(predicted_benefit: Callable) -> None:
    """Grade ``predicted_benefit(excess) -> (L,)`` against ``freezelab.method.plan.benefit_curve``.

    benefit(k) = sum_{l = k+1..L} max(0, -g_l) nats for the cut k = 0..L-1 (blocks 1..k frozen).
    """
    from freezelab.method.plan import benefit_curve

    for label, excess in _benefit_cases():
        L = excess.size
        ref = np.array([c.benefit for c in benefit_curve(_gains_of(excess))])
        out = _array(_call(predicted_benefit, "shortfall = np.maximum(0, -excess); benefit[k] = shortfall[k:].sum()",
                           excess.copy()), "the benefit")
        if out.shape != (L,):
            extra = (": cuts are k = 0..L-1 (at least the last block is trained), so L values"
                     if out.shape == (L + 1,) else "")
            raise AssertionError(f"benefit should have shape (L,) = ({L},), got {out.shape}{extra}")
        if _close(out, ref, 1e-8):
            continue
        short = np.maximum(0.0, -excess)
        where = f"on {label}"
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
            if _close(out, value, 1e-8):
                raise AssertionError(f"{where}: {message}")
        raise AssertionError(f"{where}: " + _worst(out, ref, lambda i: f"cut k = {i[0]}"))
    _ok("predicted benefits match freezelab.method.plan.benefit_curve on 3 cases (one hidden)")


def budget_cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """The cases ``check_budget_cut`` grades on: (label, excess, cost ratio, cached cost ratio, budget)."""
    from freezelab.method.plan import default_cost_curve

    real = _excess_cases()[0][1]
    ratio, cached = default_cost_curve(real.size)
    tie = np.array([-0.4, -0.2, 0.3, 0.5, -0.3, 0.2, 0.1, -0.1])
    r8, c8 = default_cost_curve(tie.size)
    rng = _hidden_rng()
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


def check_budget_cut(budget_cut: Callable) -> None:
    """Grade ``budget_cut(benefit, cost_ratio, budget) -> k`` against ``plan(gains, rule="budget", ...)``.

    Among the cuts k = 0..L-1 whose cost_ratio[k] <= budget, the one with the highest benefit[k];
    ties go to the deeper (cheaper) cut. benefit and cost_ratio are (L,) numpy arrays.
    """
    from freezelab.method.plan import benefit_curve, plan

    for label, excess, ratio, cached, budget in budget_cases():
        gains = _gains_of(excess)
        benefit = np.array([c.benefit for c in benefit_curve(gains)])
        L = excess.size
        ref = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached)).cut
        out = _as_int(_call(budget_cut, "fits = cost_ratio <= budget; among those cuts pick the highest benefit",
                            benefit.copy(), ratio.copy(), budget), "budget_cut's result")
        if out == ref:
            continue
        where = f"on {label}: expected cut {ref}, got {out}"
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
    _ok("budget cuts match freezelab.method.plan.plan(rule='budget') on 7 cases (including a tie, budgets equal to a "
        "cut's cost and two hidden cases)")


def _notebook_path(notebook: str | os.PathLike | None) -> Path:
    if notebook is None:
        session = os.environ.get("JPY_SESSION_NAME")  # set by Jupyter Server 2 for a notebook's kernel
        if not session:
            raise AssertionError("cannot tell which notebook to read: pass its file name, e.g. "
                                 "check_defence('03_budget_plan.ipynb'), or pass your defence as "
                                 "check_defence(text='...')")
        notebook = session
    path = Path(notebook).expanduser()
    if not path.exists():
        raise AssertionError(f"no notebook at {path.resolve()}: run the notebook from its own folder, pass the "
                             "right path, or (e.g. on Colab, where the notebook is not a file) pass your defence "
                             "as check_defence(text='...')")
    return path


def _defence_text(path: Path, tag: str) -> str:
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    marker = f"<!-- {tag} -->"
    found = []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if tag in cell.get("metadata", {}).get("tags", []) or source.lstrip().startswith(marker):
            found.append(source)
    if not found:
        raise AssertionError(f"{path.name} has no markdown cell tagged '{tag}' (nor one starting with {marker}): "
                             f"write your defence in the cell that said {PLACEHOLDER!r}, or add {marker} at the top "
                             "of the markdown cell that holds it")
    return "\n".join(found)


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


def _says(text: str, target: float, min_decimals: int) -> bool:
    """Whether `text` states `target` rounded to some precision of at least `min_decimals` decimals."""
    return any(d >= min_decimals and abs(v - target) <= 0.5 * 10.0 ** -d + 1e-9 for v, d in _numbers(text))


def _cut_named(text: str, k: int) -> bool:
    return any(d == 0 and v == k for v, d in _numbers(text))


DEFENCE_BUDGET = 0.5  # assignment 3's budget, a share of full fine-tuning's cost


def _defence_evidence(budget: float) -> list[tuple[str, Callable[[str], bool]]]:
    """What a defence of the budget plan must state, from freezelab's plan on the SmolLM2/BBC trace.

    The numbers are the ones the notebook prints (a correct solution reproduces them), so a defence written
    without running it, or one that only names the budget, fails.
    """
    from freezelab.method.gains import layer_gains
    from freezelab.method.plan import benefit_curve, default_cost_curve, plan

    law = _quiet_fit(SMOLLM2_BBC_TRACE)
    gains = layer_gains(SMOLLM2_BBC_TRACE, law)
    ratio, cached = default_cost_curve(gains.excess.size)
    benefit = np.array([c.benefit for c in benefit_curve(gains)])
    k = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached)).cut
    kc = plan(gains, rule="budget", budget=budget, cost_curve=(ratio, cached), cached=True).cut
    star = plan(gains).cut
    return [  # the values themselves are not in the feedback: Part C prints them
        ("your cut and its cost ratio", lambda t: _cut_named(t, k) and _says(t, ratio[k], 2)),
        ("the argmax plan (k*) and its cost ratio", lambda t: _cut_named(t, star) and _says(t, ratio[star], 2)),
        ("the predicted benefit of both, in nats",
         lambda t: _says(t, benefit[k], 1) and _says(t, benefit[star], 1)),
        ("how far the law fits the trace: its R^2",  # the value right after "R^2", not any number (0.5 budget)
         lambda t: any(_says(t[m.end():m.end() + 40], law.r2, 1) for m in re.finditer(r"R\s*(\^\s*2|²|2\b)", t))),
        ("what caching the frozen prefix changes: the cut the budget buys with the prefix cached, and its cached "
         "cost ratio", lambda t: _cut_named(t, kc) and _says(t, cached[kc], 2) and bool(re.search(r"cach", t, re.I))),
    ]


def check_defence(notebook: str | os.PathLike | None = None, *, text: str | None = None, budget: float = DEFENCE_BUDGET,
                  tag: str = "defence") -> None:
    """Check that the written defence states the evidence the assignment asks for (its argument is graded by a
    person): the chosen cut and its cost, the argmax plan and its cost, both predicted benefits, the law's R^2,
    and the cut the budget buys with the frozen prefix cached, with its cached cost, each number as the notebook
    prints it.

    Reads the markdown cell tagged `tag` (or starting with ``<!-- defence -->``) from the SAVED notebook file
    `notebook` (default: the notebook of this Jupyter session); `text` checks a string instead.
    """
    source = text if text is not None else _defence_text(_notebook_path(notebook), tag)
    body = re.sub(r"<!--.*?-->", "", source, flags=re.S).strip()
    saved = "" if text is not None else " (the check reads the SAVED notebook: save it first, Ctrl-S / Cmd-S)"
    if not body or PLACEHOLDER in body:
        raise AssertionError(f"your defence is still empty: replace {PLACEHOLDER!r} in the defence cell with a "
                             f"few sentences{saved}")
    missing = [what for what, stated in _defence_evidence(budget) if not stated(body)]
    if missing:
        raise AssertionError(f"your defence (budget {budget:g}) does not yet state " + "; ".join(missing)
                             + f" (each number as your notebook computes it, rounded as you like; cost ratios to 2 decimals or more){saved}")
    words = len(re.findall(r"\w+", body))
    _ok(f"defence found ({words} words) with the evidence asked for; your teacher grades what it argues")
