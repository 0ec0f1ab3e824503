"""Fine-tuning under a plan: classification loss on the label rows at the prediction position (or
LM loss), optional frozen-prefix cache, atomic checkpoints and resume, held-out loss/accuracy.

Dropout is off (the model stays in eval mode) so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from freezelab.model.data import Example, Task
from freezelab.model.encode import Batch, Encoded, batches, collate, encode
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write, atomic_write_json
from freezelab.train.cache import LatentCache, build_cache
from freezelab.train.freeze import check_plan, freeze
from freezelab.train.lora import ensure_lora
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Schedule
from freezelab.method.trace import run_backbone


def final_hidden(lm: LoadedModel, batch: Batch, h_start: torch.Tensor | None = None,
                 start: int = 0) -> torch.Tensor:
    """N(h_L) for a batch: (B, T, d). With `h_start` (B, T, d), a stored h_start (a `LatentCache`
    read), only blocks start+1..L run; otherwise the whole backbone runs from the token ids."""
    if h_start is None:
        return run_backbone(lm, batch)
    return lm.forward_from(h_start.to(lm.device, lm.dtype), start, batch.attention_mask)


def batch_loss(lm: LoadedModel, enc: Encoded, batch: Batch, h_start: torch.Tensor | None = None,
               start: int = 0, chunk: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example loss (B,) in nats, per-example correct (B,) bool) of one batch.

    Classification: logits only at the prediction position and only for the label rows of the
    head (never B x T x V). LM: mean next-token cross-entropy over every prompt position plus the
    target, computed `chunk` sequences at a time (at most chunk x T x V logits exist at once);
    'correct' is the target token predicted at the prediction position.
    """
    last = final_hidden(lm, batch, h_start, start)  # (B, T, d), normed
    rows = torch.arange(last.shape[0], device=last.device)
    if enc.label_ids is not None:
        logits = lm.unembed(last[rows, batch.positions], enc.label_ids.to(last.device)).float()
        return F.cross_entropy(logits, batch.labels, reduction="none"), logits.argmax(-1) == batch.labels
    targets = torch.full_like(batch.input_ids, -100)
    targets[:, :-1] = batch.input_ids[:, 1:]
    targets[rows, batch.positions] = batch.targets
    targets[batch.attention_mask == 0] = -100
    losses, correct = [], []
    for part in range(0, last.shape[0], chunk):
        logits = lm.unembed(last[part:part + chunk]).float()  # (chunk, T, V)
        t = targets[part:part + chunk]
        token = F.cross_entropy(logits.transpose(1, 2), t, ignore_index=-100, reduction="none")
        losses.append(token.sum(1) / (t != -100).sum(1))
        at = batch.positions[part:part + chunk]
        correct.append(logits[torch.arange(len(at), device=at.device), at].argmax(-1) == batch.targets[part:part + chunk])
    return torch.cat(losses), torch.cat(correct)


@dataclass
class Evaluation:
    """Held-out result per example: loss (nats) and whether the target was predicted."""

    per_example_loss: list[float]
    per_example_correct: list[bool]

    @property
    def loss(self) -> float:
        return sum(self.per_example_loss) / len(self.per_example_loss)

    @property
    def acc(self) -> float:
        return sum(self.per_example_correct) / len(self.per_example_correct)


def evaluate(lm: LoadedModel, enc: Encoded, batch_size: int = 16, cache: LatentCache | None = None,
             start: int = 0) -> Evaluation:
    """Held-out loss and correctness of every example of `enc` (with `cache`: from its h_start)."""
    pad = lm.tokenizer.pad_token_id
    losses: list[float] = []
    correct: list[bool] = []
    with torch.inference_mode():
        for first, batch in zip(range(0, len(enc), batch_size), batches(enc, batch_size, pad, lm.device)):
            index = range(first, first + len(batch.targets))  # `batches` goes through enc in order
            h = None if cache is None else cache.states(start, index, lm.device, lm.dtype)
            loss, right = batch_loss(lm, enc, batch, h, start)
            losses += loss.tolist()
            correct += right.tolist()
    return Evaluation(losses, correct)


