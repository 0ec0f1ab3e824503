"""Time and peak memory of one optimizer step per strategy, next to the cost model's FLOP ratio.

Strategies (same batch, sequence length and AdamW): full fine-tuning, a plan (default: freeze the
bottom half) recomputing its frozen prefix, the same plan on a cached prefix (h_k computed once by
freeze.block_inputs; only the suffix step is timed), LoRA in every block, LoRA inside the plan.
Goals: the measured step-time ratio to full FT is within 10% of the FLOP ratio with the cache and
within 15% without. Timings interleave the strategies and report medians; peak memory comes from a
separate process (see _common.PeakMemory).

    .venv/bin/python benchmarks/step_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch

from _common import (LABEL_ROWS, PeakMemory, add_common_args, device_name, load, memory_child,
                     random_batch, seconds, train_step, warm_up, write_json)
from freezelab.cost import cost
from freezelab.encode import Batch, Encoded
from freezelab.freeze import block_inputs, cut_of, freeze, from_cache
from freezelab.lora import ensure_lora
from freezelab.models import LoadedModel
from freezelab.plan import Plan
from freezelab.strategies import resolve

STRATEGIES = ("full", "plan", "plan-cached", "lora", "lora-plan")
GOALS = {"plan": 0.15, "plan-cached": 0.10}  # allowed |measured / FLOP ratio - 1|
BASIS = {  # how freezelab.cost.cost prices each strategy (label_rows=LABEL_ROWS)
    "full": "the reference (every block, the embeddings and the head trained): 1",
    "plan": "cost_ratio of the plan",
    "plan-cached": "cost_ratio_cached of the plan",
    "lora": "cost_ratio of the LoRA plan: input gradients through every block, no base-weight gradients, "
            "adapter FLOPs neglected",
    "lora-plan": "the same, down to the plan's first trained block",
}
MEMORY = ("peak_mem_mb: peak memory added by the strategy's first two optimizer steps over the loaded "
          "model (and cached h_k): gradients, AdamW state, saved activations, temporaries. CPU: growth "
          "of the peak resident set in a separate process whose allocator returns freed tensors; "
          "CUDA: torch.cuda.max_memory_allocated.")


def strategy_plans(lm: LoadedModel, plan_path: Path) -> dict[str, Plan]:
    """Each strategy's plan from the freezelab.strategies registry; `plan_path` holds the plan."""
    plan = resolve(str(plan_path), lm)
    return {"full": resolve("full", lm), "plan": plan, "plan-cached": plan, "lora": resolve("lora", lm),
            "lora-plan": resolve("lora-plan", lm, plan_path=plan_path)}


def make_step(base: LoadedModel, name: str, plan: Plan, enc: Encoded, batch: Batch) -> Callable[[], None]:
    """A function taking one optimizer step of strategy `name` on its own copy of `base` (adapters
    injected, frozen per plan)."""
    lm = LoadedModel(base.name, copy.deepcopy(base.model), None, base.arch)
    ensure_lora(lm, plan)
    freeze(lm, plan)
    optimizer = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=0.0)
    if name != "plan-cached":
        return lambda: train_step(lm, enc, batch, optimizer)
    k = cut_of(plan)
    h_k = block_inputs(lm, batch, k)  # computed once, outside every timing

    def cached_step() -> None:
        with from_cache(lm, k, h_k):
            train_step(lm, enc, batch, optimizer)

    return cached_step


def flop_ratios(lm: LoadedModel, plans: dict[str, Plan], seq_len: int, batch: int) -> dict[str, float]:
    """freezelab.cost's FLOP ratio to full FT of each strategy (see BASIS)."""
    costs = {name: cost(lm, plan, seq_len, batch, label_rows=LABEL_ROWS) for name, plan in plans.items()}
    return {name: c.cost_ratio_cached if name == "plan-cached" else c.cost_ratio for name, c in costs.items()}


