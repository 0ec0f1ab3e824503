"""The oracle sweep: fine-tune a grid of cuts and each baseline with the same data, budget and seed,
from one latent cache, and store what every run realised on every test example.

One no-grad forward stores h_0..h_L of every training and test token (`cache.build_cache`); the
plan's trace is that cache read at the calibration examples' prediction positions, so planning
costs nothing more. A cut-k run reads h_k and trains blocks k+1..L; baselines that freeze the
embeddings start at their lowest trained block; only full fine-tuning (embeddings trained) runs
from the token ids. The untouched model is evaluated once. After each run the calibration set is
re-traced with the fine-tuned model (cheap: only the blocks above the start change), so the study
can see where fine-tuning moved the deviation.

Each run is stored as soon as it ends (`runs/NAME/result.json`) and skipped when rerun; sweep.json
is rewritten after every run (`complete` says whether all ran), so an interrupted sweep loses at
most the run in progress.
"""

from __future__ import annotations

import json
import tempfile
import time

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from freezelab.train.cache import LatentCache, build_cache
from freezelab.costmodel.device import Device
from freezelab.costmodel.ledger import cost, cut_cost_curve
from freezelab.model.data import Example, Split, Task
from freezelab.model.encode import Encoded, encode
from freezelab.method.lens import deviation
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write
from freezelab.train.finetune import FinetuneConfig, Prepared, RunResult, evaluate, finetune
from freezelab.model.models import LoadedModel, load_model
from freezelab.method.pipeline import plan_reading, read_trace
from freezelab.method.plan import SHARE_RULES, Plan

# rule x lens variants whose chosen cuts the grid must contain (name -> (rule, budget), (lens, restrict))
LENS_VARIANTS = {"logit-labels": ("logit", True), "logit-full": ("logit", False),
                 "cosine": ("cosine", True), "kl": ("kl", False)}
RULE_VARIANTS = {"argmax-excess": ("argmax-excess", None), "argmax-raw": ("argmax-raw", None),
                 "budget-0.3": ("budget", 0.3), "budget-0.5": ("budget", 0.5), "budget-0.7": ("budget", 0.7)}
# the knee study's candidates (share kept in {0.5, 0.7, 0.9}), through the default lens only
CANDIDATES = {f"{rule}-{share}": (rule, share) for rule in ("knee", "knee-gain") for share in (0.5, 0.7, 0.9)}
DEFAULT_VARIANT = "argmax-excess/logit-labels"
DENSE_ALL_UP_TO, DENSE_STRIDE = 18, 2  # `dense` cuts: all for L <= 18 blocks, every second otherwise


@dataclass
class CutResult:
    cut: int  # blocks 1..cut frozen
    cost_ratio: float  # modelled step cost / full fine-tuning, as the run ran (from the cache)
    cost_ratio_uncached: float
    predicted_benefit: float
    realised_gain: float  # loss_before - loss_after, nats
    loss: float
    acc: float
    step_seconds: float
    seconds: float = float("nan")  # wall time of the run: training and test evaluation
    per_example_loss: list[float] = field(default_factory=list)  # test set, nats
    per_example_correct: list[bool] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    deviation_after: list[float] = field(default_factory=list)  # d_0..d_L of the calibration set, re-traced


@dataclass
class SweepResult:
    model: str
    dataset: str
    seed: int
    steps: int
    chosen_cut: int
    cuts: list[CutResult]
    strategies: dict[str, dict] = field(default_factory=dict)  # name -> {acc, loss, cost_ratio, per_example_...}
    spearman: float = float("nan")  # Spearman(predicted benefit, realised gain) across cuts (kept for reference)
    regret: float = float("nan")
    loss_before: float = float("nan")
    acc_before: float = float("nan")
    complete: bool = False  # False while (or if interrupted before) every run has ended
    lr: float = float("nan")
    lora_lr: float = float("nan")
    batch_size: int = 0
    n_train: int = 0
    n_test: int = 0
    n_examples: int = 0  # the data set's size
    num_layers: int = 0
    variants: dict[str, int] = field(default_factory=dict)  # "rule/lens" -> chosen cut
    gains: dict = field(default_factory=dict)  # the default plan's gains (observed, expected, excess)
    deviation: list[float] = field(default_factory=list)  # d_0..d_L before fine-tuning (default lens)
    law: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)  # per_example_loss / per_example_correct before fine-tuning
    cache_seconds: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return describe(self)


