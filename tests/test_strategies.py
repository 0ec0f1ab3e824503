"""Strategies (baselines as plans) and LoRA placement, on tiny random models of real architectures."""

import sys
from dataclasses import replace

import pytest
import torch

from freezelab.errors import FreezelabError
from freezelab.train.freeze import freeze
from freezelab.model.adapter import LORA_TARGETS, Adapter
from freezelab.train.lora import ensure_lora, inject_lora, lora_blocks, lora_config_for
from freezelab.model.models import load_model
from freezelab.method.plan import Plan
from freezelab.train.strategies import STRATEGIES, LisaSchedule, describe_strategies, resolve

TINY = dict(num_hidden_layers=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:smollm2-135m", device="cpu", dtype="fp32", **TINY)


@pytest.fixture(scope="module")
def tiny_text(smollm):
    """4 random llama blocks with the SmolLM2 vocabulary and tokenizer, for strategies that read data."""
    lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", **{**TINY, "num_hidden_layers": 4,
                                                                          "vocab_size": 49152})
    lm.tokenizer = smollm.tokenizer
    return lm


def _partition_ok(plan: Plan, L: int) -> bool:
    return sorted(plan.frozen + plan.trained) == list(range(L)) and not set(plan.frozen) & set(plan.trained)


@pytest.mark.parametrize("spec, rule, trained", [
    ("full", "full", list(range(8))),
    ("top:3", "top", [5, 6, 7]),
    ("top:8", "top", list(range(8))),
    ("top25", "top25", [6, 7]),
    ("lora", "lora", list(range(8))),
])
def test_fixed_strategies_give_valid_plans(tiny, spec, rule, trained):
    plan = resolve(spec, tiny)
    assert _partition_ok(plan, 8)
    assert (plan.rule, plan.trained, plan.extras["strategy"]) == (rule, trained, spec)
    # a subset of full fine-tuning's work costs at most its price; adapters add work of their own (rank 8
    # on a 64-wide twin rivals the weight gradients they save, so LoRA may price above full there)
    assert 0 < plan.cost_ratio and (plan.lora is not None or plan.cost_ratio <= 1)
    if plan.lora is not None:  # adapters must be injected first
        with pytest.raises(FreezelabError, match="ensure_lora"):
            freeze(tiny, plan)
    else:
        assert freeze(tiny, plan) > 0


def test_full_trains_embeddings_and_lora_trains_adapters_only(tiny):
    full = resolve("full", tiny)
    assert not full.freeze_embeddings and full.train_final_norm
    assert freeze(tiny, full) == tiny.num_params  # tied head follows the embedding: everything trains
    lora = resolve("lora", tiny)
    assert lora.lora == Adapter(r=8, alpha=16, seed=0) and not lora.train_final_norm


def test_random_cut_is_seeded_and_in_range(tiny):
    cuts = [resolve("random", tiny, seed=s).cut for s in range(20)]
    assert all(1 <= k <= 7 for k in cuts)
    assert len(set(cuts)) > 2
    assert resolve("random", tiny, seed=3).trained == resolve("random", tiny, seed=3).trained
    plan = resolve("random", tiny, seed=3)
    assert plan.rule == "random" and plan.frozen == list(range(plan.cut))


def test_lisa_redraws_every_period_and_is_deterministic(tiny):
    schedule = resolve("lisa:2:3", tiny, seed=1, steps=30)
    assert isinstance(schedule, LisaSchedule)
    plans = [schedule(s) for s in range(30)]
    for s in range(30):
        assert plans[s] is plans[s - s % 3]  # one object per period: finetune re-freezes on identity
        assert len(plans[s].trained) == 2 and _partition_ok(plans[s], 8) and plans[s].rule == "lisa"
    firsts = [plans[s] for s in range(0, 30, 3)]
    assert all(a is not b for a, b in zip(firsts, firsts[1:]))
    assert len({tuple(p.trained) for p in firsts}) > 3  # 10 draws of 2 of 8 blocks vary
    again = resolve("lisa:2:3", tiny, seed=1)
    assert [again(s).trained for s in range(30)] == [p.trained for p in plans]
    assert [again(27).trained for _ in range(2)] == [plans[27].trained] * 2  # random access (resume)
    other = resolve("lisa:2:3", tiny, seed=2)
    assert [other(s).trained for s in range(0, 30, 3)] != [p.trained for p in firsts]
    assert resolve("lisa:2", tiny).period == resolve("lisa:2", tiny, steps=30).period == 10
    assert resolve("lisa:2", tiny, steps=6).period == 3  # a short run still redraws


