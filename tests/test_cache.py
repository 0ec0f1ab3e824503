"""The latent cache: a cut-k run from stored h_k equals the uncached run, on every family.

Tiny random models of each supported family, right-padded prompts of unequal length, fp32: the
loss and every trained parameter's gradient from the cache match the full forward's (atol 1e-5).
"""

import pytest
import torch

from freezelab.train.cache import build_cache
from freezelab.model.encode import Encoded, collate
from freezelab.errors import FreezelabError
from freezelab.train.finetune import batch_loss
from freezelab.train.freeze import freeze
from freezelab.method.plan import Plan

from test_models import TINY, tiny

LENGTHS = (7, 3, 5, 6)


def encoded(vocab: int, classify: bool = True) -> Encoded:
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in LENGTHS]
    if classify:
        label_ids = torch.tensor([11, 17, 23])
        labels = torch.tensor([0, 2, 1, 2])
        return Encoded(prompts, label_ids[labels], label_ids, labels)
    return Encoded(prompts, torch.randint(3, vocab, (len(LENGTHS),), generator=g), None, None)


def family(name: str):
    lm = tiny(name)
    if name == "gemma3-270m":  # both attention types, with a window shorter than the prompts
        lm = tiny_gemma_mixed()
    return lm


def tiny_gemma_mixed():
    from freezelab.model.arch import architecture_for
    from freezelab.model.models import LoadedModel, random_model

    model = random_model("gemma3-270m", **TINY["gemma3-270m"], sliding_window=3,
                         layer_types=["sliding_attention", "full_attention", "sliding_attention"]).eval()
    return LoadedModel("random:gemma3-270m", model, None, architecture_for(model.config.model_type))


def grads(lm, enc, k, cache=None):
    freeze(lm, Plan.from_cut(lm.num_layers, k))
    index = list(range(len(enc)))
    batch = collate(enc, index, 0)
    h = None if cache is None else cache.states(k, index)
    loss = batch_loss(lm, enc, batch, h, k if cache is not None else 0)[0].mean()
    lm.model.zero_grad(set_to_none=True)
    loss.backward()
    out = {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.requires_grad}
    lm.model.requires_grad_(False)
    return loss.detach(), out


@pytest.mark.slow
@pytest.mark.parametrize("classify", [True, False], ids=["classification", "lm"])
@pytest.mark.parametrize("name", list(TINY))
def test_cached_suffix_equals_full_forward(name, classify):
    lm = family(name)
    enc = encoded(lm.vocab_size, classify)
    cache = build_cache(lm, enc, progress=False)
    assert cache.data.shape == (lm.num_layers + 1, sum(LENGTHS), lm.hidden_size)
    for k in range(lm.num_layers):
        loss_ref, g_ref = grads(lm, enc, k)
        loss, g = grads(lm, enc, k, cache)
        assert torch.allclose(loss, loss_ref, atol=1e-5), (k, loss, loss_ref)
        assert g.keys() == g_ref.keys() and g  # the same parameters get gradients
        for n in g:
            assert torch.allclose(g[n], g_ref[n], atol=1e-5), (k, n)


def test_trace_from_cache_equals_the_trace(tmp_path):
    from freezelab.method.trace import trace_encoded

    lm = family("smollm2-135m")
    lm.tokenizer = type("T", (), {"pad_token_id": 0})()
    enc = encoded(lm.vocab_size)
    cache = build_cache(lm, enc, progress=False)
    assert torch.allclose(cache.trace(enc).hidden, trace_encoded(lm, enc, progress=False).hidden, atol=1e-6)


def test_disk_cache_is_keyed_by_model_weights_and_examples(tmp_path):
    lm = family("smollm2-135m")
    enc = encoded(lm.vocab_size)
    a = build_cache(lm, enc, max_ram_mb=0, directory=tmp_path, progress=False)
    assert a.path is not None and a.path.exists()  # beyond the RAM limit: memory-mapped
    again = build_cache(lm, enc, max_ram_mb=0, directory=tmp_path, progress=False)
    assert again.fingerprint == a.fingerprint and torch.equal(again.data, a.data)
    other = Encoded(enc.prompts[:2] + [enc.prompts[3], enc.prompts[2]], enc.targets, enc.label_ids, enc.labels)
    assert build_cache(lm, other, max_ram_mb=0, directory=tmp_path, progress=False).fingerprint != a.fingerprint
    with torch.no_grad():
        lm.blocks[0].mlp.up_proj.weight.add_(0.01)  # other weights, same name and shapes
    changed = build_cache(lm, enc, max_ram_mb=0, directory=tmp_path, progress=False)
    assert changed.fingerprint != a.fingerprint
    assert not torch.equal(changed.data[1], a.data[1])
    bf16 = build_cache(lm, enc, dtype="bf16", progress=False)
    assert bf16.data.dtype == torch.bfloat16 and bf16.fingerprint != a.fingerprint


def test_cache_refuses_a_missing_latent_space():
    lm = family("gpt2")
    enc = encoded(lm.vocab_size)
    cache = build_cache(lm, enc, layers=(2,), progress=False)
    with pytest.raises(FreezelabError, match="latent space 1 is not in this cache"):
        cache.states(1, [0])
    with pytest.raises(FreezelabError, match="must be in 0..3"):
        build_cache(lm, enc, layers=(7,), progress=False)
