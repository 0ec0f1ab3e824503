"""Fine-tuning under a plan: classification loss on the label rows at the prediction position (or
LM loss), optional frozen-prefix cache, atomic checkpoints and resume, held-out loss/accuracy.

Dropout is off (the model stays in eval mode) so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import Example, Task
from .encode import Batch, Encoded, batches, collate, encode
from .errors import FreezelabError
from .freeze import PrefixCache, check_plan, cut_of, freeze, from_cache
from .lora import ensure_lora
from .models import LoadedModel
from .plan import Plan
from .trace import run_backbone

Schedule = Callable[[int], Plan]  # step -> plan in force at that step (LISA-style sampling)


def batch_loss(lm: LoadedModel, enc: Encoded, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, number correct) of one batch.

    Classification: logits only at the prediction position and only for the label rows of the
    head (never B x T x V). LM: next-token cross-entropy over every prompt position plus the target;
    'correct' counts the target token predicted at the prediction position.
    """
    last = run_backbone(lm, batch)  # (B, T, d), already normed
    rows = torch.arange(last.shape[0], device=last.device)
    if enc.label_ids is not None:
        logits = lm.unembed(last[rows, batch.positions], enc.label_ids.to(last.device)).float()
        return F.cross_entropy(logits, batch.labels), (logits.argmax(-1) == batch.labels).sum()
    logits = lm.unembed(last).float()  # (B, T, V)
    targets = torch.full_like(batch.input_ids, -100)
    targets[:, :-1] = batch.input_ids[:, 1:]
    targets[rows, batch.positions] = batch.targets
    targets[batch.attention_mask == 0] = -100
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    return loss, (logits[rows, batch.positions].argmax(-1) == batch.targets).sum()


def evaluate(lm: LoadedModel, enc: Encoded, batch_size: int = 16) -> tuple[float, float]:
    """Held-out (mean loss in nats, accuracy) over `enc`."""
    pad = lm.tokenizer.pad_token_id
    total = correct = 0.0
    with torch.inference_mode():
        for batch in batches(enc, batch_size, pad, lm.device):
            loss, right = batch_loss(lm, enc, batch)
            total += loss.item() * len(batch.targets)
            correct += right.item()
    return total / len(enc), correct / len(enc)


