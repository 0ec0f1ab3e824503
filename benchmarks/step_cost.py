"""Time and peak memory of one optimizer step per strategy, next to the cost ledger's prediction.

Strategies (same batch, sequence length and AdamW): full fine-tuning, cut 0 (every block trained,
embeddings frozen), a plan (default: freeze the bottom half) recomputing its frozen prefix, the same
plan reading h_k from a latent cache (`cache.build_cache`, built outside every timing), LoRA in every
block, LoRA inside the plan, and a LISA draw (2 random blocks). Goals: every measured step-time ratio
to full FT within 10% of the ledger's (`freezelab.costmodel.ledger.cost`), and peak memory within 15% of its
model. Timings interleave the strategies (each timed step right after an untimed one of the same
strategy, as in training) and report medians; peak memory comes from a separate
process (see _common.PeakMemory).

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

from _common import (LABEL_ROWS, PeakMemory, add_common_args, device_name, load, machine, memory_child,
                     random_batch, seconds, train_step, warm_up, write_json)
from freezelab.train.cache import build_cache
from freezelab.costmodel.device import MB
from freezelab.costmodel.ledger import cost
from freezelab.model.encode import Batch, Encoded
from freezelab.train.freeze import cut_of, freeze
from freezelab.train.lora import ensure_lora
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan
from freezelab.train.strategies import LisaSchedule, resolve

STRATEGIES = ("full", "cut0", "plan", "plan-cached", "lora", "lora-plan", "lisa")
GOALS = {"time": 0.10, "memory": 0.15}  # allowed |measured / ledger - 1|
MEMORY = ("peak_mem_mb: peak memory added by the strategy's first two optimizer steps over the loaded "
          "model: gradients, AdamW state, saved activations, temporaries. CPU: growth of the peak "
          "resident set in a separate process whose allocator returns freed tensors; CUDA: "
          "torch.cuda.max_memory_allocated. mem_model_mb: the ledger's peak over the loaded model.")


def strategy_plans(lm: LoadedModel, plan_path: Path) -> dict[str, Plan]:
    """Each strategy's plan from the freezelab.train.strategies registry; `plan_path` holds the plan."""
    plan = resolve(str(plan_path), lm)
    lisa = LisaSchedule(lm.num_layers, min(2, lm.num_layers))(0)
    lisa.extras["strategy"] = "lisa:2"
    return {"full": resolve("full", lm), "cut0": resolve("top:" + str(lm.num_layers), lm), "plan": plan,
            "plan-cached": plan, "lora": resolve("lora", lm),
            "lora-plan": resolve("lora-plan", lm, plan_path=plan_path), "lisa": lisa}


def make_step(base: LoadedModel, name: str, plan: Plan, enc: Encoded, batch: Batch) -> Callable[[], None]:
    """A function taking one optimizer step of strategy `name` on its own copy of `base` (adapters
    injected, frozen per plan; for plan-cached, its latent cache built first)."""
    lm = LoadedModel(base.name, copy.deepcopy(base.model), None, base.arch)
    ensure_lora(lm, plan)
    freeze(lm, plan)
    optimizer = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=0.0)
    if name != "plan-cached":
        return lambda: train_step(lm, enc, batch, optimizer)
    k = cut_of(plan)
    cache = build_cache(lm, enc, layers=(k,), batch_size=len(enc), progress=False)
    return lambda: train_step(lm, enc, batch, optimizer, cache, k)


def ledger_model(lm: LoadedModel, plans: dict[str, Plan], seq_len: int, batch: int) -> dict[str, dict]:
    """The ledger's time ratio to full FT and peak MB over the loaded model, per strategy."""
    out = {}
    for name, plan in plans.items():
        c = cost(lm, plan, seq_len, batch, label_rows=LABEL_ROWS)
        ledger = c.plan_cached if name == "plan-cached" else c.plan
        out[name] = {"ratio_model": ledger.seconds / c.full.seconds, "seconds_model": ledger.seconds,
                     "mem_model_mb": ledger.memory.added / MB}
    return out


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
    """Seconds of `reps` steps per strategy: one warm-up step each, then `reps` rounds in rotated
    orders. In a round each strategy takes two steps and the second is timed: in training a step
    follows a step of the same strategy, whose freed memory the next one reuses."""
    steps = {name: make_step(base, name, plans[name], enc, batch) for name in STRATEGIES}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for r in range(reps):
        for name in STRATEGIES[r % len(STRATEGIES):] + STRATEGIES[:r % len(STRATEGIES)]:
            steps[name]()
            times[name].append(seconds(steps[name], base.device))
    return times


def _off(measured: float, model: float) -> float:
    return measured / model - 1 if model else float("nan")


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

    model = ledger_model(base, plans, args.seq_len, args.batch)
    samples = measure_time(base, plans, enc, batch, args.reps)
    peaks = memory_child()
    step_s = {name: statistics.median(t) for name, t in samples.items()}
    k = cut_of(plans["plan"])
    print(f"{device_name(base.device)}; {base.summary()}")
    print(f"batch {args.batch} x {args.seq_len} random tokens, loss over {LABEL_ROWS} label rows, AdamW; "
          f"median of {args.reps} interleaved rounds, each timing the second of two steps, after 1 warm-up")
    print(f"plan: blocks 1..{k} frozen, {k + 1}..{L} trained (cut {k})\n")
    print(f"{'strategy':<12} {'step s':>7} {'ledger s':>8} {'measured':>9} {'ledger':>7} {'off':>7} "
          f"{'peak MB':>8} {'model MB':>8} {'off':>7}")
    result = {}
    for name in STRATEGIES:
        m = model[name]
        measured = step_s[name] / step_s["full"]
        row = {"step_seconds": step_s[name], "ratio_measured": measured, **m, "peak_mem_mb": peaks[name],
               "time_off": _off(measured, m["ratio_model"]), "mem_off": _off(peaks[name], m["mem_model_mb"])}
        row["time_goal_met"] = bool(abs(row["time_off"]) <= GOALS["time"])
        row["mem_goal_met"] = bool(abs(row["mem_off"]) <= GOALS["memory"])
        print(f"{name:<12} {step_s[name]:7.3f} {m['seconds_model']:8.3f} {measured:9.3f} "
              f"{m['ratio_model']:7.3f} {row['time_off']:+7.1%} {peaks[name]:8.1f} {m['mem_model_mb']:8.1f} "
              f"{row['mem_off']:+7.1%}")
        result[name] = row
    print(f"\ngoals: time ratio within {GOALS['time']:.0%} of the ledger's, peak memory within "
          f"{GOALS['memory']:.0%}")
    print(MEMORY)
    write_json(args.json, {
        "machine": machine(base.device), "device": device_name(base.device),
        "config": {"model": args.model, "layers": L, "dtype": str(base.dtype), "seq_len": args.seq_len,
                   "batch": args.batch, "label_rows": LABEL_ROWS, "cut": k, "reps": args.reps},
        "goals": GOALS, "memory": MEMORY, "strategies": result, "samples": samples,
    })


if __name__ == "__main__":
    main()
