"""The roofline constants of a device (FLOP/s, bytes/s and a CPU's page-fault rate), measured once by
a micro-benchmark and stored in `$FREEZELAB_CACHE/devices.json`."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from freezelab.costmodel.shapes import ADAMW_STREAMS
from freezelab.io import atomic_write_json

CALIBRATION_SECONDS = 6.0  # the micro-benchmark's budget (about 9 s in all with its set-up)
MB = 2**20


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
