"""Architecture adapters: where each model family keeps its embeddings, blocks, final norm and head,
and how its blocks are called, so that any span of blocks runs on its own (`run_blocks`).

An adapter names attribute paths relative to the causal-LM object (`backbone`, `head`) or to the
backbone (the rest), and one `context` function: the per-block keyword arguments (causal mask,
rotary position embeddings) the family's own backbone forward builds before its loop over blocks.
This is what makes the latent-space index explicit, in the spirit of TransformerLens's
`start_at_layer` / `stop_at_layer`: block l+1 can start from a stored h_l.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Callable

import torch
from torch import nn

from freezelab.errors import FreezelabError

Context = Callable[[nn.Module, torch.Tensor, torch.Tensor], list[dict]]


def _positions(h: torch.Tensor) -> torch.Tensor:
    """(1, T) positions 0..T-1: prompts are right-padded, so every real token sits at its index."""
    return torch.arange(h.shape[1], device=h.device)[None]


def _causal(backbone: nn.Module, h: torch.Tensor, mask: torch.Tensor, sliding: bool = False):
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    make = create_sliding_window_causal_mask if sliding else create_causal_mask
    return make(config=backbone.config, inputs_embeds=h, attention_mask=mask, cache=None,
                position_ids=_positions(h))


def _rotary_context(backbone: nn.Module, h: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Llama family and GPT-NeoX: one causal mask and one rotary embedding shared by every block."""
    pos = _positions(h)
    shared = {"attention_mask": _causal(backbone, h, mask), "position_ids": pos,
              "position_embeddings": backbone.rotary_emb(h, position_ids=pos)}
    return [shared] * backbone.config.num_hidden_layers


def _gemma3_context(backbone: nn.Module, h: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Gemma 3: full and sliding-window layers, each type with its own mask and rotary base."""
    config, pos = backbone.config, _positions(h)
    if getattr(config, "use_bidirectional_attention", False):
        raise FreezelabError("bidirectional Gemma 3 variants are not causal LMs: not supported")
    masks = {"full_attention": _causal(backbone, h, mask),
             "sliding_attention": _causal(backbone, h, mask, sliding=True)}
    rotary = {t: backbone.rotary_emb(h, pos, t) for t in set(config.layer_types)}
    return [{"attention_mask": masks[t], "position_embeddings": rotary[t], "position_ids": pos}
            for t in config.layer_types[: config.num_hidden_layers]]


def _learned_position_context(backbone: nn.Module, h: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """GPT-2 and OPT: positions were added to h_0 by the embeddings; blocks need only the mask."""
    shared = {"attention_mask": _causal(backbone, h, mask), "position_ids": _positions(h)}
    return [shared] * backbone.config.num_hidden_layers


@dataclass(frozen=True)
class Architecture:
    """Attribute paths and block calling convention of one model family (HF `model_type`s)."""

    name: str
    model_types: tuple[str, ...]
    backbone: str  # the decoder stack inside the causal LM, e.g. "model"
    blocks: str  # the ModuleList of the L blocks, inside the backbone
    embeddings: tuple[str, ...]  # token (and learned position) embeddings, inside the backbone
    final_norm: str  # N, inside the backbone
    context: Context  # (backbone, h (B, T, d), attention mask (B, T)) -> kwargs of each block
    head: str = "lm_head"  # unembedding W (V x d), inside the causal LM
    after_norm: str | None = None  # a projection the backbone applies after N (OPT's project_out)

    def get(self, model: nn.Module, path: str) -> nn.Module:
        """Resolve a dotted attribute path on `model`."""
        return reduce(getattr, path.split("."), model)


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", ("llama", "mistral", "qwen2", "qwen3"), "model", "layers",
                 ("embed_tokens",), "norm", _rotary_context),
    Architecture("gemma3", ("gemma3_text",), "model", "layers", ("embed_tokens",), "norm",
                 _gemma3_context),
    Architecture("gpt2", ("gpt2",), "transformer", "h", ("wte", "wpe"), "ln_f", _learned_position_context),
    Architecture("gpt_neox", ("gpt_neox",), "gpt_neox", "layers", ("embed_in",),
                 "final_layer_norm", _rotary_context),
    Architecture("opt", ("opt",), "model.decoder", "layers", ("embed_tokens", "embed_positions"),
                 "final_layer_norm", _learned_position_context, after_norm="project_out"),
)


def architecture_for(model_type: str) -> Architecture:
    """The adapter for an HF `config.model_type`, or a FreezelabError naming the supported ones."""
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    supported = ", ".join(t for a in ARCHITECTURES for t in a.model_types)
    raise FreezelabError(
        f"unsupported architecture '{model_type}'. Supported model types: {supported}. "
        "Adding one means adding a line to freezelab.model.arch.ARCHITECTURES."
    )
