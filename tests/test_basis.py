"""The semantic bases of a few tokens, solved against their rows only, equal pinv(W)'s columns."""

import torch

from freezelab.method.basis import semantic_basis, semantic_basis_columns
from freezelab.model.models import load_model


def test_columns_equal_the_full_pseudo_inverse():
    lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, vocab_size=500)
    ids = torch.tensor([3, 17, 17, 499, 0])
    full = semantic_basis(lm)[:, ids].T
    mine = semantic_basis_columns(lm, ids)
    assert mine.shape == (5, 32) and mine.dtype == torch.float32
    assert torch.allclose(mine, full, atol=1e-5 * full.abs().max().item())


def test_columns_follow_a_changed_head():
    """The factor of W^T W is cached per head version: a trained head gives the new bases."""
    lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", hidden_size=16, intermediate_size=32,
                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
    ids = torch.tensor([1, 2])
    before = semantic_basis_columns(lm, ids)
    with torch.no_grad():
        lm.lm_head.weight.mul_(2.0)  # pinv(2W) = pinv(W) / 2
    assert torch.allclose(semantic_basis_columns(lm, ids), before / 2, atol=1e-6)
