"""What the benchmarks share: command-line options, a random classification batch, one optimizer
step, wall-clock timing and peak memory measured in a child process."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from freezelab.train.cache import LatentCache
from freezelab.costmodel.device import cpu_model
from freezelab.model.encode import Batch, Encoded, collate
from freezelab.train.finetune import batch_loss
from freezelab.io import atomic_write_json
from freezelab.model.models import LoadedModel, load_model

LABEL_ROWS = 5  # classification over 5 fixed token ids: B x 5 logits, never B x T x V

TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000)

# glibc keeps freed memory in its heap and hands it out again unseen by the resident set. With a
# fixed mmap threshold every tensor above 64 KiB is its own mapping, unmapped when freed, so the
# resident set follows the live tensors (measured: peaks repeat to 0.1%, against +-10% without).
# It slows allocation down, so only the memory child runs with it, never a timing.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def add_common_args(parser: argparse.ArgumentParser, model: str, twin: bool = True) -> None:
    """--model, --device, --json, --threads; with `twin`, --layers, --tiny and the hidden --memory-child."""
    parser.add_argument("--model", default=model, help=f"for freezelab.model.models.load_model (default {model})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: one per core). Use 1 on a shared machine: threads "
                             "waiting for each other at every operation turn others' load into noise")
    if twin:
        parser.add_argument("--layers", type=int, help="keep only this many blocks (random twins only)")
        parser.add_argument("--tiny", action="store_true",
                            help="tiny widths (hidden 64, vocab 1000; random twins only): for smoke tests")
        parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)


def load(args: argparse.Namespace) -> LoadedModel:
    """The model of `--model` on `--device` (with `--layers` blocks and `--tiny` widths), `--threads` set."""
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {**(TINY if getattr(args, "tiny", False) else {}),
                 **({} if getattr(args, "layers", None) is None else {"num_hidden_layers": args.layers})}
    if overrides and not args.model.startswith("random:"):
        raise SystemExit("--layers and --tiny only apply to random twins (--model random:NAME)")
    return load_model(args.model, device=args.device, **overrides)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def machine(device: torch.device) -> dict:
    """What the numbers were measured on: CPU model, threads, load average, GPU, torch version."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "device": device_name(device),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def random_batch(lm: LoadedModel, batch: int, seq_len: int, seed: int = 0) -> tuple[Encoded, Batch]:
    """`batch` sequences of `seq_len` random token ids, each labelled with one of LABEL_ROWS fixed tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(lm.vocab_size, (batch, seq_len), generator=gen)
    label_ids = torch.arange(LABEL_ROWS) * (lm.vocab_size // LABEL_ROWS)
    labels = torch.randint(LABEL_ROWS, (batch,), generator=gen)
    enc = Encoded(ids.tolist(), label_ids[labels], label_ids, labels)
    return enc, collate(enc, range(batch), pad_id=0, device=lm.device)


def train_step(lm: LoadedModel, enc: Encoded, batch: Batch, optimizer: torch.optim.Optimizer,
               cache: LatentCache | None = None, start: int = 0) -> None:
    """One optimizer step as `finetune.finetune` takes it (with `cache`: from its h_start, blocks
    start+1..L only)."""
    h = None if cache is None else cache.states(start, range(len(batch.targets)), lm.device, lm.dtype)
    optimizer.zero_grad(set_to_none=True)
    batch_loss(lm, enc, batch, h, start)[0].mean().backward()
    optimizer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of `fn()`, waiting for the GPU's queued work on CUDA."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _status_bytes(field: str) -> int:
    kib = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(kib.group(1)) * 1024


class PeakMemory:
    """Peak memory added while the `with` block runs, in MB (2**20 bytes), over what was live at its start.

    CUDA: torch.cuda.max_memory_allocated. CPU (Linux): the resident set's high-water mark (VmHWM,
    reset through /proc/self/clear_refs) minus the resident set at the start, after gc and
    malloc_trim; it tracks tensors only in a process started with FIXED_MMAP (`memory_child`).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = float("nan")

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            ctypes.CDLL(None).malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
            self._start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM")
        self.mb = (peak - self._start) / 2**20


def memory_child() -> Any:
    """Run this script again with `--memory-child` in a fresh process with FIXED_MMAP; returns its last
    stdout line, parsed as JSON."""
    done = subprocess.run([sys.executable, sys.argv[0], *sys.argv[1:], "--memory-child"],
                          env={**os.environ, **FIXED_MMAP}, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_up(lm: LoadedModel) -> None:
    """One tiny forward pass, so that one-off allocations of the first call fall outside a measurement."""
    with torch.inference_mode():
        lm.backbone(input_ids=torch.zeros(1, 8, dtype=torch.long, device=lm.device), use_cache=False)


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        atomic_write_json(path, payload, newline=True)
        print(f"wrote {path}")
