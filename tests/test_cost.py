"""The cost ledger (step 6) on tiny random twins: hand counts from shapes, what each part adds, the
memory terms, the nominal curve, the compatible entry points and the stored device constants."""

import importlib
import json

import numpy as np
import pytest
import torch
import transformers

from freezelab.costmodel.device import Device, FLOPS_ONLY, device_constants
from freezelab.costmodel.ledger import cost, curve, cut_cost_curve, ledger, subset_ratios
from freezelab.costmodel.shapes import (ADAMW_FLOPS, ADAMW_STREAMS, ADAMW_TEMPS, Shape, Training, attention_width,
                                        cut_training, full_training)
from freezelab.costmodel.nominal import nominal_cost_curve
from freezelab.model.encode import Encoded, collate
from freezelab.train.finetune import batch_loss
from freezelab.train.freeze import freeze
from freezelab.method.gains import Gains
from freezelab.model.models import load_model
from freezelab.method.plan import Plan, plan
from freezelab.train.strategies import resolve

ledger_module = importlib.import_module("freezelab.costmodel.ledger")
device_module = importlib.import_module("freezelab.costmodel.device")
shapes_module = importlib.import_module("freezelab.costmodel.shapes")
T, B = 32, 4  # tokens per sequence, sequences per step
DEVICE = Device("test", 1e10, 1e9)  # fixed constants: no calibration in tests
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256)


@pytest.fixture(scope="module")
def llama():
    return load_model("random:smollm2-135m", device="cpu", dtype="fp32", **TINY)


@pytest.fixture(scope="module")
def gemma():
    return load_model("random:gemma3-270m", device="cpu", dtype="fp32", hidden_size=64, intermediate_size=128,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                      vocab_size=1000, max_position_embeddings=256)


def parts(l):
    return {p.name: p for p in l.parts}


def test_block_and_head_flops_match_hand_count(llama):
    shape = Shape.of(llama)
    d, kv, ff = 64, 2 * 16, 128  # 2 key/value heads of width 16
    weights = d * d + d * kv + d * kv + d * d + 3 * d * ff  # q k v o, gate up down
    assert shape.block_weights == (weights,) * 4
    assert attention_width(llama.model.config) == 64
    l = parts(ledger(shape, cut_training(4, 0), T, B, label_rows=5))
    assert l["block matmuls forward"].flops == 4 * 2 * weights * B * T
    assert l["attention forward"].flops == 4 * 4 * B * T**2 * 64
    assert l["block matmuls backward (inputs)"].flops == l["block matmuls backward (weights)"].flops
    assert l["attention backward"].flops == 2 * l["attention forward"].flops
    assert l["head forward + loss"].flops == 2 * B * 5 * d  # label rows at the prediction position only
    # cut 2: backward through blocks 3..4 only; cached: blocks 1..2 do not run
    cut = parts(ledger(shape, cut_training(4, 2), T, B, label_rows=5, cached=True))
    assert cut["block matmuls forward"].flops == 2 * 2 * weights * B * T
    assert cut["block matmuls backward (weights)"].flops == 2 * 2 * weights * B * T
    assert "cache read (h_k)" in cut and "embedding lookup" not in cut


def test_gpt2_conv1d_weights_are_counted():
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000)
    lm = load_model("random:gpt2", device="cpu", dtype="fp32", **config.to_diff_dict())
    assert Shape.of(lm).block_weights == (64 * 192 + 64 * 64 + 64 * 256 + 256 * 64,) * 2
    assert Shape.of(lm).embedding_params == 1000 * 64 + 1024 * 64  # token and position embeddings


def test_full_costs_cut0_plus_embedding_gradient_and_adamw(llama):
    shape = Shape.of(llama)
    full = ledger(shape, full_training(4), T, B, label_rows=5, device=DEVICE)
    cut0 = ledger(shape, cut_training(4, 0), T, B, label_rows=5, device=DEVICE)
    f, c = parts(full), parts(cut0)
    extra = {name for name in f if f[name] != c.get(name)}
    assert extra == {"embedding gradient (dense V x d)", "AdamW", "head backward"}
    V, d = 1000, 64
    assert f["embedding gradient (dense V x d)"].flops == B * T * d + V * d  # scatter-add + tied sum
    assert f["AdamW"].flops - c["AdamW"].flops == ADAMW_FLOPS * V * d
    assert f["AdamW"].nbytes - c["AdamW"].nbytes == ADAMW_STREAMS * V * d * 4
    assert f["head backward"].flops == 2 * c["head backward"].flops  # the tied head's weight gradient
    assert full.seconds > cut0.seconds
    assert full.trainable_params - cut0.trainable_params == V * d


