"""Peak memory of tracing (trace.trace_encoded) against a plain forward pass on the same batch.

Plain forward: `lm.model(input_ids, attention_mask)` in inference mode, as HF runs it by default
(B x T x V logits and a KV cache). Tracing runs the backbone only and keeps (B, L+1, d) states,
whatever the sequence length. Goal: tracing peaks within 1.2x of the plain forward. For context,
the backbone alone (`trace.run_backbone`, no head, no KV cache) shows what the trace's hooks add.
All shapes are measured in one separate process (see _common.PeakMemory).

    .venv/bin/python benchmarks/trace_memory.py --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch

from _common import (PeakMemory, add_common_args, device_name, load, machine, memory_child, random_batch,
                     warm_up, write_json)
from freezelab.model.models import LoadedModel
from freezelab.method.trace import run_backbone, trace_encoded

GOAL = 1.2  # tracing's peak / the plain forward's peak


def shape(text: str) -> tuple[int, int]:
    """'8x128' -> (8, 128): batch x sequence length."""
    batch, _, seq_len = text.partition("x")
    return int(batch), int(seq_len)


def measure(lm: LoadedModel, batch_size: int, seq_len: int) -> dict[str, float]:
    """Peak MB of the plain forward, the backbone alone and tracing; MB of the kept states and the logits."""
    enc, batch = random_batch(lm, batch_size, seq_len)
    with PeakMemory(lm.device) as forward, torch.inference_mode():
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with PeakMemory(lm.device) as backbone, torch.inference_mode():
        run_backbone(lm, batch)
    with PeakMemory(lm.device) as tracing:
        tr = trace_encoded(lm, enc, batch_size=batch_size, progress=False)
    logits = batch_size * seq_len * lm.vocab_size * torch.finfo(lm.dtype).bits / 8
    return {"forward_mb": forward.mb, "backbone_mb": backbone.mb, "trace_mb": tracing.mb,
            "ratio": tracing.mb / forward.mb, "ratio_backbone": tracing.mb / backbone.mb,
            "kept_mb": tr.hidden.numel() * tr.hidden.element_size() / 2**20, "logits_mb": logits / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, model="random:smollm2-135m")
    parser.add_argument("--shapes", type=lambda s: [shape(x) for x in s.split(",")],
                        default="8x128,8x512,32x128", help="BxT pairs (default 8x128,8x512,32x128)")
    args = parser.parse_args()

    if args.memory_child:
        lm = load(args)
        warm_up(lm)
        rows = [measure(lm, b, t) for b, t in args.shapes]
        print(json.dumps({"device": device_name(lm.device), "rows": rows}))
        return

    child = memory_child()
    device, rows = child["device"], child["rows"]
    print(f"{device}; {args.model}; peak memory added over the loaded model (MB)\n")
    print(f"{'batch x len':>11} {'forward':>8} {'backbone':>9} {'trace':>7} {'trace/forward':>14} "
          f"{'trace/backbone':>15} {'kept states':>12} {'logits':>7}  goal trace/forward <= {GOAL}")
    for (b, t), row in zip(args.shapes, rows):
        met = "met" if row["ratio"] <= GOAL else "NOT met"
        print(f"{f'{b}x{t}':>11} {row['forward_mb']:8.1f} {row['backbone_mb']:9.1f} {row['trace_mb']:7.1f} "
              f"{row['ratio']:14.3f} {row['ratio_backbone']:15.3f} {row['kept_mb']:12.3f} "
              f"{row['logits_mb']:7.1f}  {met}")
    print("\nkept states: the (B, L+1, d) float32 states the trace returns (independent of the length); "
          "logits: the B x T x V tensor the plain forward materialises.")
    write_json(args.json, {
        "machine": machine(torch.device(args.device)), "device": device, "model": args.model, "goal": GOAL,
        "memory": "peak MB added over the loaded model; CPU: peak resident set growth in a process whose "
                  "allocator returns freed tensors; CUDA: torch.cuda.max_memory_allocated",
        "shapes": [{"batch": b, "seq_len": t, **row} for (b, t), row in zip(args.shapes, rows)],
    })


if __name__ == "__main__":
    main()