def parse_cuts(spec: str, num_layers: int, chosen: Sequence[int] = ()) -> list[int]:
    """`all` (0..L-1), `every:N` (0, N, 2N, ...), `even:N` (N evenly spaced cuts from 0 to L-1) or
    `dense` (all for L <= 18 blocks, every second otherwise); always with 0 and the `chosen` cuts."""
    L = num_layers
    if spec == "dense":
        spec = "all" if L <= DENSE_ALL_UP_TO else f"every:{DENSE_STRIDE}"
    head, _, n = spec.partition(":")
    if spec == "all":
        cuts = list(range(L))
    elif head == "every" and n.isdigit() and int(n) >= 1:
        cuts = list(range(0, L, int(n)))
    elif head == "even" and n.isdigit() and int(n) >= 2:
        cuts = np.linspace(0, L - 1, int(n)).round().astype(int).tolist()
    else:
        raise FreezelabError(f"--cuts must be 'dense', 'all', 'every:N' or 'even:N' with N >= 2, got '{spec}'")
    return sorted({0, *chosen, *cuts})


def coarse_to_fine(cuts: Sequence[int]) -> list[int]:
    """`cuts` reordered so that any prefix covers the range evenly (ends first, then midpoints):
    an interrupted grid is still a coarse grid."""
    cuts = sorted(cuts)
    order, queue = [cuts[0], cuts[-1]], [(0, len(cuts) - 1)]
    while queue:
        lo, hi = queue.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(cuts[mid])
        queue += [(lo, mid), (mid, hi)]
    return list(dict.fromkeys(order + cuts))


def regret(cuts: Sequence[CutResult], chosen: int) -> float:
    """Loss of the chosen cut minus the best loss among cuts costing no more (>= 0)."""
    mine = next(c for c in cuts if c.cut == chosen)
    return mine.loss - min(c.loss for c in cuts if c.cost_ratio <= mine.cost_ratio + 1e-12)


def variant_plans(lm: LoadedModel, trace, seq_len: int, batch_size: int, variants: bool = True,
                  pricing: Device | None = None) -> dict[str, Plan]:
    """The plan of every rule x lens variant ("rule/lens"), or only the default with `variants=False`;
    costs priced for steps of `batch_size` sequences of `seq_len` tokens on `pricing` (default: this
    machine's stored constants)."""
    label_rows = None if trace.label_ids is None else len(trace.label_ids)
    curve = cut_cost_curve(lm, seq_len, label_rows=label_rows, batch_size=batch_size, device=pricing)
    out: dict[str, Plan] = {}
    lenses = LENS_VARIANTS if variants else {"logit-labels": LENS_VARIANTS["logit-labels"]}
    rules = RULE_VARIANTS if variants else {"argmax-excess": RULE_VARIANTS["argmax-excess"]}
    for lens_name, (lens, restrict) in lenses.items():
        reading = read_trace(trace, lm, lens, restrict)  # the study reports R^2 and bounds itself
        extra = CANDIDATES if variants and lens_name == "logit-labels" else {}
        for rule_name, (rule, setting) in {**rules, **extra}.items():
            knob = {"share": setting} if rule in SHARE_RULES else {"budget": setting}
            try:  # budgets are shares of full fine-tuning's cost, priced as the sweep runs (cached)
                out[f"{rule_name}/{lens_name}"] = plan_reading(reading, lm, rule, cost_curve=curve, cached=True,
                                                               **knob)
            except FreezelabError:  # no cut fits this budget on this model
                continue
    return out


