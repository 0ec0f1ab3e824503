"""What planning costs against one fine-tuning epoch over the same calibration examples.

Planning: planner.make_plan (encode, trace, deviation, law, gains, plan and its cost), wall time.
Epoch: the median full fine-tuning step (every block, the embeddings and the tied head trained;
AdamW; the task's classification loss) times the steps one pass over the examples takes. The timed
steps are split before and after the planning, so both see the same machine. Goal: < 5%. Also
printed: the same planning against one epoch over the split's whole training set.

    .venv/bin/python benchmarks/plan_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch

from _common import add_common_args, device_name, load, seconds, train_step, write_json
from freezelab.cost import attention_width, block_flops, cost
from freezelab.data import load_task, split
from freezelab.encode import batches, encode
from freezelab.freeze import freeze
from freezelab.models import LoadedModel
from freezelab.planner import make_plan
from freezelab.strategies import resolve

GOAL = 0.05  # planning seconds / epoch seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, model="smollm2-135m", twin=False)
    parser.add_argument("--data", default="bbc-news")
    parser.add_argument("--n-calib", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256, help="prompt tokens kept")
    parser.add_argument("--batch", type=int, default=8, help="fine-tuning batch size")
    parser.add_argument("--steps", type=int, default=4, help="timed full-FT steps, after one warm-up")
    args = parser.parse_args()

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
    enc = encode(lm.tokenizer, task, calib, args.max_length)
    epoch = list(batches(enc, args.batch, lm.tokenizer.pad_token_id, lm.device))

    def step(i: int) -> float:
        return seconds(lambda: train_step(trainee, enc, epoch[i % len(epoch)], optimizer), lm.device)

    step(0)  # warm-up
    before = args.steps // 2
    times = [step(i) for i in range(1, 1 + before)]
    run = make_plan(lm, task, calib, max_length=args.max_length, progress=False)
    times += [step(i) for i in range(1 + before, 1 + args.steps)]
    step_s = statistics.median(times)
    epoch_s = step_s * len(epoch)
    ratio = run.seconds / epoch_s
    train_epoch_s = step_s * math.ceil(len(parts.train) / args.batch)
    # cost model: tracing is one forward pass per example, an epoch one full-FT step per example
    forward = sum(block_flops(b, run.seq_len, attention_width(lm.model.config)) for b in lm.blocks)
    share = forward / cost(lm, full, run.seq_len, 1, label_rows=len(enc.label_ids)).flops_full

    print(f"{device_name(lm.device)}; {lm.summary()}")
    print(f"{args.data}: {len(calib)} calibration examples, mean {run.seq_len} tokens\n")
    print(f"planning        {run.seconds:8.1f} s  (trace {run.trace.seconds:.1f} s; "
          f"chosen cut k* = {run.plan.chosen_layer})")
    print(f"full-FT step    {step_s:8.2f} s  (median of {len(times)}, batch {args.batch})")
    print(f"epoch           {epoch_s:8.1f} s  ({len(epoch)} steps)")
    print(f"planning/epoch  {ratio:8.1%}  goal < {GOAL:.0%}: {'met' if ratio < GOAL else 'NOT met'}")
    print(f"planning / one epoch over the split's {len(parts.train)} training examples: "
          f"{run.seconds / train_epoch_s:.1%}")
    print(f"\ncost model: a forward pass is {share:.0%} of a full-FT step's FLOPs, so tracing examples "
          f"costs about that share of an epoch over the same examples.")
    write_json(args.json, {
        "device": device_name(lm.device), "model": args.model, "data": args.data, "n_calib": len(calib),
        "seq_len": run.seq_len, "batch": args.batch, "planning_seconds": run.seconds,
        "trace_seconds": run.trace.seconds, "step_seconds": step_s, "step_samples": times,
        "steps_per_epoch": len(epoch), "epoch_seconds": epoch_s, "ratio": ratio, "goal": GOAL,
        "goal_met": ratio < GOAL, "train_examples": len(parts.train),
        "ratio_train_epoch": run.seconds / train_epoch_s, "forward_flop_share": share,
        "chosen_cut": run.plan.chosen_layer,
    })


if __name__ == "__main__":
    main()
