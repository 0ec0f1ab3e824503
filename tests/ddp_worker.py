"""One rank of tests/test_ddp.py: a tiny random llama trained 3 steps under DDP (gloo, CPU) on this rank's data.

Usage: python tests/ddp_worker.py RANK WORLD_SIZE PORT OUT_DIR. Writes OUT_DIR/rank{RANK}.pt with the
parameters at the start and the end of the correct run (plan applied, then DDP wraps the model), and the
error of the wrong order (DDP wraps first, the plan is applied after).
"""

import datetime
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from freezelab.train.freeze import freeze
from freezelab.model.models import LoadedModel, load_model
from freezelab.method.plan import Plan

TINY = dict(num_hidden_layers=4, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)
PLAN = Plan.from_cut(4, 2)  # blocks 0-1 frozen, 2-3 and the final norm trained


def tiny() -> LoadedModel:
    return load_model("random:smollm2-135m", device="cpu", dtype="fp32", **TINY)  # seed 0: same on every rank


def train(ddp: DDP, rank: int, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW([p for p in ddp.parameters() if p.requires_grad], lr=1e-2)
    data = torch.Generator().manual_seed(100 + rank)  # different batches on each rank
    for _ in range(steps):
        ids = torch.randint(0, 1000, (2, 16), generator=data)
        loss = ddp(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def state(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))

    lm = tiny()
    start = state(lm)
    freeze(lm, PLAN)  # first: DDP registers (and all-reduces) only the parameters that require grad
    train(DDP(lm.model, find_unused_parameters=False), rank)
    end = state(lm)

    late = tiny()
    ddp = DDP(late.model, find_unused_parameters=False)
    freeze(late, PLAN)  # too late: DDP waits for gradients the frozen parameters never get
    try:
        train(ddp, rank)
        error = ""
    except RuntimeError as e:
        error = str(e)

    torch.save({"start": start, "end": end, "late_freeze_error": error}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
