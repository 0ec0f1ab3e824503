"""Cost model (step 6) on tiny random-initialised HF models built from configs (no hub)."""

import types

import numpy as np
import pytest
import torch
import transformers

from freezelab.cost import (
    ADAMW_BYTES_PER_PARAM,
    attention_width,
    block_flops,
    cost,
    cost_ratios,
    cut_cost_curve,
    head_flops,
    step_flops,
)
from freezelab.gains import Gains
from freezelab.plan import Plan, default_cost_curve, plan

T = 32  # tokens per sequence


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                      tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    return types.SimpleNamespace(model=model, blocks=list(model.model.layers), embeddings=[model.model.embed_tokens],
                                 final_norm=model.model.norm, lm_head=model.lm_head, tied=False, num_layers=4,
                                 name="tiny-llama")


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=64, n_layer=4, n_head=4, vocab_size=1000)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    return types.SimpleNamespace(model=model, blocks=list(model.transformer.h),
                                 embeddings=[model.transformer.wte, model.transformer.wpe],
                                 final_norm=model.transformer.ln_f, lm_head=model.lm_head, tied=True, num_layers=4,
                                 name="tiny-gpt2")


def test_llama_block_flops_match_hand_count(llama):
    d, kv, ff = 64, 2 * 16, 128  # 2 key/value heads of width 16
    weights = d * d + d * kv + d * kv + d * d + 3 * d * ff  # q k v o, gate up down
    assert attention_width(llama.model.config) == 64
    assert block_flops(llama.blocks[0], T, 64) == 2 * weights * T + 4 * T**2 * 64


def test_gpt2_conv1d_weights_are_counted(gpt2):
    weights = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert attention_width(gpt2.model.config) == 64
    assert block_flops(gpt2.blocks[0], T, 64) == 2 * weights * T + 4 * T**2 * 64


def test_attention_width_follows_head_dim():
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=32)
    assert attention_width(config) == 128


def test_head_flops(llama):
    assert head_flops(llama.lm_head, T) == 2 * 64 * 1000 * T
    assert head_flops(llama.lm_head, T, label_rows=3) == 2 * 64 * 3


def test_step_flops_suffix_and_arbitrary_sets():
    F = [1.0] * 4
    assert step_flops(F, 0.0, [2, 3], False) == (4 + 2 * 2, 3 * 2)  # sum F + 2 sum_{l>k} F; cached 3 sum_{l>k} F
    assert step_flops(F, 0.0, [2], False) == (4 + 2 + 1, 2 + 2 + 1)  # block 4 frozen: input gradient only
    assert step_flops(F, 0.0, [0, 2], False) == (4 + 4 + 2, 4 + 4 + 2)
    assert step_flops(F, 1.0, [3], True) == (4 + 1 + 1 + 1 + 1 + 1, 1 + 1 + 1 + 1 + 1 + 1)
    assert step_flops(F, 1.0, [], False) == (4 + 1, 1)


def test_cost_ratios_equal_blocks_match_default_curve():
    ratio, cached = cost_ratios([5.0] * 6, 0.0, head_trained=False)
    expected_ratio, expected_cached = default_cost_curve(6)
    np.testing.assert_allclose(ratio, expected_ratio)
    np.testing.assert_allclose(cached, expected_cached)


@pytest.mark.parametrize("label_rows", [None, 4])
@pytest.mark.parametrize("head_trained", [True, False])
def test_cut_cost_curve_shape_and_order(llama, label_rows, head_trained):
    ratio, cached = cut_cost_curve(llama, T, label_rows=label_rows, head_trained=head_trained)
    assert ratio.shape == cached.shape == (4,)
    assert np.all(np.diff(ratio) <= 0) and np.all(np.diff(cached) <= 0)
    assert np.all(cached <= ratio + 1e-12)
    if head_trained:
        assert ratio[0] == 1.0 and cached[0] == 1.0
    else:  # the head's weight gradient is saved even at cut 0
        F = sum(block_flops(b, T, 64) for b in llama.blocks)
        H = head_flops(llama.lm_head, T, label_rows)
        assert np.isclose(ratio[0], (3 * F + 2 * H) / (3 * F + 3 * H)) and ratio[0] < 1


def count_trainable_by_hand(lm, plan):
    for p in lm.model.parameters():
        p.requires_grad_(False)
    modules = [lm.blocks[i] for i in plan.trained] + [lm.final_norm]
    modules += [] if plan.freeze_embeddings else lm.embeddings
    modules += [lm.lm_head] if plan.train_head else []
    for m in modules:
        m.requires_grad_(True)
    return sum(p.numel() for p in lm.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("fixture", ["llama", "gpt2"])
@pytest.mark.parametrize("train_head, freeze_embeddings", [(False, True), (True, True), (False, False)])
def test_trainable_share_matches_requires_grad_count(request, fixture, train_head, freeze_embeddings):
    lm = request.getfixturevalue(fixture)
    plan = Plan.from_cut(4, 2)
    plan.train_head, plan.freeze_embeddings = train_head, freeze_embeddings
    if lm.tied:  # a tied head follows the embedding
        plan.train_head = not freeze_embeddings
    by_hand = count_trainable_by_hand(lm, plan)
    total = sum(p.numel() for p in lm.model.parameters())
    c = cost(lm, plan, seq_len=T, batch=8)
    assert (c.trainable_params, c.total_params) == (by_hand, total)
    assert c.trainable_share == by_hand / total
    assert c.optimizer_state_bytes == ADAMW_BYTES_PER_PARAM * by_hand


def test_cost_of_a_plan(llama):
    plan = Plan.from_cut(4, 1)
    c = cost(llama, plan, seq_len=T, batch=8, label_rows=4)
    ratio, cached = cut_cost_curve(llama, T, label_rows=4)
    assert np.isclose(c.cost_ratio, ratio[1]) and np.isclose(c.cost_ratio_cached, cached[1])
    assert np.isclose(c.flops_step / c.flops_full, c.cost_ratio)
    assert np.isclose(c.flops_step_cached / c.flops_full, c.cost_ratio_cached)
    F = block_flops(llama.blocks[0], T, 64)
    H = head_flops(llama.lm_head, T, 4)
    assert np.isclose(c.flops_full, 8 * (3 * 4 * F + 3 * H))
    # Korthikanti et al.: s b h (34 + 5 a s / h) bytes per block in 16-bit; fp32 doubles it; 3 blocks trained
    assert c.activation_bytes == T * 8 * 64 * (34 + 5 * 4 * T / 64) * 2 * 3
    assert set(c.to_dict()) >= {"flops_full", "cost_ratio", "trainable_share", "activation_bytes"}


def test_cost_curve_feeds_plan(gpt2):
    excess = np.array([0.0, 0.0, 1.0, 0.0])
    curve = cut_cost_curve(gpt2, T)
    chosen = plan(Gains(excess, np.zeros(4), excess), cost_curve=curve)
    assert chosen.chosen_layer == 3 and chosen.cost_ratio == curve[0][3]
