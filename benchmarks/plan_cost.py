"""What planning costs against one full fine-tuning epoch over the task's whole training split.

Planning: planner.make_plan on 256 calibration examples (encode, trace, deviation, law, gains, plan
and its cost), wall time. Epoch: the median full fine-tuning step (every block, the embeddings and
the tied head trained; AdamW; the task's classification loss) times the steps one pass over the
split's training examples takes. The timed steps are split before and after the planning, so both
see the same machine. Goal: ratio_to_epoch < 5%. Also printed: planning against an epoch over the
calibration examples only, and the cost ledger's forward share of a full-FT step.

    .venv/bin/python benchmarks/plan_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch

from _common import add_common_args, device_name, load, machine, seconds, train_step, write_json
from freezelab.costmodel.ledger import cost
from freezelab.model.data import load_task, split
from freezelab.model.encode import batches, encode
from freezelab.train.freeze import freeze
from freezelab.model.models import LoadedModel
from freezelab.method.pipeline import make_plan
from freezelab.train.strategies import resolve

GOAL = 0.05  # planning seconds / epoch seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, model="smollm2-135m", twin=False)
    parser.add_argument("--quick", action="store_true", help="8 calibration examples of 32 tokens, 2 steps: a smoke test")
    parser.add_argument("--data", default="bbc-news")
    parser.add_argument("--n-calib", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256, help="prompt tokens kept")
    parser.add_argument("--batch", type=int, default=8, help="fine-tuning batch size")
    parser.add_argument("--steps", type=int, default=4, help="timed full-FT steps, after one warm-up")
    args = parser.parse_args()
    if args.quick:
        args.n_calib, args.max_length, args.batch, args.steps = 8, 32, 4, 2

    lm = load(args)
    task = load_task(args.data)
    parts = split(task, seed=0, n_calib=args.n_calib)
    calib = parts.calib
    full = resolve("full", lm)
    # the fine-tuned copy: planning reads the model's weights unchanged
    trainee = LoadedModel(lm.name, copy.deepcopy(lm.model), lm.tokenizer, lm.arch)
    freeze(trainee, full)
    optimizer = torch.optim.AdamW([p for p in trainee.model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=0.0)
    train = encode(lm.tokenizer, task, parts.train, args.max_length)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    timed = list(batches(train, args.batch, lm.tokenizer.pad_token_id, lm.device,
                         order=order[:(args.steps + 1) * args.batch]))

    def step(i: int) -> float:
        return seconds(lambda: train_step(trainee, train, timed[i % len(timed)], optimizer), lm.device)

    step(0)  # warm-up
    before = args.steps // 2
    times = [step(i) for i in range(1, 1 + before)]
    run = make_plan(lm, task, calib, max_length=args.max_length, progress=False)
    times += [step(i) for i in range(1 + before, 1 + args.steps)]
    step_s = statistics.median(times)
    epoch_s = step_s * math.ceil(len(parts.train) / args.batch)
    ratio = run.seconds / epoch_s
    calib_epoch_s = step_s * math.ceil(len(calib) / args.batch)
    # ledger: tracing is one forward pass per example, an epoch one full-FT step per example
    ledger = cost(lm, full, run.seq_len, args.batch, label_rows=len(train.label_ids)).full
    forward = sum(ledger.part_seconds(p) for p in ledger.parts if "forward" in p.name and "head" not in p.name)
    share = forward / ledger.seconds

    print(f"{device_name(lm.device)}; {lm.summary()}")
    print(f"{args.data}: {len(calib)} calibration examples, mean {run.seq_len} tokens; "
          f"{len(parts.train)} training examples\n")
    print(f"planning        {run.seconds:8.1f} s  (trace {run.trace.seconds:.1f} s; "
          f"chosen cut k* = {run.plan.cut})")
    print(f"full-FT step    {step_s:8.2f} s  (median of {len(times)}, batch {args.batch})")
    print(f"epoch           {epoch_s:8.1f} s  ({math.ceil(len(parts.train) / args.batch)} steps)")
    print(f"planning/epoch  {ratio:8.1%}  goal < {GOAL:.0%}: {'met' if ratio < GOAL else 'NOT met'}")
    print(f"planning / one epoch over the {len(calib)} calibration examples only: "
          f"{run.seconds / calib_epoch_s:.1%}")
    print(f"\ncost ledger: a forward pass is {share:.0%} of a full-FT step's predicted time, so tracing "
          f"examples costs about that share of an epoch over the same examples.")
    write_json(args.json, {
        "machine": machine(lm.device), "device": device_name(lm.device), "model": args.model,
        "data": args.data, "n_calib": len(calib), "seq_len": run.seq_len, "batch": args.batch,
        "planning_seconds": run.seconds, "trace_seconds": run.trace.seconds, "step_seconds": step_s,
        "step_samples": times, "train_examples": len(parts.train), "epoch_seconds": epoch_s,
        "ratio_to_epoch": ratio, "goal": GOAL, "goal_met": ratio < GOAL,
        "ratio_to_calib_epoch": run.seconds / calib_epoch_s,
        "forward_share_model": share, "chosen_cut": run.plan.cut,
    })


if __name__ == "__main__":
    main()
