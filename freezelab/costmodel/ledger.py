"""Step 6 of the method (book/method.md): the cost ledger, freezelab's one cost model.

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

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from freezelab.costmodel.device import FLOPS_ONLY, MB, Device, device_constants
from freezelab.costmodel.shapes import (ADAMW_FLOPS, ADAMW_STREAMS, ADAMW_TEMPS, FRESH_MIN_BYTES, Shape, Training,
                                        cut_training, full_training, training)

TRAIN_BATCH = 8  # sequences per step at which a plan is priced (finetune's default batch)


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
