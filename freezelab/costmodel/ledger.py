"""Step 6 of METHOD.md: the cost ledger, freezelab's one cost model.

For one optimizer step of a training strategy (a `Plan`: full fine-tuning, cut k, cut k on a cached
prefix, LoRA, LoRA inside a plan, LISA's or gradnorm's block subsets, a random cut) the ledger lists
every part of the work with its FLOPs and the bytes it moves, and the memory the step holds at its
peak. Seconds come from a roofline: each part takes max(FLOPs / FLOP/s, bytes / (bytes/s)), with
two constants per device measured once by a micro-benchmark (`device_constants`). On a CPU a third
constant prices the first touch of freshly mapped memory (see `FRESH_MIN_BYTES`).

Conventions (all from shapes, never from timings of the model):
- a matrix product costs 2 FLOPs per multiply-add; a block's backward costs one forward of its
  matmuls for the input gradients, one more for the weight gradients of trained weights, and two
  forwards of its attention (gradients of queries, keys and values);
- attention scores are counted over the full T x T square (no discount for the causal mask);
- norms, activations functions and residual adds are not counted as FLOPs, but their saved tensors
  are counted as memory and bytes;
- AdamW (torch's foreach implementation) does ADAMW_FLOPS per trained parameter and streams
  ADAMW_STREAMS tensors of that parameter's size through memory;
- a trained embedding gets a dense V x d gradient; with a tied head, the head's gradient is a
  second dense V x d tensor added into the first;
- what a block keeps for backward depends on what it trains: a frozen block inside the backward
  graph (below a trained one) keeps neither its projections' inputs nor its norms' normalised
  outputs (only weight gradients need them); a LoRA block keeps the inputs (its adapters need
  them) but not the norms' outputs;
- tensors of at least FRESH_MIN_BYTES allocated anew every step are "fresh": on a CPU glibc maps
  them anew and returns them to the OS when freed, so each costs its page faults again
  (`Device.fault`): the dense embedding gradients and AdamW's temporaries of large parameters.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from freezelab.io import atomic_write_json
from freezelab.model.adapter import LORA_TARGETS

ADAMW_FLOPS = 10  # per trained parameter: lerp 2, mul 1, addcmul 2, sqrt 1, div 1, add 1, addcdiv 2
# tensors of a parameter's size read or written by one foreach AdamW step (weight decay 0):
# lerp m (3), mul v (2), addcmul v (3), sqrt -> t (2), div t (2), add t (2), addcdiv p (4)
ADAMW_STREAMS = 18
ADAMW_TEMPS = 2  # parameter-sized temporaries one foreach AdamW step allocates (sqrt(v), then its quotient; torch.profiler)
FRESH_MIN_BYTES = 32 * 2**20  # glibc's largest dynamic mmap threshold: larger tensors are mapped anew each time
CALIBRATION_SECONDS = 6.0  # the micro-benchmark's budget (about 9 s in all with its set-up)
MB = 2**20
TRAIN_BATCH = 8  # sequences per step at which a plan is priced (finetune's default batch)


# --- shapes ---------------------------------------------------------------------------------------


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


# --- the device -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """The roofline constants of a device in one dtype (and a CPU's page-fault rate)."""

    name: str
    flops: float  # FLOP/s sustained by a large matrix product
    bandwidth: float  # bytes/s sustained by AdamW over weight-sized tensors (read + write counted)
    fault: float | None = None  # bytes/s of first touch of freshly mapped memory; None: free (a GPU's caching allocator)

    def seconds(self, flops: float, nbytes: float, fresh: float = 0.0) -> float:
        """Roofline time of work of `flops` FLOPs moving `nbytes` bytes, plus the page faults of
        `fresh` bytes of newly mapped memory, in seconds."""
        faults = fresh / self.fault if fresh and self.fault else 0.0
        return max(flops / self.flops, nbytes / self.bandwidth) + faults


FLOPS_ONLY = Device("FLOPs only", 1.0, math.inf)  # seconds = FLOPs: the nominal curve's pricing


def device_key(device: torch.device | str, dtype: torch.dtype) -> str:
    """A stable name for the constants of `device` in `dtype`: the CPU model and torch's threads, or
    the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)} {dtype}"
    return f"{device.type} {cpu_model()} x{torch.get_num_threads()} threads {dtype}"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else (platform.processor() or platform.machine())


def _rate(work: float, fn, budget: float, device: torch.device) -> float:
    """Median of work / seconds over repeated calls of `fn` within `budget` seconds (at least 3)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up
    sync()
    rates, end = [], time.perf_counter() + budget
    while len(rates) < 3 or time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        sync()
        rates.append(work / (time.perf_counter() - start))
    return float(np.median(rates))


def calibrate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              budget: float = CALIBRATION_SECONDS) -> Device:
    """Measure FLOP/s (n x n matrix products), bytes/s (AdamW steps over 64 weight-sized
    parameters of 1 Mi elements, far more than the caches hold; ADAMW_STREAMS tensors of their size each) and, on a CPU, the page-fault rate (a
    fresh 256 MiB tensor filled, minus the same fill in place) on `device` in `dtype`, in about
    `budget` seconds.

    Bytes/s is taken from AdamW, training's main memory-bound work, over tensors below
    FRESH_MIN_BYTES, whose temporaries the allocator reuses; larger tensors pay `fault` on top.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = 2048 if cuda else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    flops = _rate(2.0 * n**3, lambda: a @ b, budget / 3, device)
    params = [nn.Parameter(torch.zeros(MB, device=device, dtype=dtype)) for _ in range(64)]  # 64 x 4 MiB (fp32)
    for p in params:
        p.grad = torch.ones_like(p)
    adamw = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    work = ADAMW_STREAMS * sum(p.numel() for p in params) * params[0].element_size()
    bandwidth = _rate(work, adamw.step, budget / 3, device)
    if cuda:
        return Device(device_key(device, dtype), flops, bandwidth)
    size = 256 * MB // torch.empty((), dtype=dtype).element_size()
    kept = torch.empty(size, dtype=dtype)
    in_place = 1.0 / _rate(1.0, lambda: kept.fill_(1), budget / 6, device)
    fresh = 1.0 / _rate(1.0, lambda: torch.empty(size, dtype=dtype).fill_(1), budget / 6, device)
    fault = 256 * MB / (fresh - in_place) if fresh > in_place else None
    return Device(device_key(device, dtype), flops, bandwidth, fault)


def _store() -> Path:
    from freezelab.model.models import cache_dir

    return cache_dir() / "devices.json"


def device_constants(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     refresh: bool = False) -> Device:
    """The stored constants of this device and dtype (`$FREEZELAB_CACHE/devices.json`); measured
    by `calibrate` (under 10 s) the first time, or again with `refresh`."""
    key = device_key(device, dtype)
    path = _store()
    stored = json.loads(path.read_text()) if path.exists() else {}
    if key in stored and "fault" in stored[key] and not refresh:  # no "fault": measured the old way
        return Device(key, **stored[key])
    measured = calibrate(device, dtype)
    stored[key] = {"flops": measured.flops, "bandwidth": measured.bandwidth, "fault": measured.fault}
    atomic_write_json(path, stored, newline=True)
    return measured


# --- the ledger -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One part of a step's work."""

    name: str
    flops: float  # FLOPs per optimizer step
    nbytes: float  # bytes moved per optimizer step
    fresh: float = 0.0  # bytes of tensors of FRESH_MIN_BYTES or more allocated anew (page faults on a CPU)