def calibration_index(train: Sequence[Example], calib: Sequence[Example]) -> list[int] | None:
    """Positions of the calibration examples in `train`, or None if some are not there."""
    where = {ex: i for i, ex in enumerate(train)}
    index = [where.get(ex) for ex in calib]
    return None if any(i is None for i in index) else index


def retrace(lm: LoadedModel, cache: LatentCache, enc: Encoded, index: Sequence[int], start: int):
    """The trace of examples `index` through the (fine-tuned) `lm`: latent spaces below `start`
    come from the cache (those blocks did not change), the rest are recomputed from h_start."""
    import torch

    from freezelab.model.encode import collate

    before = cache.trace(enc, index)
    batch = collate(enc, index, 0, lm.device)
    rows = torch.arange(len(index), device=lm.device)
    with torch.inference_mode():
        states = lm.run_blocks(cache.states(start, index, lm.device, lm.dtype), batch.attention_mask, start,
                               keep=True, select=lambda h: h[rows, batch.positions])
    before.hidden[:, start:] = torch.stack(states, 1).float().cpu()
    return before


def prepare(lm: LoadedModel, task: Task, train: Sequence[Example], test: Sequence[Example],
            max_length: int, first_token: bool = False, cache_dtype: str = "fp32",
            cache_dir: str | Path | None = None, progress: bool = True) -> tuple[Prepared, float]:
    """Encode once, cache every latent space of train and test once, evaluate the untouched model
    once (from h_L). Returns the shared inputs and the seconds the cache took."""
    enc_train = encode(lm.tokenizer, task, train, max_length, first_token)
    enc_test = encode(lm.tokenizer, task, test, max_length, first_token)
    t0 = time.perf_counter()
    train_cache = build_cache(lm, enc_train, dtype=cache_dtype, directory=cache_dir, progress=progress)
    test_cache = build_cache(lm, enc_test, dtype=cache_dtype, directory=cache_dir, progress=progress)
    seconds = time.perf_counter() - t0
    before = evaluate(lm, enc_test, cache=test_cache, start=lm.num_layers)
    return Prepared(enc_train, enc_test, train_cache, test_cache, before), seconds


def pick_lr(lm: LoadedModel, task: Task, make_plan: Callable[[LoadedModel], Plan], candidates: Sequence[float],
            train: Sequence[Example], val: Sequence[Example], steps: int, batch_size: int, seed: int,
            max_length: int, out: Path | None = None, progress: bool = True) -> dict:
    """The learning rate with the lowest validation loss (validation examples carved from the
    training data, never the test set) after `steps` steps under `make_plan(model)`.

    Returns {"lr": best, "val_loss": {lr: loss}}; stored as `out` (JSON) and read back if present."""
    if out is not None and out.exists():
        return json.loads(out.read_text())
    prepared, _ = prepare(lm, task, train, val, max_length, progress=progress)
    losses = {}
    for lr in candidates:
        model = load_model(lm.name, device=str(lm.device), dtype=lm.dtype)
        config = FinetuneConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed, keep_checkpoint=False)
        r = finetune(model, task, make_plan(model), None, None, config, prepared=prepared, strategy=f"lr {lr:g}",
                     progress=progress)
        losses[repr(lr)] = r.loss_after if np.isfinite(r.loss_after) else float("inf")
    best = {"lr": float(min(losses, key=losses.get)), "val_loss": losses, "steps": steps,
            "n_val": len(val), "n_train": len(train)}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps(best, indent=2).encode())
    return best