def test_label_rows_head_cheaper_than_full_vocabulary(llama):
    shape = Shape.of(llama)
    rows = parts(ledger(shape, cut_training(4, 2), T, B, label_rows=5))["head forward + loss"]
    vocab = parts(ledger(shape, cut_training(4, 2), T, B))["head forward + loss"]
    assert vocab.flops == 2 * B * T * 1000 * 64 and rows.flops < vocab.flops / 1000
    assert rows.nbytes < vocab.nbytes


def test_memory_terms_add_up(llama):
    shape = Shape.of(llama)
    for train in (full_training(4), cut_training(4, 2), Training((1, 3), False, False, True)):
        for cached in (False, True):
            m = ledger(shape, train, T, B, label_rows=5, cached=cached).memory
            assert m.grads == ledger(shape, train, T, B, 5).trainable_params * 4
            assert m.optimizer == 2 * m.grads
            assert m.peak == m.params + m.cache + m.optimizer + max(m.activations, m.grads + m.temporaries)
            assert m.added == m.peak - m.params
            assert m.params == shape.total_params * 4 == llama.num_params * 4
    cut = ledger(shape, cut_training(4, 2), T, B, 5, cached=True).memory
    assert cut.cache == B * T * 64 * 4
    # activations: the trained suffix's saved tensors grow with the number of trained blocks
    assert ledger(shape, cut_training(4, 1), T, B, 5).memory.activations > cut.activations


def _saved_per_token(lm, trained: list[int]) -> float:
    """Elements per token that autograd keeps for a step training blocks `trained` (0-based)."""
    ids = torch.randint(lm.vocab_size, (2, T))
    enc = Encoded(ids.tolist(), torch.tensor([1, 2]), torch.arange(5), torch.tensor([1, 2]))
    batch = collate(enc, range(2), 0)
    L = lm.num_layers
    plan = Plan(L, trained[0], [i for i in range(L) if i not in trained], trained, "manual", None, None, 1.0, 1.0, [])
    freeze(lm, plan)
    weights = {p.untyped_storage().data_ptr() for p in lm.model.parameters()}
    saved = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in weights:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        batch_loss(lm, enc, batch)
    lm.model.requires_grad_(False)
    return sum(saved.values()) / 4 / (2 * T)


@pytest.mark.parametrize("fixture", ["llama", "gemma"])
def test_saved_activations_match_autograd(request, fixture):
    """The per-token count of saved activations matches what autograd keeps for one trained block,
    and what frozen blocks between two trained ones do not keep (weight gradients' inputs)."""
    lm = request.getfixturevalue(fixture)
    L, shape = lm.num_layers, Shape.of(lm)
    assert shape.block_saved[-1] == pytest.approx(_saved_per_token(lm, [L - 1]), rel=0.08)
    not_kept = _saved_per_token(lm, list(range(L))) - _saved_per_token(lm, [0, L - 1])
    predicted = sum(sum(shape.block_weight_saves[i]) for i in range(1, L - 1))
    assert predicted == pytest.approx(not_kept, rel=0.2) and not_kept > 0.25 * sum(shape.block_saved[1:-1])


def test_nominal_curve_is_the_textbook_formula_and_the_ledgers():
    ratio, cached = nominal_cost_curve(6)
    k = np.arange(6)
    np.testing.assert_allclose(ratio, (6 + 2 * (6 - k)) / 18)
    np.testing.assert_allclose(cached, (6 - k) / 6)
    for L in (1, 2, 6, 30):  # the closed form is the ledger's price of L equal blocks
        for mine, ledgers in zip(nominal_cost_curve(L), curve(Shape.nominal(L), seq_len=1, batch_size=1, label_rows=0)):
            np.testing.assert_allclose(mine, ledgers, rtol=1e-12)
    assert subset_ratios(4, [2, 3]) == pytest.approx((ratio_at(4, 2), (4 - 2) / 4))
    assert subset_ratios(4, [0, 2]) == pytest.approx(((4 + 4 + 2) / 12, (4 + 4 + 2) / 12))
    assert Plan.from_cut(6, 3).cost_ratio == pytest.approx(ratio[3])


def ratio_at(L, k):
    return (L + 2 * (L - k)) / (3 * L)


def test_cut_cost_curve_shape_and_order(llama):
    ratio, cached = cut_cost_curve(llama, T, label_rows=5, device=DEVICE)
    assert ratio.shape == cached.shape == (4,)
    assert np.all(np.diff(ratio) < 0) and np.all(np.diff(cached) < 0)
    assert np.all(cached <= ratio + 1e-12) and cached[0] == ratio[0]
    assert ratio[0] < 1  # cut 0 keeps the embeddings frozen; full fine-tuning trains them


