"""Architecture adapters: where each model family keeps its embeddings, blocks, final norm and head.

An adapter only names attribute paths, so one table covers every supported family. Paths are
relative to the causal-LM object (`backbone`, `head`) or to the backbone (the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from torch import nn

from .errors import FreezelabError


@dataclass(frozen=True)
class Architecture:
    """Attribute paths of one model family (HF `model_type`s that share a layout)."""

    name: str
    model_types: tuple[str, ...]
    backbone: str  # the decoder stack inside the causal LM, e.g. "model"
    blocks: str  # the ModuleList of the L blocks, inside the backbone
    embeddings: tuple[str, ...]  # token (and learned position) embeddings, inside the backbone
    final_norm: str  # N, inside the backbone
    head: str = "lm_head"  # unembedding W (V x d), inside the causal LM
    last_hidden_normed: bool = True  # HF applies N to the backbone's last hidden state

    def get(self, model: nn.Module, path: str) -> nn.Module:
        """Resolve a dotted attribute path on `model`."""
        return reduce(getattr, path.split("."), model)


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", ("llama", "mistral", "qwen2", "qwen3"), "model", "layers",
                 ("embed_tokens",), "norm"),
    Architecture("gemma3", ("gemma3_text", "gemma3", "gemma2", "gemma"), "model", "layers",
                 ("embed_tokens",), "norm"),
    Architecture("gpt2", ("gpt2",), "transformer", "h", ("wte", "wpe"), "ln_f"),
    Architecture("gpt_neox", ("gpt_neox",), "gpt_neox", "layers", ("embed_in",),
                 "final_layer_norm"),
    Architecture("opt", ("opt",), "model.decoder", "layers", ("embed_tokens", "embed_positions"),
                 "final_layer_norm"),
)


def architecture_for(model_type: str) -> Architecture:
    """The adapter for an HF `config.model_type`, or a FreezelabError naming the supported ones."""
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    supported = ", ".join(t for a in ARCHITECTURES for t in a.model_types)
    raise FreezelabError(
        f"unsupported architecture '{model_type}'. Supported model types: {supported}. "
        "Adding one means adding a line to freezelab.arch.ARCHITECTURES."
    )