def measure_memory(base: LoadedModel, plans: dict[str, Plan], enc: Encoded, batch: Batch) -> dict[str, float]:
    """Peak MB of each strategy's first two steps, one strategy at a time."""
    warm_up(base)
    peaks = {}
    for name in STRATEGIES:
        step = make_step(base, name, plans[name], enc, batch)
        with PeakMemory(base.device) as peak:
            step()
            step()
        peaks[name] = peak.mb
        del step
    return peaks


def measure_time(base: LoadedModel, plans: dict[str, Plan], enc: Encoded, batch: Batch,
                 reps: int) -> dict[str, list[float]]:
    """Seconds of `reps` steps per strategy: one warm-up step each, then `reps` rounds in rotated orders."""
    steps = {name: make_step(base, name, plans[name], enc, batch) for name in STRATEGIES}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for r in range(reps):
        for name in STRATEGIES[r % len(STRATEGIES):] + STRATEGIES[:r % len(STRATEGIES)]:
            times[name].append(seconds(steps[name], base.device))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, model="random:smollm2-135m")
    parser.add_argument("--plan", type=Path, help="a saved plan (default: freeze the bottom half)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="timed steps per strategy, after one warm-up")
    args = parser.parse_args()

    base = load(args)
    L = base.num_layers
    enc, batch = random_batch(base, args.batch, args.seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = args.plan or Path(tmp) / "plan.json"
        if args.plan is None:
            Plan.from_cut(L, L // 2, rule="bottom-half").save(plan_path)
        plans = strategy_plans(base, plan_path)
    if args.memory_child:
        print(json.dumps(measure_memory(base, plans, enc, batch)))
        return

    flops = flop_ratios(base, plans, args.seq_len, args.batch)
    samples = measure_time(base, plans, enc, batch, args.reps)
    peaks = memory_child()
    step_s = {name: statistics.median(t) for name, t in samples.items()}
    k = cut_of(plans["plan"])
    print(f"{device_name(base.device)}; {base.summary()}")
    print(f"batch {args.batch} x {args.seq_len} random tokens, loss over {LABEL_ROWS} label rows, AdamW; "
          f"median of {args.reps} interleaved steps after 1 warm-up")
    print(f"plan: blocks 1..{k} frozen, {k + 1}..{L} trained (cut {k})\n")
    print(f"{'strategy':<12} {'step s':>7} {'min-max s':>13} {'measured':>9} {'FLOPs':>6} {'peak MB':>8}  "
          "goal")
    result = {}
    for name in STRATEGIES:
        measured = step_s[name] / step_s["full"]
        goal = ""
        if name in GOALS:
            off = measured / flops[name] - 1
            goal = f"within {GOALS[name]:.0%}: {'met' if abs(off) <= GOALS[name] else 'NOT met'} ({off:+.1%})"
        spread = f"{min(samples[name]):.2f}-{max(samples[name]):.2f}"
        print(f"{name:<12} {step_s[name]:7.3f} {spread:>13} {measured:9.3f} {flops[name]:6.3f} "
              f"{peaks[name]:8.1f}  {goal}")
        result[name] = {"step_seconds": step_s[name], "ratio_measured": measured,
                        "ratio_flops": flops[name], "peak_mem_mb": peaks[name]}
    print("\nmeasured: median step time / full FT's. FLOPs: freezelab.cost.cost, per strategy:")
    for name, basis in BASIS.items():
        print(f"  {name:<12} {basis}")
    print(MEMORY)
    write_json(args.json, {
        "device": device_name(base.device),
        "config": {"model": args.model, "layers": L, "dtype": str(base.dtype), "seq_len": args.seq_len,
                   "batch": args.batch, "label_rows": LABEL_ROWS, "cut": k, "reps": args.reps},
        "memory": MEMORY, "flops_basis": BASIS, "strategies": result, "samples": samples,
    })


if __name__ == "__main__":
    main()
