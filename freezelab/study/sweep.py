"""The oracle sweep: fine-tune a grid of cuts and each baseline with the same data, budget and seed,
from one latent cache, and store what every run realised on every test example.

One no-grad forward stores h_0..h_L of every training and test token (`cache.build_cache`); the
plan's trace is that cache read at the calibration examples' prediction positions, so planning
costs nothing more. A cut-k run reads h_k and trains blocks k+1..L; baselines that freeze the
embeddings start at their lowest trained block; only full fine-tuning (embeddings trained) runs
from the token ids. The untouched model is evaluated once. After each run the calibration set is
re-traced with the fine-tuned model (cheap: only the blocks above the start change), so the study
can see where fine-tuning moved the deviation.

Each run is stored as soon as it ends (`runs/NAME/result.json`) and skipped when rerun at the same
learning rate (its family's, `rates.Rates`; a run stored at another rate is stale and trains again);
sweep.json is rewritten after every run (`complete` says whether all ran), so an interrupted sweep
loses at most the run in progress. trace.npz stores what a rule reads (`tracefile`).
"""

from __future__ import annotations

import json
import tempfile
import time

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
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
from freezelab.method.trace import trace_encoded
from freezelab.study.rates import FAMILIES, Rates, family
from freezelab.study.tracefile import LENS_VARIANTS, trace_deviations, write_trace
from freezelab.ui.plots import DPI, plot_sweep

# rule x lens variants whose chosen cuts the grid must contain (name -> (rule, budget); lenses: LENS_VARIANTS)
RULE_VARIANTS = {"argmax-excess": ("argmax-excess", None), "argmax-raw": ("argmax-raw", None),
                 "budget-0.3": ("budget", 0.3), "budget-0.5": ("budget", 0.5), "budget-0.7": ("budget", 0.7)}
# the knee study's candidates (share kept in {0.5, 0.7, 0.9}), through the default lens only
CANDIDATES = {f"{rule}-{share}": (rule, share) for rule in ("knee", "knee-gain") for share in (0.5, 0.7, 0.9)}
DEFAULT_VARIANT = "argmax-excess/logit-labels"
DENSE_ALL_UP_TO, DENSE_STRIDE = 18, 2  # `dense` cuts: all for L <= 18 blocks, every second otherwise
@dataclass(frozen=True)
class SweepConfig:
    """How a sweep trains and what it runs, apart from the model, the data and the folder (GPTConfig style)."""

    cuts: str = "dense"  # the grid (`parse_cuts`)
    steps: int | None = None  # AdamW steps per run; None = one epoch over the training examples
    lr: Rates = Rates()
    batch_size: int = 8  # sequences per step
    seed: int = 0  # batch order, LoRA's initialisation, the random baselines
    strategies: tuple[str, ...] = ()  # baselines beside the grid (`strategies.resolve` specs)
    n_train: int | None = None  # the first n training examples (None: all)
    n_test: int | None = 256
    max_length: int = 256  # tokens per prompt
    first_token: bool = False  # accept multi-token label words (their first token)
    variants: bool = False  # also every rule x lens variant's chosen cut
    cache_dtype: str = "fp32"
    pricing: Device | None = None  # device constants of every modelled cost (None: this machine's)
    families: tuple[str, ...] = FAMILIES  # families that train now; the others' missing or stale runs wait


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
    lr: float = float("nan")  # block training's rate (cuts and block baselines)
    lora_lr: float = float("nan")
    full_lr: float = float("nan")
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
    pending: dict[str, list[str]] = field(default_factory=dict)  # family -> runs missing or stale, waiting
    reruns: dict[str, dict] = field(default_factory=dict)  # run -> {from_lr, lr, seconds}: retrained at a new rate

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