def test_cost_entry_point_and_plans(llama):
    chosen = Plan.from_cut(4, 1)
    c = cost(llama, chosen, T, B, label_rows=5, device=DEVICE)
    ratio, cached = cut_cost_curve(llama, T, label_rows=5, batch_size=B, device=DEVICE)
    assert c.cost_ratio == pytest.approx(ratio[1]) and c.cost_ratio_cached == pytest.approx(cached[1])
    assert c.trainable_params == freeze(llama, chosen)
    full = cost(llama, resolve("full", llama), T, B, label_rows=5, device=DEVICE)
    assert full.cost_ratio == 1.0 and full.trainable_params == freeze(llama, resolve("full", llama))
    lora = cost(llama, resolve("lora", llama), T, B, label_rows=5, device=DEVICE)
    assert lora.trainable_params == 4 * 8 * (64 + 64 + 2 * (64 + 32) + 64 + 64 + 2 * (64 + 128) + 128 + 64)
    assert 0 < lora.cost_ratio < 1
    d = c.to_dict()
    assert {"cost_ratio", "cost_ratio_cached", "trainable_share", "activation_bytes", "ledger"} <= set(d)
    assert json.loads(json.dumps(d))["ledger"]["parts"]
    excess = np.array([0.0, 0.0, 1.0, 0.0])
    curve = (ratio, cached)
    assert plan(Gains(excess, np.zeros(4), excess), cost_curve=curve).cost_ratio == ratio[3]
    llama.model.requires_grad_(False)


def test_roofline_seconds(llama):
    shape = Shape.of(llama)
    l = ledger(shape, cut_training(4, 2), T, B, 5, device=DEVICE)
    assert l.seconds == pytest.approx(sum(max(p.flops / 1e10, p.nbytes / 1e9) for p in l.parts))
    assert ledger(shape, cut_training(4, 2), T, B, 5).seconds == l.flops  # FLOPS_ONLY
    assert FLOPS_ONLY.seconds(5.0, 1e12) == 5.0
    assert "AdamW" in l.table() and "peak" in l.table()


def test_device_constants_are_measured_once_and_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEZELAB_CACHE", str(tmp_path))
    calls = []

    def fake(device, dtype):
        calls.append(device)
        return Device(device_module.device_key(device, dtype), 2e10, 3e9)

    monkeypatch.setattr(device_module, "calibrate", fake)
    first = device_constants("cpu", torch.float32)
    again = device_constants("cpu", torch.float32)
    assert first == again and len(calls) == 1
    stored = json.loads((tmp_path / "devices.json").read_text())
    assert stored[first.name] == {"flops": 2e10, "bandwidth": 3e9, "fault": None}
    device_constants("cpu", torch.float32, refresh=True)
    assert len(calls) == 2


@pytest.mark.slow
def test_calibration_measures_the_device():
    # its time budget is a benchmark's business (no timed assertions in tests): here, sane constants
    device = device_module.calibrate("cpu", torch.float32, budget=1.0)
    assert 1e8 < device.flops < 1e14 and 1e7 < device.bandwidth < 1e13
    assert device.name == device_module.device_key(torch.device("cpu"), torch.float32)


def test_fresh_memory_pays_page_faults_on_a_cpu_only(llama, monkeypatch):
    """Tensors of FRESH_MIN_BYTES or more allocated each step (dense embedding gradients, AdamW's
    temporaries of large parameters) cost `fault` seconds per byte on top of the roofline."""
    for module in (shapes_module, ledger_module):
        monkeypatch.setattr(module, "FRESH_MIN_BYTES", 0)  # every tensor counts as large
    shape = Shape.of(llama)
    cpu, gpu = Device("cpu", 1e10, 1e9, fault=1e8), Device("gpu", 1e10, 1e9)
    full = ledger(shape, full_training(4), T, B, 5, device=cpu)
    f = parts(full)
    assert f["embedding gradient (dense V x d)"].fresh == 3 * shape.vocab * shape.hidden * 4  # tied: 3 tensors
    assert f["AdamW"].fresh == ADAMW_TEMPS * (full.trainable_params - shape.final_norm_params) * 4  # blocks, embedding
    fresh = sum(p.fresh for p in full.parts)
    no_faults = ledger(shape, full_training(4), T, B, 5, device=gpu)
    assert full.seconds - no_faults.seconds == pytest.approx(fresh / 1e8)
    cut = parts(ledger(shape, cut_training(4, 2), T, B, 5, device=cpu))
    assert "embedding gradient (dense V x d)" not in cut and 0 < cut["AdamW"].fresh < f["AdamW"].fresh
    for module in (shapes_module, ledger_module):
        monkeypatch.setattr(module, "FRESH_MIN_BYTES", 2**40)  # nothing is large
    assert sum(p.fresh for p in ledger(Shape.of(llama), full_training(4), T, B, 5, device=cpu).parts) == 0