def run_sweep(lm: LoadedModel, task: Task, parts: Split, cuts: str = "dense", steps: int | None = None,
              lr: float = 1e-4, lora_lr: float | Callable[[], float] = 1e-3, batch_size: int = 8, seed: int = 0,
              out: str | Path | None = None, strategies: Sequence[str] = (), n_train: int | None = None,
              n_test: int | None = 256, max_length: int = 256, first_token: bool = False,
              variants: bool = False, cache_dtype: str = "fp32", pricing: Device | None = None,
              progress: bool = True) -> SweepResult:
    """Plan from the cache, then fine-tune each cut (and every variant's chosen cut with `variants`)
    and each baseline; writes sweep.json and sweep.png to `out` after every run.

    `steps` None means one epoch over the training examples. LoRA strategies use `lora_lr` (a
    callable is asked only when the first LoRA run starts, e.g. to pick it on validation data).
    The model `lm` is only used for caching and planning: every run trains a fresh copy loaded by name.
    Modelled costs use the device constants `pricing` (default: this machine's, `cost.device_constants`).
    """
    from freezelab.train.strategies import resolve

    out = None if out is None else Path(out)
    train = list(parts.train[:n_train] if n_train else parts.train)
    test = list(parts.test[:n_test] if n_test else parts.test)
    steps = steps or max(1, len(train) // batch_size)
    prepared, cache_seconds = prepare(lm, task, train, test, max_length, first_token, cache_dtype,
                                      progress=progress)
    calib_index = calibration_index(train, parts.calib)
    enc_calib = encode(lm.tokenizer, task, parts.calib, max_length, first_token)
    if calib_index is None:  # not among the training examples: trace them with a forward of their own
        from freezelab.method.trace import trace_encoded

        trace = trace_encoded(lm, enc_calib, progress=False)
    else:
        trace = prepared.train_cache.trace(prepared.train, calib_index)
    seq_len = round(float(np.mean([len(p) for p in prepared.train.prompts])))
    label_rows = None if prepared.train.label_ids is None else len(prepared.train.label_ids)
    plans = variant_plans(lm, trace, seq_len, batch_size, variants, pricing)
    chosen = plans[DEFAULT_VARIANT]
    if out is not None:
        chosen.save(out / "plan.json")
    L = lm.num_layers
    fresh = lambda: load_model(lm.name, device=str(lm.device), dtype=lm.dtype)  # noqa: E731
    run = FinetuneConfig(steps=steps, batch_size=batch_size, seed=seed, max_length=max_length,
                         first_token=first_token, keep_checkpoint=False)
    common = dict(progress=progress, prepared=prepared)
    sweep = SweepResult(lm.name, task.name, seed, steps, chosen.cut, [], lr=lr,
                        lora_lr=float("nan") if callable(lora_lr) else lora_lr,
                        batch_size=batch_size, n_train=len(train), n_test=len(test),
                        n_examples=len(task.examples), num_layers=L,
                        variants={name: p.cut for name, p in plans.items()},
                        gains=chosen.extras["gains"], deviation=chosen.extras["deviation"],
                        law=chosen.extras["law"], before=asdict(prepared.before),
                        loss_before=prepared.before.loss, acc_before=prepared.before.acc,
                        cache_seconds=cache_seconds)

    def store() -> None:
        gains = [c.realised_gain for c in sweep.cuts]
        if len({c.predicted_benefit for c in sweep.cuts}) > 1 and len(set(gains)) > 1:
            sweep.spearman = float(spearmanr([c.predicted_benefit for c in sweep.cuts], gains).statistic)
        if any(c.cut == chosen.cut for c in sweep.cuts):
            sweep.regret = regret(sweep.cuts, chosen.cut)
        if out is not None:
            atomic_write(out / "sweep.json", json.dumps(sweep.to_dict()).encode())
            _plot(sweep, out / "sweep.png")

    def after_deviation(model: LoadedModel, start: int | None) -> list[float]:
        if start is None or calib_index is None:  # trace the calibration set from the token ids
            from freezelab.method.trace import trace_encoded

            again = trace_encoded(model, enc_calib, progress=False)
        else:
            again = retrace(model, prepared.train_cache, prepared.train, calib_index, start)
        return deviation(again, model).mean.tolist()

    def timed(name: str, train_fn: Callable[[Path | None], tuple[RunResult, dict]]) -> tuple[dict, float]:
        """Run `train_fn(folder)` (a result and what to store beside it) unless its result is
        stored; returns (result dict, wall seconds of training and evaluation)."""
        folder = None if out is None else out / "runs" / name
        if folder is not None and (folder / "result.json").exists():
            stored = json.loads((folder / "result.json").read_text())
            if "wall_seconds" in stored:  # else finetune's own result.json, from a sweep stopped before it stored
                return stored, stored["wall_seconds"]  # what it measures beside it: run it again
        t0 = time.perf_counter()
        r, extra = train_fn(folder)
        wall = time.perf_counter() - t0
        stored = {**r.to_dict(), **extra, "wall_seconds": wall}
        print(f"  {name}: loss {r.loss_after:.3f} acc {r.acc_after:.3f} ({wall:.0f} s)", flush=True)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "result.json", json.dumps(stored).encode())
        return stored, wall

    baseline_cuts = [resolve(spec, lm, seed=seed, steps=steps, max_length=max_length).cut
                     for spec in strategies if spec in ("top25", "random")]  # plain cuts: trained in the grid
    grid = parse_cuts(cuts, L, sorted({*sweep.variants.values(), *baseline_cuts}))
    first = [chosen.cut, 0]
    for k in first + [k for k in coarse_to_fine(grid) if k not in first]:
        cut_plan = Plan.from_cut(L, k, rule="cut", curve=chosen.curve)

        def train_cut(folder, cut_plan=cut_plan, k=k):
            model = fresh()
            r = finetune(model, task, cut_plan, None, None, replace(run, lr=lr), out=folder, strategy=f"cut{k}",
                         **common)
            return r, {"deviation_after": after_deviation(model, k)}

        r, wall = timed(f"cut{k:02d}", train_cut)
        point = chosen.curve[k]
        sweep.cuts.append(CutResult(k, point.cost_ratio_cached, point.cost_ratio, point.benefit,
                                    r["loss_before"] - r["loss_after"], r["loss_after"], r["acc_after"],
                                    r["step_seconds"], wall, r["per_example_loss"], r["per_example_correct"],
                                    r["train_losses"], r["deviation_after"]))
        sweep.cuts.sort(key=lambda c: c.cut)
        if k == chosen.cut:
            sweep.strategies["semantic-plan"] = {"acc": r["acc_after"], "loss": r["loss_after"],
                                                 "cost_ratio": point.cost_ratio_cached, "step_seconds": r["step_seconds"],
                                                 "cut": k}
        store()

    plan_path = Path(tempfile.mkdtemp()) / "plan.json" if out is None else out / "plan.json"
    if out is None:
        chosen.save(plan_path)  # lora-plan reads the plan from a file
    for spec in strategies:
        resolved = None if spec.split(":")[0] not in ("top25", "random") else \
            resolve(spec, lm, seed=seed, steps=steps, max_length=max_length)
        same = next((c for c in sweep.cuts if resolved is not None and c.cut == resolved.cut), None)
        if same is not None:  # a cut the grid already trained, with the same data, seed and lr: reuse it
            sweep.strategies[spec] = {"acc": same.acc, "loss": same.loss, "cost_ratio": same.cost_ratio,
                                      "step_seconds": same.step_seconds, "seconds": same.seconds, "lr": lr,
                                      "trained": list(range(same.cut, L)), "cut": same.cut,
                                      "per_example_loss": same.per_example_loss,
                                      "per_example_correct": same.per_example_correct,
                                      "train_losses": same.train_losses, "deviation_after": same.deviation_after}
            store()
            continue

        def train_strategy(folder, spec=spec):
            model = fresh()
            strategy_plan = resolve(spec, model, task=task, calib=parts.calib, seed=seed, steps=steps,
                                    plan_path=plan_path, max_length=max_length)
            first_plan = strategy_plan(0)
            priced = cost(lm, first_plan, seq_len, batch_size, label_rows=label_rows, device=pricing)
            if spec.startswith("lora") and callable(lora_lr):
                sweep.lora_lr = lora_lr()
            rate = sweep.lora_lr if spec.startswith("lora") else lr
            r = finetune(model, task, strategy_plan, None, None, replace(run, lr=rate), out=folder, strategy=spec,
                         **common)
            return r, {"deviation_after": after_deviation(model, r.start_block if r.cached else None),
                       "cost_ratio": priced.cost_ratio_cached if r.cached else priced.cost_ratio}

        r, wall = timed(spec.replace(":", "_"), train_strategy)
        if spec.startswith("lora"):
            sweep.lora_lr = r["lr"]  # also when the run was stored by an earlier invocation
        sweep.strategies[spec] = {"acc": r["acc_after"], "loss": r["loss_after"], "cost_ratio": r["cost_ratio"],
                                  "step_seconds": r["step_seconds"], "seconds": wall,
                                  "trainable_params": r["trainable_params"], "trained": r["trained"],
                                  "lr": r["lr"], "per_example_loss": r["per_example_loss"],
                                  "per_example_correct": r["per_example_correct"],
                                  "train_losses": r["train_losses"], "deviation_after": r["deviation_after"]}
        store()
    sweep.complete = True
    store()
    return sweep


