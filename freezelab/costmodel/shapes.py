"""What the cost ledger reads from a model: sizes only, no weights (`Shape`), and what a strategy
trains (`Training`). The conventions are stated in `costmodel.ledger`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from freezelab.model.adapter import LORA_TARGETS

ADAMW_FLOPS = 10  # per trained parameter: lerp 2, mul 1, addcmul 2, sqrt 1, div 1, add 1, addcdiv 2
# tensors of a parameter's size read or written by one foreach AdamW step (weight decay 0):
# lerp m (3), mul v (2), addcmul v (3), sqrt -> t (2), div t (2), add t (2), addcdiv p (4)
ADAMW_STREAMS = 18
ADAMW_TEMPS = 2  # parameter-sized temporaries one foreach AdamW step allocates (sqrt(v), then its quotient; torch.profiler)
FRESH_MIN_BYTES = 32 * 2**20  # glibc's largest dynamic mmap threshold: larger tensors are mapped anew each time


def _text_config(config):
    """The language model's part of an HF config (itself unless the model is multimodal)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_width(config) -> int:
    """Query heads * head dimension of an HF config (hidden_size unless the config sets head_dim)."""
    config = _text_config(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_attention_heads * head_dim


def _linears(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The block's own projections (nn.Linear / GPT-2 Conv1D), LoRA adapters excluded."""
    return [(n.removesuffix(".base_layer"), m) for n, m in block.named_modules()
            if isinstance(m, (nn.Linear, Conv1D)) and "lora_" not in n]


def _dims(m: nn.Module) -> tuple[int, int]:
    """(in, out) features of a projection."""
    w = m.weight
    return (w.shape[0], w.shape[1]) if isinstance(m, Conv1D) else (w.shape[1], w.shape[0])


def _large(params: Iterable[torch.Tensor], dtype_bytes: int) -> int:
    """Elements of the parameters of at least FRESH_MIN_BYTES."""
    return sum(p.numel() for p in params if p.numel() * dtype_bytes >= FRESH_MIN_BYTES)


# projections that read the same tensor as another one (q_proj's, gate_proj's input)
SHARED_INPUT = ("k_proj", "v_proj", "up_proj")


def _weight_saves(block: nn.Module, config) -> tuple[int, int]:
    """Elements per token of `_saved_per_token` that only weight gradients need: the distinct
    inputs of the projections, and the normalised outputs of the norms (d per norm over d; queries
    and keys with query/key norms). A frozen block in the backward graph keeps neither (autograd
    hooks on the Llama and Gemma-3 test twins: within 20% of this count)."""
    config = _text_config(config)
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * head_dim
    norms = [m for m in block.modules() if "norm" in type(m).__name__.lower() and getattr(m, "weight", None) is not None]
    qk_norm = any(m.weight.numel() == head_dim and head_dim != d for m in norms)
    inputs = sum(_dims(m)[0] for n, m in _linears(block) if n.rsplit(".", 1)[-1] not in SHARED_INPUT)
    outputs = d * sum(m.weight.numel() == d for m in norms) + (attention_width(config) + kv if qk_norm else 0)
    return inputs, outputs


def _saved_per_token(block: nn.Module, config) -> int:
    """Activation elements one block keeps for its backward, per token (counted on HF's Llama and
    Gemma-3 blocks with torch's saved-tensor hooks, within 2%): the input and output of every norm
    over d, two more d-wide tensors (residual stream, attention output), queries, keys and values
    twice (projections and attention; four times with query/key norms), and the MLP's hidden width
    four times when gated (gate, its activation, up, their product), twice otherwise."""
    config = _text_config(config)
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * head_dim
    q = config.num_attention_heads * head_dim
    norms = [m for m in block.modules() if "norm" in type(m).__name__.lower() and getattr(m, "weight", None) is not None]
    d_norms = sum(m.weight.numel() == d for m in norms)
    qk_norm = any(m.weight.numel() == head_dim and head_dim != d for m in norms)
    names = [n for n, _ in _linears(block)]
    gated = any(n.endswith("gate_proj") for n in names)
    widths = [_dims(m)[1] for _, m in _linears(block)]
    ff = max(widths)  # the MLP's hidden width is the widest projection output (c_attn aside: 3d < 4d)
    return 2 * d * (1 + d_norms) + 2 * (q + kv) * (2 if qk_norm else 1) + (4 if gated else 2) * ff


@dataclass(frozen=True)
class Shape:
    """What the ledger reads from a model: sizes only, no weights. Counts are elements."""

    num_layers: int
    hidden: int  # d
    vocab: int  # V, rows of the head
    block_weights: tuple[int, ...]  # per block: weights of its projections (multiply-adds per token)
    block_params: tuple[int, ...]  # per block: every parameter (projections, norms, biases)
    block_saved: tuple[int, ...]  # per block: activation elements kept for backward, per token
    block_weight_saves: tuple[tuple[int, int], ...]  # per block: of those, (projection inputs, norm outputs)
    block_large: tuple[int, ...]  # per block: elements of its parameters of FRESH_MIN_BYTES or more
    lora_widths: tuple[int, ...]  # per block: sum of in + out features of the projections LoRA adapts
    attention_width: int  # query heads * head dim
    embedding_params: int  # token (and position) embeddings
    embedding_large: int  # elements of embedding tensors of FRESH_MIN_BYTES or more
    final_norm_params: int
    head_params: int  # 0 when the head is tied to the embedding
    tied: bool
    dtype_bytes: int  # bytes per element of the weights and activations

    @property
    def total_params(self) -> int:
        return sum(self.block_params) + self.embedding_params + self.final_norm_params + self.head_params

    @classmethod
    def of(cls, lm) -> Shape:
        """The shape of a loaded model (`models.LoadedModel` or anything with its attributes)."""
        arch = getattr(getattr(lm, "arch", None), "name", None)
        targets = LORA_TARGETS.get(arch, ())
        config = lm.model.config
        embeddings = {id(p): p for e in lm.embeddings for p in e.parameters()}
        head = lm.lm_head.weight
        dt = head.element_size()
        return cls(
            num_layers=len(lm.blocks),
            hidden=head.shape[1],
            vocab=head.shape[0],
            block_weights=tuple(sum(m.weight.numel() for _, m in _linears(b)) for b in lm.blocks),
            block_params=tuple(sum(p.numel() for n, p in b.named_parameters() if "lora_" not in n)
                               for b in lm.blocks),
            block_saved=tuple(_saved_per_token(b, config) for b in lm.blocks),
            block_weight_saves=tuple(_weight_saves(b, config) for b in lm.blocks),
            block_large=tuple(_large((p for n, p in b.named_parameters() if "lora_" not in n), dt)
                              for b in lm.blocks),
            lora_widths=tuple(sum(sum(_dims(m)) for n, m in _linears(b) if n.rsplit(".", 1)[-1] in targets)
                              for b in lm.blocks),
            attention_width=attention_width(config),
            embedding_params=sum(p.numel() for p in embeddings.values()),
            embedding_large=_large(embeddings.values(), dt),
            final_norm_params=sum(p.numel() for p in lm.final_norm.parameters()),
            head_params=0 if lm.tied else sum(p.numel() for p in lm.lm_head.parameters()),
            tied=lm.tied,
            dtype_bytes=dt,
        )

    @classmethod
    def nominal(cls, num_layers: int) -> Shape:
        """L equal blocks of one weight each and nothing else (no attention, head, embeddings or
        parameters to update): priced in FLOPs only, the ledger gives cut k the textbook ratio
        (L + 2 (L - k)) / 3L, and (L - k) / L with its prefix cached."""
        L = num_layers
        return cls(L, 0, 0, (1,) * L, (0,) * L, (0,) * L, ((0, 0),) * L, (0,) * L, (0,) * L, 0, 0, 0, 0, 0, True, 4)


@dataclass(frozen=True)
class Training:
    """What a strategy trains, as the ledger needs it (built from a `Plan` by `training`)."""

    trained: tuple[int, ...]  # 0-based blocks whose weights (or adapters) get gradients
    embeddings: bool  # token embeddings trained (a tied head with them)
    head: bool  # the head's weight gets a gradient (tied: follows the embeddings)
    final_norm: bool
    lora_rank: int | None = None  # LoRA adapters of this rank in the trained blocks, base weights frozen
    name: str = "plan"


def training(plan, tied: bool) -> Training:
    """The `Training` of a `method.plan.Plan` (LoRA of rank `plan.lora.r` when set)."""
    lora = plan.lora
    name = plan.extras.get("strategy") or plan.rule
    return Training(tuple(sorted(plan.trained)), not plan.freeze_embeddings,
                    (not plan.freeze_embeddings) if tied else plan.train_head, plan.train_final_norm,
                    lora.r if lora is not None else None, name)


def full_training(num_layers: int) -> Training:
    """The reference: every block, the embeddings, the head and the final norm trained."""
    return Training(tuple(range(num_layers)), True, True, True, None, "full")


def cut_training(num_layers: int, k: int) -> Training:
    """Cut k: blocks k+1..L and the final norm trained, embeddings (and a tied head) frozen."""
    return Training(tuple(range(k, num_layers)), False, False, True, None, f"cut {k}")
