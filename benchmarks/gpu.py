"""`make bench-gpu`: step cost and trace memory on one GPU in bf16, ledger against measurement.

Runs step_cost.py and trace_memory.py with `--device cuda` (bf16) on random twins of SmolLM2-135M
and of a Llama-3.2-1B-shaped model (16 blocks, hidden 2048; `models.RANDOM_CONFIGS`), and writes
benchmarks/results/gpu_*.json. Sized to finish in under 5 minutes on one recent GPU.

    .venv/bin/python benchmarks/gpu.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RUNS = [  # (script, model, extra options)
    ("step_cost", "smollm2-135m", ["--seq-len", "256", "--batch", "8", "--reps", "5"]),
    ("step_cost", "llama-3.2-1b", ["--seq-len", "256", "--batch", "4", "--reps", "5"]),
    ("trace_memory", "smollm2-135m", ["--shapes", "8x256,8x1024,32x256"]),
    ("trace_memory", "llama-3.2-1b", ["--shapes", "4x256,4x1024"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("make bench-gpu needs a CUDA GPU (none found)")
    start = time.perf_counter()
    for script, model, options in RUNS:
        out = args.out / f"gpu_{script}_{model}.json"
        command = [sys.executable, str(HERE / f"{script}.py"), "--model", f"random:{model}", "--device", "cuda",
                   *options, "--json", str(out)]
        print(f"$ {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True, cwd=HERE)
    print(f"bench-gpu: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
