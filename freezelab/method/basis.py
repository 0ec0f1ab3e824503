"""Semantic bases: the columns s_v of pinv(W), one per token (W: V x d, the LM head).

With z = W h the logits of a hidden state h, h = sum_v z_v s_v = pinv(W) W h exactly when W has
full column rank (d <= V and rank d), which holds for real LM heads.
"""

from __future__ import annotations

import weakref

import torch

from freezelab.model.models import LoadedModel

_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, torch.Tensor]]" = weakref.WeakKeyDictionary()
_GRAM: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, torch.Tensor]]" = weakref.WeakKeyDictionary()


def semantic_basis(lm: LoadedModel) -> torch.Tensor:
    """pinv(W): (d, V) float32 on CPU, column v = s_v. Computed once per model (and head version)."""
    weight = lm.lm_head.weight
    cached = _CACHE.get(lm.model)
    if cached is not None and cached[0] == weight._version:
        return cached[1]
    basis = torch.linalg.pinv(weight.detach().float().cpu())
    _CACHE[lm.model] = (weight._version, basis)
    return basis


def semantic_basis_columns(lm: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """s_v for the token ids `ids` only: (len(ids), d) float32 on CPU, row i = column ids[i] of pinv(W).

    With W of full column rank, pinv(W) = (W^T W)^-1 W^T, so s_v = (W^T W)^-1 w_v (w_v = row v of W):
    one d x d solve against the few rows asked for, never the whole V x d pseudo-inverse. The
    Cholesky factor of W^T W is computed once per model (and head version): every lens reading of a
    trace shares it.
    """
    weight = lm.lm_head.weight.detach().double()
    rows = weight[ids.to(weight.device)]  # (n, d)
    return torch.cholesky_solve(rows.T, _gram_factor(lm)).T.float().cpu()


def _gram_factor(lm: LoadedModel) -> torch.Tensor:
    """The Cholesky factor of W^T W (d x d, float64), cached like `semantic_basis`."""
    weight = lm.lm_head.weight
    cached = _GRAM.get(lm.model)
    if cached is not None and cached[0] == weight._version:
        return cached[1]
    w = weight.detach().double()
    factor = torch.linalg.cholesky(w.T @ w)
    _GRAM[lm.model] = (weight._version, factor)
    return factor


def decompose(lm: LoadedModel, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h (..., d) -> (z (..., V), reconstruction sum_v z_v s_v (..., d)); z = W h without bias."""
    weight = lm.lm_head.weight.detach().float().cpu()
    z = h.float() @ weight.T
    return z, z @ semantic_basis(lm).T