@dataclass(frozen=True)
class Memory:
    """What one optimizer step holds at its peak, in bytes.

    The step's peak is params + cache + optimizer + max(activations, grads + temporaries): saved
    activations live during forward and backward, gradients and AdamW's temporaries after them.
    """

    params: float  # every weight of the model (and LoRA adapters), loaded before the step
    grads: float  # one gradient per trained parameter
    optimizer: float  # AdamW's two moments per trained parameter
    activations: float  # tensors saved for backward (trained suffix, head and loss, cache read)
    temporaries: float  # AdamW's sqrt(v) buffer, or a second dense V x d embedding gradient if larger
    cache: float  # the batch's h_k copied out of the latent cache each step (0 without cache)

    @property
    def peak(self) -> float:
        return self.params + self.cache + self.optimizer + max(self.activations, self.grads + self.temporaries)

    @property
    def added(self) -> float:
        """The peak over the loaded model (what a step adds to it)."""
        return self.peak - self.params

    def to_dict(self) -> dict:
        return {**asdict(self), "peak": self.peak, "added": self.added}


@dataclass(frozen=True)
class Ledger:
    """Every part of one optimizer step of `strategy` and its memory, priced on `device`."""

    strategy: str
    seq_len: int
    batch_size: int
    label_rows: int | None  # classification over these head rows at one position; None: LM loss
    cached: bool  # the frozen prefix's output read from a latent cache
    parts: tuple[Part, ...]
    memory: Memory
    trainable_params: int
    device: Device

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.parts)

    @property
    def nbytes(self) -> float:
        return sum(p.nbytes for p in self.parts)

    def part_seconds(self, part: Part) -> float:
        return self.device.seconds(part.flops, part.nbytes, part.fresh)

    @property
    def seconds(self) -> float:
        """Predicted seconds per optimizer step (roofline, summed over the parts)."""
        return sum(self.part_seconds(p) for p in self.parts)

    def table(self) -> str:
        """The parts with their FLOPs, bytes, predicted seconds and share of the step, then memory."""
        total = self.seconds or 1.0
        rows = [f"{self.strategy}{' (cached prefix)' if self.cached else ''}: batch {self.batch_size} x "
                f"{self.seq_len} tokens, {'LM loss' if self.label_rows is None else f'{self.label_rows} label rows'}; "
                f"{self.device.name}",
                f"{'part':<36} {'GFLOP':>9} {'MB moved':>9} {'MB fresh':>9} {'seconds':>9} {'share':>6}"]
        for p in self.parts:
            s = self.part_seconds(p)
            rows.append(f"{p.name:<36} {p.flops / 1e9:9.3f} {p.nbytes / MB:9.1f} {p.fresh / MB:9.1f} {s:9.4f} "
                        f"{s / total:6.1%}")
        fresh = sum(p.fresh for p in self.parts)
        rows.append(f"{'step':<36} {self.flops / 1e9:9.3f} {self.nbytes / MB:9.1f} {fresh / MB:9.1f} "
                    f"{self.seconds:9.4f} {1:6.1%}")
        m = self.memory
        rows.append(f"memory MB: params {m.params / MB:.1f}, grads {m.grads / MB:.1f}, AdamW moments "
                    f"{m.optimizer / MB:.1f}, activations {m.activations / MB:.1f}, temporaries "
                    f"{m.temporaries / MB:.1f}, cache {m.cache / MB:.1f}; peak {m.peak / MB:.1f} "
                    f"({m.added / MB:.1f} over the loaded model)")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "label_rows": self.label_rows, "cached": self.cached, "flops": self.flops,
                "bytes": self.nbytes, "seconds": self.seconds, "trainable_params": self.trainable_params,
                "device": asdict(self.device),
                "parts": [{**asdict(p), "seconds": self.part_seconds(p)} for p in self.parts],
                "memory_bytes": self.memory.to_dict()}