@dataclass
class Prepared:
    """What every run of a sweep shares: the encoded train and test examples, optionally their
    latent caches (`cache.build_cache` over exactly these encodings) and the untouched model's
    test evaluation (computed once, not once per run)."""

    train: Encoded
    test: Encoded
    train_cache: LatentCache | None = None
    test_cache: LatentCache | None = None
    before: Evaluation | None = None


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
    cached: bool  # blocks below `start_block` were read from a latent cache, not run
    seed: int
    lr: float
    batch_size: int
    trained: list[int]
    train_losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)  # seconds of each optimizer step
    start_block: int = 0  # the forward started from h_start (0: the embedding output or the token ids)
    per_example_loss: list[float] = field(default_factory=list)  # test set, after fine-tuning (nats)
    per_example_correct: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())


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


def start_block(lm: LoadedModel, plan: Schedule) -> int | None:
    """The latent space a run can start from: the lowest trained block's input (0 for a schedule,
    which may train any block), or None when the embeddings are trained (the run needs token ids)."""
    first = plan(0)
    if not first.freeze_embeddings:
        return None
    return 0 if plan.varies else min(first.trained)


@dataclass(frozen=True)
class FinetuneConfig:
    """How a run trains, apart from the model, the data and the plan (nanoGPT's GPTConfig style)."""

    steps: int = 100  # AdamW steps
    lr: float = 1e-4
    batch_size: int = 8  # sequences per step
    seed: int = 0  # batch order (and nothing else: LoRA's initialisation is the plan's Adapter.seed)
    cache_prefix: bool = False  # store the lowest trained block's input once, run only the blocks above
    max_length: int = 256  # tokens per prompt
    first_token: bool = False  # accept label words that are several tokens (their first token)
    save_every: int = 50  # steps between checkpoints (with `out`)
    keep_checkpoint: bool = True  # False: remove the checkpoint once result.json is written

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FreezelabError(f"steps must be at least 1, got {self.steps}")
        if self.lr <= 0:
            raise FreezelabError(f"the learning rate must be positive, got {self.lr}")
        if self.batch_size < 1 or self.save_every < 1:
            raise FreezelabError(f"batch_size and save_every must be at least 1, got {self.batch_size} and "
                                 f"{self.save_every}")


