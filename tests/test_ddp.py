"""Scale-out: a plan under DistributedDataParallel, two CPU processes (gloo) running tests/ddp_worker.py.

What DDP needs: apply the plan *before* wrapping the model. DDP then registers only the trainable
parameters, so `find_unused_parameters=False` (the fast default) works: every registered parameter
gets a gradient each step. Freezing after wrapping makes DDP wait for gradients that never come.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = WORKER.parents[1]
TRAINED = (".layers.2.", ".layers.3.", "model.norm.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(out: Path, world: int = 2) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"
    return [torch.load(out / f"rank{rank}.pt") for rank in range(world)]


@pytest.mark.slow  # two fresh Python processes importing torch and transformers
def test_plan_under_ddp_on_two_cpu_processes(tmp_path):
    ranks = _run_ranks(tmp_path)
    names = ranks[0]["start"].keys()
    trained = [n for n in names if any(t in n for t in TRAINED)]
    assert len(trained) == 2 * 9 + 1
    for n in names:
        assert torch.equal(ranks[0]["start"][n], ranks[1]["start"][n])  # same initial weights
        if n in trained:
            assert all(not torch.equal(r["end"][n], r["start"][n]) for r in ranks), f"{n} did not train"
            assert torch.equal(ranks[0]["end"][n], ranks[1]["end"][n]), f"{n} differs across ranks"
        else:
            assert all(torch.equal(r["end"][n], r["start"][n]) for r in ranks), f"frozen {n} changed"
    for r in ranks:  # the wrong order fails loudly instead of training silently wrong
        assert "Expected to have finished reduction in the prior iteration" in r["late_freeze_error"]