def describe(sweep: SweepResult) -> str:
    """A printable table of a sweep's cuts and strategies."""
    lines = [f"{'cut':>4} {'cost':>6} {'no-cache':>8} {'pred':>7} {'gain':>7} {'loss':>7} {'acc':>6}"]
    lines += [f"{c.cut:>4} {c.cost_ratio:6.3f} {c.cost_ratio_uncached:8.3f} {c.predicted_benefit:7.3f} "
              f"{c.realised_gain:7.3f} {c.loss:7.3f} {c.acc:6.3f}{'  <- plan' if c.cut == sweep.chosen_cut else ''}"
              for c in sweep.cuts]
    lines += [f"{name:<14} loss {s['loss']:.3f} acc {s['acc']:.3f} cost ratio {s['cost_ratio']:.3f}"
              for name, s in sweep.strategies.items()]
    best = min(sweep.cuts, key=lambda c: c.loss)
    lines += [f"before fine-tuning: loss {sweep.loss_before:.3f}, acc {sweep.acc_before:.3f}",
              f"chosen cut {sweep.chosen_cut}; best cut {best.cut}; Spearman(predicted benefit, realised) "
              f"{sweep.spearman:.2f}; regret {sweep.regret:.3f} nats"]
    return "\n".join(lines)


def _plot(sweep: SweepResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [c.cost_ratio for c in sweep.cuts]
    ax.plot(xs, [c.loss for c in sweep.cuts], "o-", color="0.4", label="cut k (oracle sweep)")
    for c in sweep.cuts:
        ax.annotate(str(c.cut), (c.cost_ratio, c.loss), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for i, (name, s) in enumerate(sweep.strategies.items()):
        marker = "*" if name == "semantic-plan" else "s"
        ax.scatter(s["cost_ratio"], s["loss"], marker=marker, s=140 if marker == "*" else 50,
                   zorder=3, label=name, color=plt.cm.tab10(i % 10))
    ax.axhline(sweep.loss_before, ls=":", color="k", label="before fine-tuning")
    ax.set(xlabel="cost ratio (modelled step cost / full fine-tuning)", ylabel="held-out loss (nats)",
           title=f"{sweep.model} on {sweep.dataset}: {sweep.steps} steps, seed {sweep.seed}")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