def price_cuts(lm: LoadedModel, enc: Encoded, batch_size: int, pricing: Device | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, ratio_cached), (L,) each: the modelled step cost of every cut k = 0..L-1 over full
    fine-tuning's, for steps of `batch_size` sequences of `enc`'s mean prompt length on `pricing`
    (default: this machine's stored constants). How a sweep prices its cuts and its rules' budgets."""
    seq_len = round(float(np.mean([len(p) for p in enc.prompts])))
    label_rows = None if enc.label_ids is None else len(enc.label_ids)
    return cut_cost_curve(lm, seq_len, label_rows=label_rows, batch_size=batch_size, device=pricing)


def variant_plans(lm: LoadedModel, trace, curve: tuple[np.ndarray, np.ndarray], variants: bool = True
                  ) -> dict[str, Plan]:
    """The plan of every rule x lens variant ("rule/lens"), or only the default with `variants=False`;
    budgets read against the cached cost ratios of `curve` (`price_cuts`)."""
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

    from freezelab.method.trace import latent_states
    from freezelab.model.encode import collate

    before = cache.trace(enc, index)
    batch = collate(enc, index, 0, lm.device)
    with torch.inference_mode():
        states = latent_states(lm, batch, cache.states(start, index, lm.device, lm.dtype), start, last_only=True)
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


def run_sweep(lm: LoadedModel, task: Task, parts: Split, config: SweepConfig = SweepConfig(),
              out: str | Path | None = None, progress: bool = True) -> SweepResult:
    """Plan from the cache, then fine-tune each cut (and every variant's chosen cut with `config.variants`)
    and each baseline; writes plan.json and trace.npz (`tracefile`: what a rule reads) to `out`
    once, sweep.json and sweep.png after every run.

    Every run trains at its family's rate (`config.lr.of`). A stored run is kept if it ran at that
    rate; a run stored at another rate is stale. Stale and missing runs train if their family is in
    `config.families`, else they wait: named in `pending`, left out of the results, `complete` False.
    The model `lm` is only used for caching and planning: every run trains a fresh copy loaded by name.
    """
    from freezelab.train.strategies import resolve

    c = config
    out = None if out is None else Path(out)
    train = list(parts.train[:c.n_train] if c.n_train else parts.train)
    test = list(parts.test[:c.n_test] if c.n_test else parts.test)
    steps = c.steps or max(1, len(train) // c.batch_size)
    prepared, cache_seconds = prepare(lm, task, train, test, c.max_length, c.first_token, c.cache_dtype,
                                      progress=progress)
    calib_index = calibration_index(train, parts.calib)
    enc_calib = encode(lm.tokenizer, task, parts.calib, c.max_length, c.first_token)
    if calib_index is None:  # not among the training examples: trace them with a forward of their own
        trace = trace_encoded(lm, enc_calib, progress=False)
    else:
        trace = prepared.train_cache.trace(prepared.train, calib_index)
    seq_len = round(float(np.mean([len(p) for p in prepared.train.prompts])))
    label_rows = None if prepared.train.label_ids is None else len(prepared.train.label_ids)
    curve = price_cuts(lm, prepared.train, c.batch_size, c.pricing)
    plans = variant_plans(lm, trace, curve, c.variants)
    chosen = plans[DEFAULT_VARIANT]
    L = lm.num_layers
    if out is not None:
        chosen.save(out / "plan.json")
        write_trace(out / "trace.npz", trace_deviations(trace, lm), curve[1], L)
    fresh = lambda: load_model(lm.name, device=str(lm.device), dtype=lm.dtype)  # noqa: E731
    run = FinetuneConfig(steps=steps, batch_size=c.batch_size, seed=c.seed, max_length=c.max_length,
                         first_token=c.first_token, keep_checkpoint=False)
    common = dict(progress=progress, prepared=prepared)
    sweep = SweepResult(lm.name, task.name, c.seed, steps, chosen.cut, [], lr=c.lr.blocks, lora_lr=c.lr.lora,
                        full_lr=c.lr.full, batch_size=c.batch_size, n_train=len(train), n_test=len(test),
                        n_examples=len(task.examples), num_layers=L,
                        variants={name: p.cut for name, p in plans.items()},
                        gains=chosen.extras["gains"], deviation=chosen.extras["deviation"],
                        law=chosen.extras["law"], before=asdict(prepared.before),
                        loss_before=prepared.before.loss, acc_before=prepared.before.acc,
                        cache_seconds=cache_seconds)

    def store() -> None:
        gains = [r.realised_gain for r in sweep.cuts]
        if len({r.predicted_benefit for r in sweep.cuts}) > 1 and len(set(gains)) > 1:
            sweep.spearman = float(spearmanr([r.predicted_benefit for r in sweep.cuts], gains).statistic)
        if any(r.cut == chosen.cut for r in sweep.cuts):
            sweep.regret = regret(sweep.cuts, chosen.cut)
        if out is not None:
            atomic_write(out / "sweep.json", json.dumps(sweep.to_dict()).encode())
            fig = plot_sweep(sweep.to_dict())
            fig.savefig(out / "sweep.png", dpi=DPI, bbox_inches="tight")
            plt.close(fig)

    def after_deviation(model: LoadedModel, start: int | None) -> list[float]:
        if start is None or calib_index is None:  # trace the calibration set from the token ids
            again = trace_encoded(model, enc_calib, progress=False)
        else:
            again = retrace(model, prepared.train_cache, prepared.train, calib_index, start)
        return deviation(again, model).mean.tolist()

    def timed(name: str, spec: str, train_fn: Callable[[Path | None, float], tuple[RunResult, dict]]
              ) -> tuple[dict, float] | None:
        """Run `train_fn(folder, rate)` (a result and what to store beside it) unless its result is
        stored at `spec`'s rate; returns (result dict, wall seconds of training and evaluation), or
        None while the run waits for its family."""
        rate, fam = c.lr.of(spec), family(spec)
        folder = None if out is None else out / "runs" / name
        stored = {}
        if folder is not None and (folder / "result.json").exists():
            stored = json.loads((folder / "result.json").read_text())
            # else finetune's own result.json, from a sweep stopped before it stored what it measures beside it
            if "wall_seconds" in stored and np.isclose(stored["lr"], rate, rtol=1e-9, atol=0):
                if "replaced_lr" in stored:
                    sweep.reruns[name] = {"from_lr": stored["replaced_lr"], "lr": rate,
                                          "seconds": stored["wall_seconds"]}
                return stored, stored["wall_seconds"]
        if fam not in c.families:
            sweep.pending.setdefault(fam, []).append(name)
            return None
        t0 = time.perf_counter()
        r, extra = train_fn(folder, rate)
        wall = time.perf_counter() - t0
        stale = {"replaced_lr": stored["lr"]} if "wall_seconds" in stored else {}
        result = {**r.to_dict(), **extra, **stale, "wall_seconds": wall}
        print(f"  {name}: lr {rate:g} loss {r.loss_after:.3f} acc {r.acc_after:.3f} ({wall:.0f} s)", flush=True)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "result.json", json.dumps(result).encode())
        if stale:
            sweep.reruns[name] = {"from_lr": stored["lr"], "lr": rate, "seconds": wall}
        return result, wall

    baseline_cuts = [resolve(spec, lm, seed=c.seed, steps=steps, max_length=c.max_length).cut
                     for spec in c.strategies if spec in ("top25", "random")]  # plain cuts: trained in the grid
    grid = parse_cuts(c.cuts, L, sorted({*sweep.variants.values(), *baseline_cuts}))
    first = [chosen.cut, 0]
    for k in first + [k for k in coarse_to_fine(grid) if k not in first]:
        cut_plan = Plan.from_cut(L, k, rule="cut", curve=chosen.curve)

        def train_cut(folder, rate, cut_plan=cut_plan, k=k):
            model = fresh()
            r = finetune(model, task, cut_plan, None, None, replace(run, lr=rate), out=folder, strategy=f"cut{k}",
                         **common)
            return r, {"deviation_after": after_deviation(model, k)}

        got = timed(f"cut{k:02d}", "cut", train_cut)
        if got is None:
            continue
        r, wall = got
        point = chosen.curve[k]
        sweep.cuts.append(CutResult(k, point.cost_ratio_cached, point.cost_ratio, point.benefit,
                                    r["loss_before"] - r["loss_after"], r["loss_after"], r["acc_after"],
                                    r["step_seconds"], wall, r["per_example_loss"], r["per_example_correct"],
                                    r["train_losses"], r["deviation_after"]))
        sweep.cuts.sort(key=lambda x: x.cut)
        if k == chosen.cut:
            sweep.strategies["semantic-plan"] = {"acc": r["acc_after"], "loss": r["loss_after"],
                                                 "cost_ratio": point.cost_ratio_cached, "step_seconds": r["step_seconds"],
                                                 "cut": k}
        store()

    plan_path = Path(tempfile.mkdtemp()) / "plan.json" if out is None else out / "plan.json"
    if out is None:
        chosen.save(plan_path)  # lora-plan reads the plan from a file
    for spec in c.strategies:
        resolved = None if spec.split(":")[0] not in ("top25", "random") else \
            resolve(spec, lm, seed=c.seed, steps=steps, max_length=c.max_length)
        same = next((x for x in sweep.cuts if resolved is not None and x.cut == resolved.cut), None)
        if same is not None:  # a cut the grid already trained, with the same data, seed and lr: reuse it
            sweep.strategies[spec] = {"acc": same.acc, "loss": same.loss, "cost_ratio": same.cost_ratio,
                                      "step_seconds": same.step_seconds, "seconds": same.seconds, "lr": c.lr.blocks,
                                      "trained": list(range(same.cut, L)), "cut": same.cut,
                                      "per_example_loss": same.per_example_loss,
                                      "per_example_correct": same.per_example_correct,
                                      "train_losses": same.train_losses, "deviation_after": same.deviation_after}
            store()
            continue

        def train_strategy(folder, rate, spec=spec):
            model = fresh()
            strategy_plan = resolve(spec, model, task=task, calib=parts.calib, seed=c.seed, steps=steps,
                                    plan_path=plan_path, max_length=c.max_length)
            priced = cost(lm, strategy_plan(0), seq_len, c.batch_size, label_rows=label_rows, device=c.pricing)
            r = finetune(model, task, strategy_plan, None, None, replace(run, lr=rate), out=folder, strategy=spec,
                         **common)
            return r, {"deviation_after": after_deviation(model, r.start_block if r.cached else None),
                       "cost_ratio": priced.cost_ratio_cached if r.cached else priced.cost_ratio}

        got = timed(spec.replace(":", "_"), spec, train_strategy)
        if got is None:
            continue
        r, wall = got
        sweep.strategies[spec] = {"acc": r["acc_after"], "loss": r["loss_after"], "cost_ratio": r["cost_ratio"],
                                  "step_seconds": r["step_seconds"], "seconds": wall,
                                  "trainable_params": r["trainable_params"], "trained": r["trained"],
                                  "lr": r["lr"], "per_example_loss": r["per_example_loss"],
                                  "per_example_correct": r["per_example_correct"],
                                  "train_losses": r["train_losses"], "deviation_after": r["deviation_after"]}
        store()
    sweep.complete = not sweep.pending
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