@dataclass
class RunResult:
    """What one fine-tuning run cost and bought."""

    strategy: str
    trainable_params: int
    total_params: int
    steps: int
    seconds: float  # training wall time (evaluation excluded)
    step_seconds: float  # mean seconds per optimizer step, the first (allocating) one excluded
    loss_before: float
    loss_after: float
    acc_before: float
    acc_after: float
    peak_mem_mb: float  # CUDA: max allocated; CPU: the process's peak resident set
    tokens_per_second: float
    cached: bool
    seed: int
    lr: float
    batch_size: int
    trained: list[int]
    train_losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)  # seconds of each optimizer step

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        _atomic_write(Path(path), json.dumps(self.to_dict(), indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _order(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of optimizer step `step`: epoch-wise seeded permutations, so any step's batch
    is known without replaying earlier ones (what makes resume exact)."""
    per_epoch = max(1, n // batch_size)
    epoch, slot = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[slot * batch_size:(slot + 1) * batch_size].tolist()


def _trainable_state(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in lm.model.named_parameters() if p.requires_grad}


def finetune(lm: LoadedModel, task: Task, plan: Plan | Schedule, train: Sequence[Example],
             test: Sequence[Example], steps: int = 100, lr: float = 1e-4, batch_size: int = 8,
             seed: int = 0, cache_prefix: bool = False, cache_dir: Path | None = None,
             max_length: int = 256, out: str | os.PathLike | None = None, resume: bool = False,
             save_every: int = 50, keep_checkpoint: bool = True, strategy: str = "plan", first_token: bool = False,
             progress: bool = True) -> RunResult:
    """Fine-tune `lm` in place for `steps` AdamW steps under `plan` (or a schedule of plans).

    With `out`, a checkpoint (`out/checkpoint.pt`) is written atomically every `save_every` steps
    and on Ctrl-C, and `result.json` at the end; `resume=True` continues from the checkpoint.
    `keep_checkpoint=False` removes the checkpoint once the run is complete (sweeps: full
    fine-tuning checkpoints weigh 12 bytes per parameter).
    A LoRA plan (`plan.extras["lora"]`) gets its adapters injected into `lm` first.
    """
    if steps < 1:
        raise FreezelabError(f"steps must be at least 1, got {steps}")
    if lr <= 0:
        raise FreezelabError(f"the learning rate must be positive, got {lr}")
    plan_at: Schedule = plan if callable(plan) else (lambda _step: plan)
    check_plan(lm, plan_at(0))  # a plan for another model fails before the data is encoded and evaluated
    enc_train = encode(lm.tokenizer, task, train, max_length, first_token)
    enc_test = encode(lm.tokenizer, task, test, max_length, first_token)
    if len(enc_train) < batch_size:
        raise FreezelabError(f"{len(enc_train)} training examples is fewer than one batch of {batch_size}")
    ckpt = Path(out) / "checkpoint.pt" if out is not None else None
    state = torch.load(ckpt) if resume and ckpt is not None and ckpt.exists() else None
    if resume and state is None:
        where = f"no checkpoint at {ckpt}" if ckpt else "pass out=, the folder of the interrupted run"
        raise FreezelabError(f"nothing to resume: {where}")

    current = plan_at(0)
    ensure_lora(lm, current)  # before resuming: the checkpoint holds adapter weights
    cache = None
    if cache_prefix and not callable(plan):
        k = cut_of(current)
        cache = PrefixCache(k, directory=cache_dir) if k > 0 else None
    if state is None:
        loss_before, acc_before = evaluate(lm, enc_test)
        start_step, losses, times, tokens = 0, [], [], 0
    else:
        loss_before, acc_before = state["loss_before"], state["acc_before"]
        start_step, losses, times, tokens = state["step"], state["losses"], state["times"], state["tokens"]
        lm.model.load_state_dict(state["params"], strict=False)
    trainable = freeze(lm, current)
    candidates = [p for p in lm.model.parameters() if p.requires_grad]
    if callable(plan):  # a schedule may train any block later: the optimizer holds them all
        candidates = [p for b in lm.blocks for p in b.parameters()] + list(lm.final_norm.parameters())
    optimizer = torch.optim.AdamW(candidates, lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    def save(step: int) -> None:
        if ckpt is None:
            return
        payload = {"step": step, "losses": losses, "times": times, "tokens": tokens,
                   "loss_before": loss_before, "acc_before": acc_before,
                   "params": _trainable_state(lm) if not callable(plan) else
                   {n: p.detach().cpu().clone() for n, p in lm.model.named_parameters()},
                   "optimizer": optimizer.state_dict()}
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name(".checkpoint.pt.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckpt)

    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    pad = lm.tokenizer.pad_token_id
    completed = start_step
    bar = tqdm(range(start_step, steps), desc=strategy, disable=not progress, leave=False)
    try:
        for step in bar:
            if callable(plan) and plan_at(step) is not current:
                current = plan_at(step)
                freeze(lm, current)
            index = _order(len(enc_train), step, batch_size, seed)
            batch = collate(enc_train, index, pad, lm.device)
            t0 = time.perf_counter()
            if cache is not None:
                with from_cache(lm, cache.k, cache.states(lm, batch, index)):
                    loss, _ = batch_loss(lm, enc_train, batch)
            else:
                loss, _ = batch_loss(lm, enc_train, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if lm.device.type == "cuda":
                torch.cuda.synchronize(lm.device)
            times.append(time.perf_counter() - t0)
            tokens += int(batch.attention_mask.sum())
            losses.append(loss.item())
            completed = step + 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if completed % save_every == 0:
                save(completed)
    except KeyboardInterrupt:
        save(completed)  # nothing lost: resume continues after the last completed step
        raise
    if keep_checkpoint:
        save(steps)
    elif ckpt is not None and ckpt.exists():
        ckpt.unlink()  # the run is complete and result.json below holds what it measured
    lm.model.requires_grad_(False)
    loss_after, acc_after = evaluate(lm, enc_test)
    elapsed = sum(times)
    steady = times[1:] or times  # the first step also allocates gradients and optimizer state
    result = RunResult(strategy, trainable, lm.num_params, steps, elapsed, sum(steady) / len(steady),
                       loss_before, loss_after, acc_before, acc_after, _peak_mem_mb(lm.device),
                       tokens / elapsed if elapsed else 0.0, cache is not None, seed, lr, batch_size,
                       sorted(current.trained), losses, times)
    if out is not None:
        result.save(Path(out) / "result.json")
    return result
