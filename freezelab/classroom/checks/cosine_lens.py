"""Assignment 1, the cosine lens (``01_cosine_lens.ipynb``).

    check_semantic_basis(fn)      fn(W, y) -> s_y, (n, d): columns y of pinv(W), one row per target
    check_cosine_lens(fn)         fn(hn, s_y) -> (n, L+1): 1 - cos(N(h_l), s_y)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from freezelab.classroom.checks.common import (Case, Check, as_array, close, constant_factor, constant_gap, run,
                                               worst)

# The exercise asks for the cosine from dot products and norms: these (torch.nn.functional.cosine_similarity,
# torch.cosine_similarity, torch.nn.CosineSimilarity) are refused.
COSINE_BANNED = ("cosine_similarity", "CosineSimilarity")


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
    from freezelab.method.trace import Trace
    from freezelab.model.models import load_model

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


def _basis_cases(_rng: np.random.Generator) -> list[Case]:
    W, y, _, s_ref, _ = _cosine_case()
    return [Case("a tiny random model's LM head", (W.clone(), y.clone()), s_ref.double().numpy())]


def _judge_basis(case: Case, got: Any) -> str:
    W, y = case.args
    ref = case.ref
    V, d = W.shape
    n = y.shape[0]
    out = as_array(got, "s_y")
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
    if close(out, ref, atol=1e-4 * np.abs(ref).max()):
        return ""
    if close(out, Wn[y.numpy()], atol=1e-6):
        raise AssertionError("these are the rows W[y] of the LM head (the unembedding vectors), not the semantic "
                             "bases: s_v is column v of the pseudo-inverse pinv(W) (d x V)")
    unit = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    if close(out / np.linalg.norm(out, axis=-1, keepdims=True), unit, atol=1e-4):
        raise AssertionError("your vectors point the right way but have the wrong length: do not normalise "
                             "s_y; the columns of pinv(W) are used as they are")
    if close(out, ref[::-1], atol=1e-4 * np.abs(ref).max()):
        raise AssertionError("right vectors, wrong order: row i must be the basis of target y[i]")
    raise AssertionError("s_y differs from column y of pinv(W): "
                         + worst(out, ref, lambda i: f"target {i[0]} (token {int(y[i[0]])}), coordinate {i[1]}")
                         + ". Use torch.linalg.pinv(W) (not W.T, not an inverse of W: W is not square)")


SEMANTIC_BASIS = Check(
    function="semantic_basis_columns",
    hint="pinv(W) has shape (d, V): take its columns y and transpose them to (n, d), e.g. torch.linalg.pinv(W)[:, y].T",
    cases=_basis_cases, judge=_judge_basis,
    success=lambda cases, _: ("semantic bases match freezelab.method.basis.semantic_basis on {} targets (V = {}, "
                              "d = {})".format(cases[0].args[1].shape[0], *cases[0].args[0].shape)))


def check_semantic_basis(semantic_basis_columns: Callable) -> None:
    """Grade ``semantic_basis_columns(W, y) -> s_y`` against column y of ``freezelab.method.basis.semantic_basis``.

    W: (V, d) float32 tensor (the LM head), y: (n,) int64 tensor of token ids; s_y: (n, d), row i = s_{y_i}.
    """
    run(SEMANTIC_BASIS, semantic_basis_columns)


def _lens_cases(_rng: np.random.Generator) -> list[Case]:
    _, _, hn, s, ref = _cosine_case()
    return [Case("a fixed trace of 5 examples", (hn.clone(), s.clone()), np.asarray(ref, dtype=float))]


def _judge_lens(case: Case, got: Any) -> str:
    hn, s = case.args
    ref = case.ref
    n, layers, d = hn.shape
    out = as_array(got, "the deviation")
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
    if close(out, ref, atol=1e-4):
        return f"{np.abs(out - ref).max():.1e}"
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
        if close(out, value, atol=1e-4):
            raise AssertionError(message)
    first = 1 - (h * sv[:1]).sum(-1) / (nh * ns[:1])
    if close(out, first, atol=1e-4):
        raise AssertionError("every example was compared with the basis of the first target: pair example i "
                             "with s_y[i] (broadcast s_y[:, None, :])")
    c = constant_gap(out, ref, 1e-4)
    if c is not None:
        raise AssertionError(f"off by a constant: your deviation is freezelab's {c:+.4g} everywhere")
    f = constant_factor(out, ref)
    if f is not None:
        raise AssertionError(f"off by a factor: your deviation is {f:.4g} x freezelab's everywhere")
    raise AssertionError(
        "the deviation differs from 1 - cos(N(h_l), s_y): "
        + worst(out, ref, lambda i: f"example {i[0]}, latent space l = {i[1]}")
        + ". Test it by hand: cosine_lens(s_y[:, None, :], s_y) must be all zeros")


COSINE_LENS = Check(
    function="cosine_lens",
    hint="broadcast s_y over the latent spaces with s_y[:, None, :] (shape (n, 1, d)) and reduce over the last axis",
    cases=_lens_cases, judge=_judge_lens, banned=COSINE_BANNED,
    success=lambda cases, notes: (f"cosine lens matches freezelab.method.lens(lens='cosine') on "
                                  f"{cases[0].args[0].shape[0]} examples x {cases[0].args[0].shape[1]} latent "
                                  f"spaces (max |error| {notes[0]})"))


def check_cosine_lens(cosine_lens: Callable) -> None:
    """Grade ``cosine_lens(hn, s_y) -> (n, L+1)`` against ``freezelab.method.lens(..., lens="cosine")``.

    hn: (n, L+1, d) float32 tensor of normed states N(h_l); s_y: (n, d) semantic bases of the targets.
    The fixed input has n = 5 examples, L + 1 = 4 latent spaces and d = 16.
    """
    run(COSINE_LENS, cosine_lens)


CHECKS = {"check_semantic_basis": SEMANTIC_BASIS, "check_cosine_lens": COSINE_LENS}