def ledger(shape: Shape, train: Training, seq_len: int, batch_size: int, label_rows: int | None = None,
           cached: bool = False, device: Device = FLOPS_ONLY) -> Ledger:
    """The ledger of one optimizer step of `train` on `batch_size` sequences of `seq_len` tokens.

    Blocks below the lowest trained block m run forward only (or, `cached`, not at all: their output
    h_m is read from the cache); blocks m+1..L keep activations and pass input gradients down to m.
    """
    L, d, V, dt = shape.num_layers, shape.hidden, shape.vocab, shape.dtype_bytes
    tokens = batch_size * seq_len
    trained = sorted(set(train.trained))
    low = trained[0] if trained else L  # lowest block in the backward graph
    if train.embeddings:
        low = 0
    run = range(low if cached and not train.embeddings else 0, L)
    graph = range(low, L)
    W = np.asarray(shape.block_weights, dtype=float)
    saved = np.asarray(shape.block_saved, dtype=float)
    inputs, norm_outputs = (np.asarray(x, dtype=float) for x in zip(*shape.block_weight_saves))
    lora = train.lora_rank is not None
    weight_trained = [] if lora else trained
    attn_fwd = 4.0 * batch_size * seq_len**2 * shape.attention_width  # QK^T and PV, per block

    def kept(i: int) -> float:
        """Elements per token block i keeps for backward (see the module docstring)."""
        if i not in trained:
            return saved[i] - inputs[i] - norm_outputs[i]
        return saved[i] - norm_outputs[i] if lora else saved[i]

    def act(blocks: Iterable[int], written: bool = False) -> float:
        """Bytes the blocks keep for backward, or with `written` all they write in forward."""
        return sum(saved[i] if written else kept(i) for i in blocks) * tokens * dt

    parts = []
    if cached and run.start > 0:
        parts.append(Part("cache read (h_k)", 0.0, 2.0 * tokens * d * dt))
    else:
        parts.append(Part("embedding lookup", 0.0, 2.0 * tokens * d * dt))
    parts += [
        Part("block matmuls forward", 2.0 * tokens * W[list(run)].sum(),
             sum(W[i] for i in run) * dt + 2 * act(run, written=True)),
        Part("attention forward", attn_fwd * len(run), 0.0),
        Part("block matmuls backward (inputs)", 2.0 * tokens * W[list(graph)].sum(),
             sum(W[i] for i in graph) * dt + 2 * act(graph)),
        Part("block matmuls backward (weights)", 2.0 * tokens * W[weight_trained].sum(),
             sum(W[i] for i in weight_trained) * dt + act(weight_trained)),
        Part("attention backward", 2 * attn_fwd * len(graph), 0.0),
    ]
    adapters = 0
    if lora:
        widths = sum(shape.lora_widths[i] for i in trained)
        adapters = train.lora_rank * widths
        parts.append(Part(f"LoRA adapters r={train.lora_rank} (fwd + bwd)", 3 * 2.0 * tokens * adapters,
                          3 * adapters * dt + 3 * tokens * widths * dt))
    positions = batch_size if label_rows is not None else tokens
    rows = label_rows if label_rows is not None else V
    logits = positions * rows * 4.0  # fp32 logits / log-probabilities
    head_w = rows * d * dt
    parts.append(Part("head forward + loss", 2.0 * positions * rows * d, head_w + 3 * logits))
    backward_head = 2.0 * positions * rows * d * ((low < L or train.final_norm) + train.head)
    parts.append(Part("head backward", backward_head, head_w * (1 + train.head) + 2 * logits))
    if train.embeddings:
        dense = 1 + (4 if shape.tied else 0)  # zero-filled V x d; tied: the head's V x d and their sum
        fresh = (3 if shape.tied else 1) * V * d * dt
        parts.append(Part("embedding gradient (dense V x d)", tokens * d + (V * d if shape.tied else 0),
                          dense * V * d * dt + tokens * d * dt, fresh if V * d * dt >= FRESH_MIN_BYTES else 0.0))
    head_trained = shape.head_params if train.head and not shape.tied else 0
    trainable = (adapters + sum(shape.block_params[i] for i in weight_trained)
                 + (shape.embedding_params if train.embeddings else 0)
                 + (shape.final_norm_params if train.final_norm else 0) + head_trained)
    large = (sum(shape.block_large[i] for i in weight_trained) + (shape.embedding_large if train.embeddings else 0)
             + (head_trained if head_trained * dt >= FRESH_MIN_BYTES else 0))
    parts.append(Part("AdamW", ADAMW_FLOPS * trainable, ADAMW_STREAMS * trainable * dt, ADAMW_TEMPS * large * dt))

    saved_head = positions * d * dt + logits + 2 * tokens * d * dt  # head input, log-probs, final norm
    cache = tokens * d * dt if cached and run.start > 0 else 0.0
    embedding_temp = V * d * dt if train.embeddings and shape.tied else 0.0
    memory = Memory(
        params=shape.total_params * dt + adapters * dt,
        grads=trainable * dt,
        optimizer=2 * trainable * dt,
        activations=act(graph) + saved_head,  # LoRA's r-wide A x per projection: neglected
        temporaries=max(trainable * dt, embedding_temp),
        cache=cache,
    )
    return Ledger(train.name, seq_len, batch_size, label_rows, bool(cache), tuple(parts), memory,
                  int(trainable), device)


