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