def finetune(lm: LoadedModel, task: Task, plan: Schedule, train: Sequence[Example] | None,
             test: Sequence[Example] | None, config: FinetuneConfig = FinetuneConfig(), *,
             out: str | os.PathLike | None = None, resume: bool = False, strategy: str = "plan",
             progress: bool = True, prepared: Prepared | None = None) -> RunResult:
    """Fine-tune `lm` in place for `config.steps` AdamW steps under `plan` (a Plan, or a schedule of plans).

    `config.cache_prefix` stores the input of the lowest trained block once per example
    (`cache.build_cache`) and runs only the blocks above it, every step and at evaluation.
    `prepared` (a sweep's shared encodings, caches and baseline evaluation) replaces `train` and
    `test`; with its caches every run whose embeddings are frozen starts from them.
    With `out`, a checkpoint (`out/checkpoint.pt`) is written atomically every `config.save_every`
    steps and on Ctrl-C, and `result.json` at the end; `resume=True` continues from the checkpoint.
    `config.keep_checkpoint=False` removes the checkpoint once the run is complete (sweeps: full
    fine-tuning checkpoints weigh 12 bytes per parameter).
    A LoRA plan (`plan.lora`) gets its adapters injected into `lm` first.
    """
    steps, lr, batch_size, seed = config.steps, config.lr, config.batch_size, config.seed
    cache_prefix, max_length, first_token = config.cache_prefix, config.max_length, config.first_token
    save_every, keep_checkpoint = config.save_every, config.keep_checkpoint
    plan_at = plan
    check_plan(lm, plan_at(0))  # a plan for another model fails before the data is encoded and evaluated
    if prepared is None:
        if train is None or test is None:
            raise FreezelabError("give the train and test examples, or `prepared` encodings")
        prepared = Prepared(encode(lm.tokenizer, task, train, max_length, first_token),
                            encode(lm.tokenizer, task, test, max_length, first_token))
    enc_train, enc_test = prepared.train, prepared.test
    if len(enc_train) < batch_size:
        raise FreezelabError(f"{len(enc_train)} training examples is fewer than one batch of {batch_size}")
    ckpt = Path(out) / "checkpoint.pt" if out is not None else None
    state = torch.load(ckpt) if resume and ckpt is not None and ckpt.exists() else None
    if resume and state is None:
        where = f"no checkpoint at {ckpt}" if ckpt else "pass out=, the folder of the interrupted run"
        raise FreezelabError(f"nothing to resume: {where}")

    current = plan_at(0)
    ensure_lora(lm, current)  # before resuming: the checkpoint holds adapter weights
    start = start_block(lm, plan)
    train_cache, test_cache = prepared.train_cache, prepared.test_cache
    if start is not None and cache_prefix and train_cache is None and start > 0:
        train_cache = build_cache(lm, enc_train, layers=(start,), progress=progress)
        test_cache = build_cache(lm, enc_test, layers=(start,), progress=progress)
    if start is None or train_cache is None or start not in train_cache.layers:
        start, train_cache, test_cache = 0, None, None
    if state is not None:
        before = Evaluation(state["before_loss"], state["before_correct"])
    elif prepared.before is not None:
        before = prepared.before
    else:
        before = evaluate(lm, enc_test, cache=test_cache, start=start)
    if state is None:
        start_step, losses, times, tokens = 0, [], [], 0
    else:
        start_step, losses, times, tokens = state["step"], state["losses"], state["times"], state["tokens"]
        lm.model.load_state_dict(state["params"], strict=False)
    trainable = freeze(lm, current)
    candidates = [p for p in lm.model.parameters() if p.requires_grad]
    if plan.varies:  # a schedule may train any block later: the optimizer holds them all
        candidates = [p for b in lm.blocks for p in b.parameters()] + list(lm.final_norm.parameters())
    optimizer = torch.optim.AdamW(candidates, lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    def save(step: int) -> None:
        if ckpt is None:
            return
        payload = {"step": step, "losses": losses, "times": times, "tokens": tokens,
                   "before_loss": before.per_example_loss, "before_correct": before.per_example_correct,
                   "params": _trainable_state(lm) if not plan.varies else
                   {n: p.detach().cpu().clone() for n, p in lm.model.named_parameters()},
                   "optimizer": optimizer.state_dict()}
        atomic_write(ckpt, lambda tmp: torch.save(payload, tmp))

    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    pad = lm.tokenizer.pad_token_id
    completed = start_step
    bar = tqdm(range(start_step, steps), desc=strategy, disable=not progress, leave=False)
    try:
        for step in bar:
            if plan.varies and plan_at(step) is not current:
                current = plan_at(step)
                freeze(lm, current)
            index = _order(len(enc_train), step, batch_size, seed)
            batch = collate(enc_train, index, pad, lm.device)
            t0 = time.perf_counter()
            h = None if train_cache is None else train_cache.states(start, index, lm.device, lm.dtype)
            loss = batch_loss(lm, enc_train, batch, h, start)[0].mean()
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
    lm.model.requires_grad_(False)
    after = evaluate(lm, enc_test, cache=test_cache, start=start)
    elapsed = sum(times)
    steady = times[1:] or times  # the first step also allocates gradients and optimizer state
    result = RunResult(strategy, trainable, lm.num_params, steps, elapsed, sum(steady) / len(steady),
                       before.loss, after.loss, before.acc, after.acc, _peak_mem_mb(lm.device),
                       tokens / elapsed if elapsed else 0.0, train_cache is not None, seed, lr, batch_size,
                       sorted(current.trained), losses, times, start, after.per_example_loss,
                       after.per_example_correct)
    if out is not None:
        result.save(Path(out) / "result.json")
    if not keep_checkpoint and ckpt is not None and ckpt.exists():
        ckpt.unlink()  # the run is complete and result.json holds what it measured
    return result
