"""Fine-tuning under a plan, on the real SmolLM2-135M with BBC News (a few steps) and tiny random models:
freezing, truncated backward, prefix cache, resume, result files, LoRA, schedules and the HF Trainer.

Tests marked slow load the real model (or its tokenizer); the HF Trainer tests use tiny random models.
"""

import importlib
import json
import re
import types
from dataclasses import replace

import pytest
import torch

from freezelab.model.encode import collate, encode
from freezelab.errors import FreezelabError
from freezelab.train.finetune import FinetuneConfig, batch_loss, evaluate, finetune
from freezelab.train.freeze import freeze
from freezelab.train.hf import FreezeCallback
from freezelab.train.lora import lora_blocks
from freezelab.model.models import load_model
from freezelab.method.plan import Plan
from freezelab.train.strategies import LisaSchedule, resolve

ft = importlib.import_module("freezelab.train.finetune")  # the module (the package exports the function)
CUT, L = 26, 30  # train the top 4 of SmolLM2's 30 blocks
RUN = FinetuneConfig(steps=4, batch_size=4, lr=1e-3, max_length=16)  # 8 examples: 2 epochs
RESULT_KEYS = {"strategy", "trainable_params", "total_params", "steps", "seconds", "step_seconds", "loss_before",
               "loss_after", "acc_before", "acc_after", "peak_mem_mb"}


def block_of(name: str) -> int | None:
    m = re.search(r"\.layers\.(\d+)\.", name)
    return None if m is None else int(m.group(1))


def snapshot(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def trained_state(lm, blocks) -> dict[str, torch.Tensor]:
    return {n: p for n, p in lm.model.named_parameters() if block_of(n) in blocks or ".norm." in n}


@pytest.fixture(scope="module")
def data(bbc_split):
    return types.SimpleNamespace(train=bbc_split.train[:8], test=bbc_split.test[:4])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, bbc, data):
    """An uninterrupted, uncached 4-step run of the top-4 plan, watching every unembedding call."""
    lm = load_model("smollm2-135m")
    before = snapshot(lm)
    calls = []
    unembed = lm.unembed

    def spy(h, rows=None):
        calls.append((tuple(h.shape), rows))
        return unembed(h, rows)

    lm.unembed = spy
    out = tmp_path_factory.mktemp("baseline")
    result = finetune(lm, bbc, Plan.from_cut(L, CUT), data.train, data.test, RUN, out=out, strategy="top:4", progress=False)
    del lm.unembed
    return types.SimpleNamespace(lm=lm, before=before, result=result, out=out, calls=calls)


