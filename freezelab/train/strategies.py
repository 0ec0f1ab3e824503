"""The baselines of the method's evaluation (book/method.md) and saved plans as one registry of strategies.

`resolve(spec, lm)` turns a spec such as `full`, `top:8`, `gradnorm:8`, `lisa:2:10`, `lora-plan` or
`plan.json` into a `Plan`, or for LISA into a schedule (step -> Plan) that `finetune` follows.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from freezelab.costmodel.ledger import price, subset_ratios
from freezelab.model.data import Example, Task
from freezelab.model.encode import batches, encode
from freezelab.errors import FreezelabError
from freezelab.train.finetune import batch_loss
from freezelab.train.freeze import check_plan
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan, Schedule
from freezelab.model.adapter import Adapter

LISA_PERIOD = 10  # steps between two draws of the trained blocks


@dataclass(frozen=True)
class Context:
    """What a strategy may read besides its argument."""

    lm: LoadedModel
    task: Task | None
    calib: Sequence[Example] | None
    plan_path: str | os.PathLike | None
    seed: int
    steps: int | None
    max_length: int


@dataclass(frozen=True)
class Strategy:
    """One entry of the registry: `name[:argument]` builds a plan or a schedule."""

    name: str
    usage: str  # the spec syntax, e.g. "top:K"
    description: str
    build: Callable[[Context, str], Schedule]  # (context, text after "name:")


def top25_cut(num_layers: int) -> int:
    """The cut of top-25% ("What would Elsa do?"): the top quarter of the blocks trained, at least one."""
    return num_layers - max(1, num_layers // 4)


def subset_plan(num_layers: int, trained: Sequence[int], rule: str) -> Plan:
    """A plan training any subset of blocks (not necessarily a suffix), priced by the ledger on equal
    blocks (`cost.subset_ratios`; `resolve` prices it on the model): backward runs down to the
    lowest trained block."""
    trained = sorted(trained)
    ratio, ratio_cached = subset_ratios(num_layers, trained)
    return Plan(num_layers=num_layers, cut=num_layers - len(trained),
                frozen=[i for i in range(num_layers) if i not in trained], trained=trained, rule=rule,
                budget=None, predicted_benefit=None, cost_ratio=ratio, cost_ratio_cached=ratio_cached,
                curve=[])


@dataclass
class LisaSchedule:
    """LISA-style sampling: every `period` steps, `k` of the `num_layers` blocks drawn uniformly.

    The draw of period p is seeded by (seed, p), so any step's plan is known without replaying
    earlier ones (exact resume). Within a period the same Plan object is returned.
    """

    num_layers: int
    k: int
    period: int = LISA_PERIOD
    seed: int = 0
    extras: dict = field(default_factory=dict)  # copied into every plan
    varies: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._last: tuple[int, Plan] | None = None

    def __call__(self, step: int) -> Plan:
        index = step // self.period
        if self._last is None or self._last[0] != index:
            rng = random.Random(self.seed * 1_000_003 + index)
            plan = replace(subset_plan(self.num_layers, rng.sample(range(self.num_layers), self.k), "lisa"),
                           extras={**self.extras, "period_index": index})
            self._last = (index, plan)
        return self._last[1]


def relative_grad_norms(lm: LoadedModel, task: Task, calib: Sequence[Example], max_length: int = 256,
                        batch_size: int = 8) -> list[float]:
    """||grad|| / ||weight|| of each block (L values, norms over all of a block's parameters) for the
    mean task loss (`finetune.batch_loss`) over `calib`, with every block trainable.

    Only the blocks' parameters get gradients (their values do not depend on whether the embeddings
    and head are trained), so the dense V x d embedding gradient is never computed. The weights are
    untouched; requires_grad flags are restored and gradients cleared afterwards.
    """
    enc = encode(lm.tokenizer, task, calib, max_length)
    params = list(lm.model.parameters())
    flags = [p.requires_grad for p in params]
    lm.model.zero_grad(set_to_none=True)
    lm.model.requires_grad_(False)
    for block in lm.blocks:
        block.requires_grad_(True)
    try:
        for batch in batches(enc, batch_size, lm.tokenizer.pad_token_id, lm.device):
            loss, _ = batch_loss(lm, enc, batch)  # per example
            (loss.sum() / len(enc)).backward()
        return [_relative_norm(block) for block in lm.blocks]
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        lm.model.zero_grad(set_to_none=True)


def _relative_norm(block: nn.Module) -> float:
    grads = [p.grad.float().pow(2).sum() for p in block.parameters() if p.grad is not None]
    weights = sum(p.detach().float().pow(2).sum() for p in block.parameters())
    return float(torch.stack(grads).sum().sqrt() / weights.sqrt()) if grads else 0.0


# --- argument parsing ---------------------------------------------------------------------------


def _no_arg(name: str, arg: str) -> None:
    if arg:
        raise FreezelabError(f"strategy '{name}' takes no argument, got '{name}:{arg}'")


def _count(name: str, arg: str, num_layers: int) -> int:
    """K of `name:K`: a number of blocks in 1..L."""
    try:
        k = int(arg)
    except ValueError:
        raise FreezelabError(f"'{name}:K' needs a whole number of blocks K (e.g. {name}:4), got '{arg}'") from None
    if not 1 <= k <= num_layers:
        raise FreezelabError(f"{name}:{k}: K must be between 1 and {num_layers} (the model's number of blocks)")
    return k


def _load_plan(ctx: Context, path: str | os.PathLike | None, name: str) -> Plan:
    if not path:
        raise FreezelabError(f"strategy '{name}' needs a plan file: '{name}:PATH' or plan_path= (CLI: --plan)")
    loaded = Plan.load(path)
    check_plan(ctx.lm, loaded)
    return loaded


# --- the strategies ------------------------------------------------------------------------------


def _full(ctx: Context, arg: str) -> Plan:
    _no_arg("full", arg)
    # a tied head follows the embedding
    return replace(Plan.from_cut(ctx.lm.num_layers, 0, rule="full"), freeze_embeddings=False, train_head=True)


def _top(ctx: Context, arg: str) -> Plan:
    L = ctx.lm.num_layers
    return Plan.from_cut(L, L - _count("top", arg, L), rule="top")


def _top25(ctx: Context, arg: str) -> Plan:
    _no_arg("top25", arg)
    L = ctx.lm.num_layers
    return Plan.from_cut(L, top25_cut(L), rule="top25")


def _random(ctx: Context, arg: str) -> Plan:
    _no_arg("random", arg)
    L = ctx.lm.num_layers
    if L < 2:
        raise FreezelabError("a random cut k in 1..L-1 needs at least 2 blocks")
    return Plan.from_cut(L, random.Random(ctx.seed).randint(1, L - 1), rule="random")


def _gradnorm(ctx: Context, arg: str) -> Plan:
    k = _count("gradnorm", arg, ctx.lm.num_layers)
    if ctx.task is None or not ctx.calib:
        raise FreezelabError("'gradnorm:K' ranks blocks on a calibration batch: pass task= and calib= examples")
    scores = relative_grad_norms(ctx.lm, ctx.task, ctx.calib, ctx.max_length)
    top = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:k]
    return replace(subset_plan(ctx.lm.num_layers, top, "gradnorm"), extras={"relative_grad_norm": scores})


def _lisa(ctx: Context, arg: str) -> LisaSchedule:
    k_text, _, p_text = arg.partition(":")
    k = _count("lisa", k_text, ctx.lm.num_layers)
    if not p_text:  # default period; a run of at most LISA_PERIOD steps still redraws once
        short = ctx.steps is not None and ctx.steps <= LISA_PERIOD
        return LisaSchedule(ctx.lm.num_layers, k, max(1, ctx.steps // 2) if short else LISA_PERIOD, ctx.seed)
    try:
        period = int(p_text)
    except ValueError:
        raise FreezelabError(f"'lisa:K:P' needs a whole number of steps P, got '{p_text}'") from None
    if period < 1:
        raise FreezelabError(f"lisa:{k}:{period}: the period P must be at least 1 step")
    if ctx.steps is not None and period >= ctx.steps:
        raise FreezelabError(f"lisa:{k}:{period} draws new blocks every {period} steps, so a run of "
                             f"{ctx.steps} steps never redraws: choose P < {ctx.steps}")
    return LisaSchedule(ctx.lm.num_layers, k, period, ctx.seed)


def _lora(ctx: Context, arg: str) -> Plan:
    _no_arg("lora", arg)
    return replace(Plan.from_cut(ctx.lm.num_layers, 0, rule="lora"), train_final_norm=False,
                   lora=Adapter(seed=ctx.seed))


def _lora_plan(ctx: Context, arg: str) -> Plan:
    base = _load_plan(ctx, arg or ctx.plan_path, "lora-plan")
    return replace(base, rule="lora-plan", train_final_norm=False, lora=Adapter(seed=ctx.seed),
                   extras={**base.extras, "base_rule": base.rule})


def _plan_file(ctx: Context, arg: str) -> Plan:
    return _load_plan(ctx, arg, "plan")


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("full", "full", "every block, the embeddings, final norm and head trained", _full),
        Strategy("top", "top:K", "the top K blocks (and final norm) trained", _top),
        Strategy("top25", "top25", "the top 25% of blocks trained (\"What would Elsa do?\")", _top25),
        Strategy("random", "random", "a random cut k in 1..L-1 (from the seed): blocks k+1..L trained", _random),
        Strategy("gradnorm", "gradnorm:K",
                 "the K blocks with the largest relative gradient norm ||grad||/||weight|| on the "
                 "calibration set (AutoFreeze / Auto-RGN style; may be non-contiguous)", _gradnorm),
        Strategy("lisa", "lisa:K[:P]",
                 f"LISA-style: K random blocks trained, redrawn every P steps (default {LISA_PERIOD}, "
                 "half the run if shorter)", _lisa),
        Strategy("lora", "lora", "LoRA adapters (r=8, alpha=16) in every block, base weights frozen", _lora),
        Strategy("lora-plan", "lora-plan[:PATH]",
                 "LoRA adapters only inside the trained blocks of a saved plan (PEFT layers_to_transform)",
                 _lora_plan),
        Strategy("plan", "plan:PATH or PATH.json", "a plan saved with Plan.save (e.g. by `freezelab plan`)",
                 _plan_file),
    )
}


def describe_strategies() -> list[tuple[str, str]]:
    """(spec syntax, description) of every strategy, for help texts."""
    return [(s.usage, s.description) for s in STRATEGIES.values()]


def resolve(spec: str, lm: LoadedModel, *, task: Task | None = None, calib: Sequence[Example] | None = None,
            plan_path: str | os.PathLike | None = None, seed: int = 0, steps: int | None = None,
            max_length: int = 256) -> Schedule:
    """The plan (or LISA schedule) that strategy `spec` prescribes for `lm`.

    `task` and `calib` feed `gradnorm`; `plan_path` is the plan of `lora-plan`; `seed` drives
    `random` and `lisa`; `steps` (the run's length) sets and checks the period of `lisa`. Every plan is
    checked against `lm` (a saved plan for a model of another depth fails here) and priced on it by
    the cost ledger (`cost.cost` at `max_length` tokens; a LISA schedule keeps equal-block prices).
    """
    name, _, arg = spec.partition(":")
    if name in STRATEGIES:
        strategy = STRATEGIES[name]
    elif spec.endswith(".json") or Path(spec).is_file():
        strategy, arg = STRATEGIES["plan"], spec
    else:
        known = "; ".join(usage for usage, _ in describe_strategies())
        raise FreezelabError(f"unknown strategy '{spec}'. Strategies: {known}")
    ctx = Context(lm, task, calib, plan_path, seed, steps, max_length)
    result = strategy.build(ctx, arg)
    result = replace(result, extras={"model": lm.name, **result.extras, "strategy": spec})
    if isinstance(result, Plan):  # priced on this model: `max_length` tokens, batches of TRAIN_BATCH
        label_rows = len(task.label_words) if task is not None and task.kind == "classification" else None
        result, _ = price(lm, result, max_length, label_rows)
    return result