# --- what plans and the study call ------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """A plan priced against full fine-tuning on the same model, batch and loss.

    `cost_ratio` and `cost_ratio_cached` are predicted time shares of a full fine-tuning step (the
    roofline seconds of the ledgers), without and with the frozen prefix read from a cache.
    """

    plan: Ledger
    plan_cached: Ledger
    full: Ledger
    total_params: int

    @property
    def cost_ratio(self) -> float:
        return self.plan.seconds / self.full.seconds

    @property
    def cost_ratio_cached(self) -> float:
        return self.plan_cached.seconds / self.full.seconds

    @property
    def flops_full(self) -> float:
        return self.full.flops

    @property
    def flops_step(self) -> float:
        return self.plan.flops

    @property
    def flops_step_cached(self) -> float:
        return self.plan_cached.flops

    @property
    def trainable_params(self) -> int:
        return self.plan.trainable_params

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def optimizer_state_bytes(self) -> float:
        """AdamW's two moments and the gradient of every trained parameter."""
        return self.plan.memory.optimizer + self.plan.memory.grads

    @property
    def activation_bytes(self) -> float:
        return self.plan.memory.activations

    @property
    def peak_memory_bytes(self) -> float:
        return self.plan.memory.peak

    def to_dict(self) -> dict:
        keys = ("cost_ratio", "cost_ratio_cached", "flops_full", "flops_step", "flops_step_cached",
                "trainable_params", "total_params", "trainable_share", "optimizer_state_bytes",
                "activation_bytes", "peak_memory_bytes")
        return {**{k: getattr(self, k) for k in keys}, "ledger": self.plan.to_dict(),
                "ledger_cached": self.plan_cached.to_dict(), "ledger_full": self.full.to_dict()}