def fail_at(monkeypatch, call: int, exc: type[BaseException]) -> None:
    """Make finetune's `call`-th training batch (1-based) raise `exc`, as a crash or Ctrl-C would."""
    count = [0]

    def collate_or_fail(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise exc()
        return collate(*args, **kwargs)

    monkeypatch.setattr(ft, "collate", collate_or_fail)


def assert_same_training(run, reference) -> None:
    """Same per-step losses, held-out metrics and trained weights as the reference run."""
    assert run.result.train_losses == pytest.approx(reference.result.train_losses, rel=1e-5)
    assert run.result.loss_before == pytest.approx(reference.result.loss_before, rel=1e-6)
    assert run.result.loss_after == pytest.approx(reference.result.loss_after, rel=1e-5)
    ref = trained_state(reference.lm, range(CUT, L))
    for n, p in trained_state(run.lm, range(CUT, L)).items():
        torch.testing.assert_close(p, ref[n], msg=n)


# ---- freezing and what a run reports -------------------------------------------------------------------

@pytest.mark.slow
def test_frozen_weights_bit_identical_trained_weights_changed(baseline):
    checked = 0
    for n, p in baseline.lm.model.named_parameters():
        block = block_of(n)
        if block is not None and block >= CUT or n == "model.norm.weight":
            assert not torch.equal(p, baseline.before[n]), f"trained {n} did not change"
        else:
            assert torch.equal(p, baseline.before[n]), f"frozen {n} changed"
            checked += 1
    assert checked > 26 * 9  # embeddings and every tensor of the 26 frozen blocks


@pytest.mark.slow
def test_result_json_reports_cost_and_benefit(baseline):
    saved = json.loads((baseline.out / "result.json").read_text())
    assert RESULT_KEYS <= saved.keys()
    r = baseline.result
    assert saved == json.loads(json.dumps(r.to_dict()))
    lm = baseline.lm
    expected = sum(p.numel() for n, p in trained_state(lm, range(CUT, L)).items())
    assert (r.strategy, r.steps, r.trainable_params, r.total_params) == ("top:4", 4, expected, lm.num_params)
    assert len(r.step_times) == 4 and r.seconds == pytest.approx(sum(r.step_times)) and r.peak_mem_mb > 100
    assert r.step_seconds == pytest.approx(sum(r.step_times[1:]) / 3)  # the allocating first step excluded
    assert len(r.train_losses) == 4 and r.trained == list(range(CUT, L)) and not r.cached
    assert 0 <= r.acc_before <= 1 and 0 <= r.acc_after <= 1 and r.loss_after != r.loss_before


@pytest.mark.slow
def test_classification_logits_are_never_batch_by_length_by_vocab(baseline):
    assert len(baseline.calls) == 4 + 2  # 4 training steps, one test batch before and after
    for shape, rows in baseline.calls:
        assert rows is not None and len(rows) == 5  # the 5 label rows of the head only
        assert len(shape) == 2 and shape[1] == 576  # (B, d): the prediction position only


@pytest.mark.slow
def test_truncated_backward_gives_the_full_backward_gradients(smollm, bbc, data):
    lm = smollm
    enc = encode(lm.tokenizer, bbc, data.train[:4], RUN.max_length)
    batch = collate(enc, range(4), lm.tokenizer.pad_token_id)
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    try:
        lm.model.requires_grad_(True)
        full_loss = batch_loss(lm, enc, batch)[0].mean()
        full_loss.backward()
        full = {n: p.grad.clone() for n, p in trained_state(lm, range(CUT, L)).items()}
        lm.model.zero_grad(set_to_none=True)

        freeze(lm, Plan.from_cut(L, CUT))
        tracks = {}
        hooks = [b.register_forward_hook(lambda m, a, out, i=i: tracks.__setitem__(i, out[0] if isinstance(
            out, tuple) else out)) for i, b in enumerate(lm.blocks)]
        hooks.append(lm.embeddings[0].register_forward_hook(lambda m, a, out: tracks.__setitem__("emb", out)))
        loss = batch_loss(lm, enc, batch)[0].mean()
        for h in hooks:
            h.remove()
        assert not tracks["emb"].requires_grad
        assert [tracks[i].requires_grad for i in range(L)] == [False] * CUT + [True] * (L - CUT)
        loss.backward()
        torch.testing.assert_close(loss, full_loss)
        for n, p in lm.model.named_parameters():
            if n in full:
                torch.testing.assert_close(p.grad, full[n], rtol=1e-4, atol=1e-7, msg=n)
            else:
                assert p.grad is None, n
    finally:
        lm.model.zero_grad(set_to_none=True)
        for n, p in lm.model.named_parameters():
            p.requires_grad_(flags[n])


# ---- prefix cache and resume ----------------------------------------------------------------------------

@pytest.mark.slow
def test_prefix_cache_matches_the_uncached_run(baseline, bbc, data, monkeypatch):
    built = []
    real = ft.build_cache

    def recorded(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ft, "build_cache", recorded)
    lm = load_model("smollm2-135m")
    result = finetune(lm, bbc, Plan.from_cut(L, CUT), data.train, data.test, replace(RUN, cache_prefix=True), progress=False)
    assert result.cached and result.start_block == CUT
    assert [c.layers for c in built] == [(CUT,), (CUT,)]  # h_k of the training and the test examples, once
    assert len(built[0]) == len(data.train) and len(built[1]) == len(data.test)
    assert_same_training(types.SimpleNamespace(lm=lm, result=result), baseline)
    assert result.per_example_loss == pytest.approx(baseline.result.per_example_loss, rel=1e-5)


@pytest.mark.slow
def test_resume_after_crash_and_interrupt_reproduces_the_uninterrupted_run(baseline, bbc, data, tmp_path,
                                                                             monkeypatch):
    plan = Plan.from_cut(L, CUT)
    # a crash in step 3 (0-based 2): the periodic checkpoint of step 2 survives
    fail_at(monkeypatch, 3, RuntimeError)
    with pytest.raises(RuntimeError):
        finetune(load_model("smollm2-135m"), bbc, plan, data.train, data.test, replace(RUN, save_every=2), out=tmp_path, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt")["step"] == 2
    # resumed, then Ctrl-C in step 4: the interrupt handler saves step 3
    fail_at(monkeypatch, 2, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        finetune(load_model("smollm2-135m"), bbc, plan, data.train, data.test, replace(RUN, save_every=10), out=tmp_path, resume=True, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt")["step"] == 3
    assert not (tmp_path / "result.json").exists()
    # resumed again: step 4 is trained and saved, then the evaluation after training crashes
    monkeypatch.setattr(ft, "collate", collate)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while evaluating")

    monkeypatch.setattr(ft, "evaluate", crash)
    with pytest.raises(RuntimeError, match="killed while evaluating"):
        finetune(load_model("smollm2-135m"), bbc, plan, data.train, data.test, replace(RUN, save_every=2, keep_checkpoint=False), out=tmp_path, resume=True, progress=False)  # as sweeps run: no checkpoint once complete
    assert torch.load(tmp_path / "checkpoint.pt")["step"] == 4  # kept until then: the trained steps are not lost
    assert not (tmp_path / "result.json").exists()
    # resumed in a fresh process (a freshly loaded model): nothing left to train, it evaluates
    monkeypatch.setattr(ft, "evaluate", evaluate)
    lm = load_model("smollm2-135m")
    result = finetune(lm, bbc, plan, data.train, data.test, replace(RUN, keep_checkpoint=False), out=tmp_path, resume=True, progress=False)
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 4
    assert not (tmp_path / "checkpoint.pt").exists()  # removed once result.json holds the result
    assert_same_training(types.SimpleNamespace(lm=lm, result=result), baseline)


# ---- LoRA, schedules ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lora_plan_trains_only_adapters_inside_the_trained_blocks(bbc, data, tmp_path):
    Plan.from_cut(L, CUT).save(tmp_path / "plan.json")
    lm = load_model("smollm2-135m")
    before = snapshot(lm)
    plan = resolve("lora-plan", lm, plan_path=tmp_path / "plan.json")
    result = finetune(lm, bbc, plan, data.train, data.test, replace(RUN, steps=2), progress=False)
    assert lora_blocks(lm) == list(range(CUT, L))
    adapters = 0
    for n, p in lm.model.named_parameters():
        if "lora_" in n:
            assert block_of(n) >= CUT and not torch.equal(p, torch.zeros_like(p)), n
            adapters += p.numel()
        else:
            assert torch.equal(p, before[n.replace(".base_layer", "")]), f"base weight {n} changed"
    assert result.trainable_params == adapters and result.loss_after != result.loss_before
    assert all(torch.count_nonzero(p) > 0 for n, p in lm.model.named_parameters() if "lora_B" in n)


@pytest.fixture(scope="module")
def tiny_text(smollm):
    lm = load_model("random:smollm2-135m", device="cpu", dtype="fp32", num_hidden_layers=6, hidden_size=64,
                    intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    lm.tokenizer = smollm.tokenizer
    return lm


@pytest.mark.slow
def test_lisa_schedule_trains_only_the_drawn_blocks(tiny_text, bbc, data):
    lm = tiny_text
    before = snapshot(lm)
    schedule = LisaSchedule(6, 1, period=2, seed=5)
    drawn = {i for s in range(6) for i in schedule(s).trained}
    assert len(drawn) > 1  # the draws differ between periods
    result = finetune(lm, bbc, schedule, data.train, data.test, replace(RUN, steps=6), progress=False)
    assert result.trained == schedule(5).trained
    for n, p in lm.model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (block_of(n) in drawn or n == "model.norm.weight"), n


# ---- the HF Trainer -------------------------------------------------------------------------------------

def _trainer(lm, callback, tmp_path, steps=2):
    from transformers import Trainer, TrainingArguments

    ids = torch.randint(0, 1000, (8, 16), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, logging_strategy="no")
    return Trainer(model=lm.model, args=args, train_dataset=dataset, callbacks=[callback])


def _tiny():
    return load_model("random:smollm2-135m", device="cpu", dtype="fp32", num_hidden_layers=4, hidden_size=64,
                      intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)


def test_freeze_callback_in_a_trainer(tmp_path):
    lm = _tiny()
    before = snapshot(lm)
    trainer = _trainer(lm, FreezeCallback(Plan.from_cut(4, 2)), tmp_path)
    trainer.train()
    trainable = {id(p) for p in lm.model.parameters() if p.requires_grad}
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == trainable  # only those
    for n, p in lm.model.named_parameters():
        trained = block_of(n) in (2, 3) or n == "model.norm.weight"
        assert (not torch.equal(p, before[n])) == trained, n


def test_freeze_callback_follows_a_schedule(tmp_path):
    lm = _tiny()
    before = snapshot(lm)
    schedule = LisaSchedule(4, 1, period=1, seed=1)
    drawn = {i for s in range(3) for i in schedule(s).trained}
    assert len(drawn) > 1
    _trainer(lm, FreezeCallback(schedule), tmp_path, steps=3).train()
    for n, p in lm.model.named_parameters():
        assert (not torch.equal(p, before[n])) == (block_of(n) in drawn or n == "model.norm.weight"), n


def test_freeze_callback_needs_adapters_for_a_lora_plan(tmp_path):
    lm = _tiny()
    plan = resolve("lora", lm)
    with pytest.raises(FreezelabError, match="inject_lora"):
        _trainer(lm, FreezeCallback(plan), tmp_path)


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_input_raises_clear_errors(smollm, bbc, data, tmp_path):
    lm, plan = smollm, Plan.from_cut(L, CUT)
    args = (bbc, plan, data.train, data.test)
    with pytest.raises(FreezelabError, match=r"made for 4 blocks .* 'smollm2-135m' has 30"):
        finetune(lm, bbc, Plan.from_cut(4, 2), data.train, data.test, RUN, progress=False)
    Plan.from_cut(4, 2).save(tmp_path / "small.json")
    with pytest.raises(FreezelabError, match="made for 4 blocks"):
        resolve(str(tmp_path / "small.json"), lm)
    beyond = Plan(L, CUT, list(range(CUT)), list(range(CUT, L + 1)), "manual", None, None, 0.5, 0.5, [])
    with pytest.raises(FreezelabError, match=r"block indices \[30\] are out of range 0..29"):
        finetune(lm, bbc, beyond, data.train, data.test, RUN, progress=False)
    with pytest.raises(FreezelabError, match="steps must be at least 1, got 0"):
        finetune(lm, *args, replace(RUN, steps=0), progress=False)
    with pytest.raises(FreezelabError, match="nothing to resume: no checkpoint at"):
        finetune(lm, *args, RUN, out=tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(FreezelabError, match="nothing to resume: pass out="):
        finetune(lm, *args, RUN, resume=True, progress=False)
    with pytest.raises(FreezelabError, match="top:31: K must be between 1 and 30"):
        resolve("top:31", lm)