@pytest.mark.slow  # the SmolLM2 tokenizer comes with the real model
def test_gradnorm_picks_the_k_blocks_with_largest_relative_gradient(tiny_text, bbc):
    lm, calib = tiny_text, bbc.examples[:6]
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    freeze(lm, Plan.from_cut(4, 3))  # a prior requires_grad pattern that must survive
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    plan = resolve("gradnorm:2", lm, task=bbc, calib=calib, max_length=32)
    scores = plan.extras["relative_grad_norm"]
    assert plan.rule == "gradnorm" and len(plan.trained) == 2 and _partition_ok(plan, 4)
    assert plan.trained == sorted(sorted(range(4), key=lambda i: -scores[i])[:2])
    # weights, flags and grads untouched
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n]) and p.requires_grad == flags[n] and p.grad is None
    # independent recomputation: one batch, torch.autograd.grad
    from freezelab.model.encode import collate, encode
    from freezelab.train.finetune import batch_loss

    enc = encode(lm.tokenizer, bbc, calib, 32)
    lm.model.requires_grad_(True)
    loss = batch_loss(lm, enc, collate(enc, range(len(calib)), lm.tokenizer.pad_token_id))[0].mean()
    expected = []
    for block in lm.blocks:
        params = list(block.parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        expected.append(float(torch.cat([g.flatten() for g in grads]).norm()
                              / torch.cat([p.detach().flatten() for p in params]).norm()))
    freeze(lm, Plan.from_cut(4, 3))
    assert scores == pytest.approx(expected, rel=1e-4)


def test_plan_files_and_lora_plan(tiny, tmp_path):
    Plan.from_cut(8, 5, rule="argmax-excess").save(tmp_path / "plan.json")
    for spec in (str(tmp_path / "plan.json"), f"plan:{tmp_path / 'plan.json'}"):
        loaded = resolve(spec, tiny)
        assert (loaded.rule, loaded.trained) == ("argmax-excess", [5, 6, 7])
    lp = resolve("lora-plan", tiny, plan_path=tmp_path / "plan.json")
    assert (lp.rule, lp.trained, lp.lora, lp.extras["base_rule"]) == (
        "lora-plan", [5, 6, 7], Adapter(r=8, alpha=16, seed=0), "argmax-excess")
    assert not lp.train_final_norm
    assert resolve(f"lora-plan:{tmp_path / 'plan.json'}", tiny).trained == [5, 6, 7]


@pytest.mark.parametrize("spec, kwargs, message", [
    ("nope", {}, "unknown strategy 'nope'. Strategies: full; top:K"),
    ("top", {}, "needs a whole number of blocks"),
    ("top:0", {}, "between 1 and 8"),
    ("top:9", {}, "between 1 and 8"),
    ("gradnorm:9", {}, "between 1 and 8"),
    ("full:2", {}, "takes no argument"),
    ("lisa:2:0", {}, "at least 1 step"),
    ("lisa:2:x", {}, "whole number of steps"),
    ("lisa:2:10", {"steps": 10}, "never redraws"),
    ("gradnorm:2", {}, "pass task= and calib="),
    ("lora-plan", {}, "needs a plan file"),
    ("missing.json", {}, "no plan at missing.json"),
])
def test_bad_specs_raise_helpful_errors(tiny, spec, kwargs, message):
    with pytest.raises(FreezelabError, match=message.replace("(", r"\(").replace("+", r"\+")):
        resolve(spec, tiny, **kwargs)


def test_plan_for_another_model_fails_at_resolve(tiny, tmp_path):
    other = Plan.from_cut(30, 14)
    other.extras["model"] = "smollm2-135m"
    other.save(tmp_path / "p.json")
    for spec in (str(tmp_path / "p.json"), f"lora-plan:{tmp_path / 'p.json'}"):
        with pytest.raises(FreezelabError, match=r"made for 30 blocks \(smollm2-135m\).* has 8"):
            resolve(spec, tiny)


def test_describe_strategies_covers_the_registry():
    usages = [u for u, _ in describe_strategies()]
    assert len(usages) == len(STRATEGIES) and "lisa:K[:P]" in usages and "gradnorm:K" in usages
    assert all(d for _, d in describe_strategies())


# ---- LoRA placement ----------------------------------------------------------------------------------

FAMILIES = {
    "smollm2-135m": TINY,
    "gemma3-270m": dict(num_hidden_layers=4, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=32, vocab_size=1000),
    "gpt2": dict(n_layer=4, n_embd=64, n_head=4, vocab_size=1000),
    "pythia-160m": dict(num_hidden_layers=4, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                        vocab_size=1000),
    "opt-125m": dict(num_hidden_layers=4, hidden_size=64, ffn_dim=128, num_attention_heads=4, vocab_size=1000,
                     word_embed_proj_dim=64),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_adapts_every_target_only_in_trained_blocks(name):
    lm = load_model(f"random:{name}", device="cpu", dtype="fp32", **FAMILIES[name])
    L = lm.num_layers
    plan = Plan.from_cut(L, L - 2)
    ids = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
    inject_lora(lm, plan, Adapter())
    assert lora_blocks(lm) == [L - 2, L - 1]
    for i, block in enumerate(lm.blocks):
        adapted = {n.rsplit(".", 1)[-1] for n, m in block.named_modules() if hasattr(m, "lora_A")}
        assert adapted == (set(LORA_TARGETS[lm.arch.name]) if i in plan.trained else set()), (name, i)
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, before)  # B = 0: outputs unchanged
    lora = Plan.from_cut(L, L - 2)
    lora = replace(lora, lora=Adapter.from_dict({"r": 8, "alpha": 16}))
    freeze(lm, lora)
    norm = {id(p) for p in lm.final_norm.parameters()}
    for n, p in lm.model.named_parameters():
        assert p.requires_grad == ("lora_" in n or id(p) in norm), n


def test_lora_config_and_ensure_lora(tiny):
    lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", **TINY)
    plan = Plan.from_cut(8, 6)
    plan = replace(plan, lora=Adapter.from_dict({"r": 4, "alpha": 8}))
    config = lora_config_for(plan, lm, Adapter(r=4, alpha=8))
    assert (config.r, config.lora_alpha, config.layers_to_transform, config.layers_pattern) == (4, 8, [6, 7], "layers")
    ensure_lora(lm, Plan.from_cut(8, 6))  # no LoRA in the plan: nothing injected
    assert lora_blocks(lm) == []
    ensure_lora(lm, plan)
    ensure_lora(lm, plan)  # idempotent
    assert lora_blocks(lm) == [6, 7]
    assert lm.blocks[6].self_attn.q_proj.lora_A["default"].weight.shape == (4, 64)
    other = Plan.from_cut(8, 4)
    other = replace(other, lora=Adapter.from_dict({"r": 4, "alpha": 8}))
    with pytest.raises(FreezelabError, match=r"adapters in blocks \[6, 7\] but the plan trains \[4, 5, 6, 7\]"):
        ensure_lora(lm, other)
    with pytest.raises(FreezelabError, match="already has LoRA adapters"):
        inject_lora(lm, plan, Adapter())
    with pytest.raises(FreezelabError, match="made for 30 blocks"):
        lora_config_for(Plan.from_cut(30, 2), tiny, Adapter())


def test_missing_peft_names_the_install_command(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(FreezelabError, match=r"pip install 'freezelab\[peft\]'"):
        lora_config_for(Plan.from_cut(8, 6), tiny, Adapter())


def test_lora_plan_without_trained_blocks_is_rejected(tiny):
    empty = Plan(8, 8, list(range(8)), [], "manual", None, None, 0.0, 0.0, [])
    with pytest.raises(FreezelabError, match="at least one trained block"):
        lora_config_for(empty, tiny, Adapter())


def test_lora_initialisation_follows_the_seed():
    def adapters(seed, global_seed):
        lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", **TINY)
        plan = Plan.from_cut(8, 6)
        plan = replace(plan, lora=Adapter.from_dict({"r": 4, "alpha": 8, "seed": seed}))
        torch.manual_seed(global_seed)  # the global RNG must not decide the adapters
        ensure_lora(lm, plan)
        state = {n: p.detach().clone() for n, p in lm.model.named_parameters() if "lora_A" in n}
        assert state
        return state

    a, b, c = adapters(0, 1), adapters(0, 2), adapters(1, 1)
    assert all(torch.equal(a[n], b[n]) for n in a)  # same seed: same adapters
    assert not any(torch.equal(a[n], c[n]) for n in a)  # another seed: other adapters