def model_device(lm) -> Device:
    """The stored roofline constants of the device and dtype `lm` runs on."""
    return device_constants(lm.device, lm.dtype)


def cost(lm, plan, seq_len: int, batch_size: int, label_rows: int | None = None,
         device: Device | None = None) -> Cost:
    """Price `plan` (a `plan.Plan`) on the loaded model `lm` for `batch_size` sequences of `seq_len`
    tokens; `label_rows`: a classification loss over that many head rows (None: the LM loss).
    `device` defaults to the stored constants of the model's device (`device_constants`)."""
    shape = Shape.of(lm)
    device = device or model_device(lm)
    train = training(plan, shape.tied)
    price = lambda t, cached=False: ledger(shape, t, seq_len, batch_size, label_rows, cached, device)  # noqa: E731
    return Cost(price(train), price(train, True), price(full_training(shape.num_layers)), shape.total_params)


def price(lm, plan, seq_len: int, label_rows: int | None = None, batch_size: int = TRAIN_BATCH,
          device: Device | None = None):
    """(`plan` with the cost ratios of `cost`, the `Cost`): the one pricing of a plan, for
    `batch_size` sequences of `seq_len` tokens (planner and baselines alike)."""
    priced = cost(lm, plan, seq_len, batch_size, label_rows, device)
    return replace(plan, cost_ratio=priced.cost_ratio, cost_ratio_cached=priced.cost_ratio_cached), priced


def curve(shape: Shape, seq_len: int, batch_size: int = 8, label_rows: int | None = None,
          device: Device = FLOPS_ONLY) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, ratio_cached), each (L,): predicted time of every cut k = 0..L-1 (`cut_training`) as a
    share of full fine-tuning's (`full_training`), without and with the prefix cached."""
    L = shape.num_layers
    price = lambda t, cached=False: ledger(shape, t, seq_len, batch_size, label_rows, cached, device).seconds  # noqa: E731
    full = price(full_training(L))
    cuts = [cut_training(L, k) for k in range(L)]
    return np.array([price(t) for t in cuts]) / full, np.array([price(t, True) for t in cuts]) / full


def cut_cost_curve(lm, seq_len: int, label_rows: int | None = None, batch_size: int = 8,
                   device: Device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`curve` of the loaded model `lm` on its device's constants, for `plan(cost_curve=...)`."""
    return curve(Shape.of(lm), seq_len, batch_size, label_rows, device or model_device(lm))


def subset_ratios(num_layers: int, trained: Sequence[int]) -> tuple[float, float]:
    """`Shape.nominal`'s (ratio, ratio_cached) of training any subset of blocks (final norm included,
    embeddings frozen): backward runs down to the lowest trained block."""
    shape = Shape.nominal(num_layers)
    price = lambda t, cached=False: ledger(shape, t, 1, 1, 0, cached).seconds  # noqa: E731
    train = Training(tuple(sorted(trained)), False, False, True)
    full = price(full_training(num_layers))
    return price(train) / full, price(train, True) / full
