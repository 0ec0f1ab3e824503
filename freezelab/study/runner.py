"""The oracle study behind the book's results chapter (`make results`).

For each model x data set: a learning rate per family (block training and LoRA, each on a proxy
run in the top third of the blocks; full fine-tuning on itself), picked on a validation split carved
from the training data, strictly inside the grid used (`rates.pick_lr`); then, per seed, the dense
oracle grid of cuts plus every rule x lens variant's chosen cut and every baseline
(`sweep.run_sweep`), one epoch each. A run stored at another rate than its family's is stale and
trains again; `--families` lets the cheap families' reruns go first, `--lr-only` only picks the rates
and `--retrace` only writes a stored sweep's missing trace.npz (`tracefile`: what a rule reads).
The train/validation/test split is fixed (split seed 0); a seed changes the calibration sample,
the batch order, LoRA's initialisation and the random baselines. Every run is stored as it ends,
so rerunning resumes; `--collect` only rebuilds the summary (`freezelab.study.collect`).

    python -m freezelab.study --scale full --out book/results
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from freezelab.model.data import Split, load_task, split
from freezelab.costmodel.device import Device
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json
from freezelab.model.adapter import Adapter
from freezelab.model.encode import encode
from freezelab.model.models import LoadedModel, load_model
from freezelab.method.plan import Plan
from freezelab.method.trace import trace_encoded
from freezelab.study.collect import collect, load_study, missing
from freezelab.study.rates import FAMILIES, Rates, pick_lr, stale
from freezelab.study.sweep import SweepConfig, prepare, price_cuts, run_sweep
from freezelab.study.tracefile import load_trace, stored_lenses, trace_deviations, write_trace
from freezelab.train.finetune import FinetuneConfig, finetune

BUDGET = ("batch_size", "n_train", "n_val", "n_test", "n_calib", "max_length", "cuts", "lr_grid",
          "lora_lr_grid", "full_lr_grid", "strategies", "variants", "pricing")  # what a run's result depends on


@dataclass(frozen=True)
class StudyScale:
    """The fixed training budget of every run and the grid of the study."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    lm_seeds: tuple[int, ...]  # seeds of the language-modelling data set (kjv)
    batch_size: int
    n_train: int  # one epoch = n_train // batch_size steps
    n_val: int  # carved from the training split, for the learning rate
    n_test: int
    n_calib: int  # the plan's calibration sample, drawn per seed from the training examples
    max_length: int
    cuts: str
    strategies: tuple[str, ...]
    lr_grid: tuple[float, ...]  # block training's first grid (`pick_lr` extends an edge pick's)
    lora_lr_grid: tuple[float, ...]
    full_lr_grid: tuple[float, ...]
    variants: bool = True  # also run every rule x lens variant's chosen cut
    # every modelled cost of the study is priced on these fixed constants (FLOP/s, bytes/s; the
    # 2-core CPU's as first calibrated), so that no result depends on the day's calibration
    pricing: tuple[float, float] = (43667981562.45473, 10017388059.381998)

    @property
    def device(self) -> Device:
        return Device("study pricing (fixed)", *self.pricing)

    def seeds_for(self, dataset: str) -> tuple[int, ...]:
        return self.lm_seeds if dataset == "kjv" else self.seeds


BASELINES = ("full", "top25", "random", "gradnorm:8", "lisa:8", "lora", "lora-plan")
SCALES = {
    "full": StudyScale(("smollm2-135m", "gemma3-270m"), ("bbc-news", "wordnet", "kjv"), (0, 1, 2), (0,),
                       batch_size=8, n_train=384, n_val=128, n_test=400, n_calib=64, max_length=32,
                       cuts="dense", strategies=BASELINES, lr_grid=(3e-5, 1e-4, 3e-4),
                       lora_lr_grid=(3e-4, 1e-3, 3e-3), full_lr_grid=(1e-5, 3e-5, 1e-4)),
    "ci": StudyScale(("smollm2-135m",), ("movie-polarity",), (0,), (0,), batch_size=4, n_train=16, n_val=8,
                     n_test=8, n_calib=8, max_length=32, cuts="even:2", strategies=("full", "top25", "lora"),
                     lr_grid=(1e-5, 3e-5, 1e-4), lora_lr_grid=(1e-3, 3e-3, 1e-2),
                     full_lr_grid=(3e-6, 1e-5, 1e-4),
                     variants=False),
}

KJV_PATH = Path("book/results/data/kjv.txt")  # dumped by `make results` from Debian's bible-kjv


def dataset_spec(name: str) -> str:
    """`kjv` is the King James Bible as a language-modelling task (a file `make results` writes)."""
    if name != "kjv":
        return name
    if not KJV_PATH.exists():
        raise FreezelabError(f"{KJV_PATH} is missing: `make results` dumps it with Debian's bible-kjv "
                             "(apt-get install bible-kjv; bible -f 'gen1:1-rev22:21')")
    return f"text:{KJV_PATH}"


def study_split(task, scale: StudyScale, seed: int) -> tuple[Split, list]:
    """The fixed split (seed 0): the first n_train training examples, n_val after them for the
    learning rate, n_test test examples; the calibration sample is drawn per `seed` from the n_train."""
    base = split(task, seed=0, n_calib=1, max_test=scale.n_test)
    if len(base.train) < scale.n_train + scale.n_val:
        raise FreezelabError(f"{task.name} has {len(base.train)} training examples, fewer than "
                             f"n_train + n_val = {scale.n_train + scale.n_val}")
    train = base.train[: scale.n_train]
    calib = random.Random(seed).sample(train, scale.n_calib)
    return Split(train, calib, base.test), base.train[scale.n_train: scale.n_train + scale.n_val]


def pick_rates(lm: LoadedModel, task, scale: StudyScale, folder: Path, families: Sequence[str] = FAMILIES,
               progress: bool = False) -> dict[str, dict]:
    """The learning-rate pick of each of `families` (`rates.pick_lr`, stored as folder/lr_<family>.json):
    the lowest validation loss after one epoch of block training and of LoRA on the top third of the
    blocks, and of full fine-tuning itself; encodings and latent caches are built only if a rate is measured."""
    from freezelab.train.strategies import resolve

    parts, val = study_split(task, scale, 0)
    steps, L = scale.n_train // scale.batch_size, lm.num_layers
    proxy = Plan.from_cut(L, L - L // 3, rule="lr")
    plans = {"blocks": lambda m: proxy,
             "lora": lambda m: replace(proxy, rule="lr-lora", train_final_norm=False, lora=Adapter(seed=0)),
             "full": lambda m: resolve("full", m, steps=steps, max_length=scale.max_length)}
    grids = {"blocks": scale.lr_grid, "lora": scale.lora_lr_grid, "full": scale.full_lr_grid}
    shared: list = []

    def measure(fam: str):
        def val_loss(lr: float) -> float:
            if not shared:
                shared.append(prepare(lm, task, parts.train, val, scale.max_length, progress=progress)[0])
            model = load_model(lm.name, device=str(lm.device), dtype=lm.dtype)
            config = FinetuneConfig(steps=steps, lr=lr, batch_size=scale.batch_size, seed=0,
                                    max_length=scale.max_length, keep_checkpoint=False)
            r = finetune(model, task, plans[fam](model), None, None, config, prepared=shared[0],
                         strategy=f"lr {fam} {lr:g}", progress=progress)
            print(f"  lr {fam} {lr:g}: validation loss {r.loss_after:.4f}", flush=True)
            return r.loss_after
        return val_loss

    meta = {"steps": steps, "n_val": len(val), "n_train": len(parts.train)}
    picks = {fam: pick_lr(measure(fam), grids[fam], folder / f"lr_{fam}.json", meta) for fam in families}
    for fam, p in picks.items():
        print(f"  lr {fam}: {p['lr']:g} of {p['grid']}{'' if p['interior'] else ' (ON THE EDGE)'}", flush=True)
    return picks


def waiting(folder: Path, rates: Rates, families: Sequence[str]) -> bool:
    """Whether the sweep stored in `folder` has runs of `families` to train: none stored yet, an
    interrupted run (also one whose result.json is finetune's own, without what the sweep stores beside
    it), a family's rate changed, or runs pending from an earlier call."""
    path = folder / "sweep.json"
    if not path.exists():
        return True
    if any("wall_seconds" not in json.loads(p.read_text()) for p in folder.glob("runs/*/result.json")):
        return True
    s = json.loads(path.read_text())
    pending = s.get("pending", {})
    if not s["complete"] and not pending:  # stopped in the middle
        return True
    return bool(stale(s, {f: getattr(rates, f) for f in families}) or any(pending.get(f) for f in families))


def sweep_config(scale: StudyScale, rates: Rates, seed: int, families: Sequence[str] = FAMILIES) -> SweepConfig:
    """The study's sweep of one seed."""
    return SweepConfig(cuts=scale.cuts, steps=scale.n_train // scale.batch_size, lr=rates,
                       batch_size=scale.batch_size, seed=seed, strategies=tuple(scale.strategies),
                       n_test=scale.n_test, max_length=scale.max_length, variants=scale.variants,
                       pricing=scale.device, families=tuple(families))


def run_pair(model: str, dataset: str, scale: StudyScale, out: Path, seeds: Sequence[int],
             progress: bool = False, families: Sequence[str] = FAMILIES, lr_only: bool = False) -> None:
    """Learning rates, then the sweep of every seed (its runs of `families` only), for one model x data set;
    with `lr_only`, only the learning rates of `families`."""
    lm = load_model(model)
    task = load_task(dataset_spec(dataset))
    folder = out / "runs" / model / dataset
    picks = pick_rates(lm, task, scale, folder, families if lr_only else FAMILIES, progress)
    if lr_only:
        return
    rates = Rates(**{fam: p["lr"] for fam, p in picks.items()})
    for seed in seeds:
        if not waiting(folder / f"seed{seed}", rates, families):
            print(f"== {model} / {dataset} / seed {seed}: nothing of {', '.join(families)} to run", flush=True)
            continue
        parts, _ = study_split(task, scale, seed)
        t0 = time.perf_counter()
        sweep = run_sweep(lm, task, parts, sweep_config(scale, rates, seed, families), out=folder / f"seed{seed}",
                          progress=progress)
        print(f"== {model} / {dataset} / seed {seed} ({', '.join(families)}: {time.perf_counter() - t0:.0f} s)"
              f"\n{sweep}", flush=True)


def retrace_pair(model: str, dataset: str, scale: StudyScale, out: Path, seeds: Sequence[int]) -> None:
    """Write trace.npz of every stored sweep of one pair that lacks one, or lacks a lens now stored
    (`tracefile.stored_lenses`), without touching its runs: one no-grad forward of its calibration
    prompts, checked against the default lens's mean deviation in sweep.json."""
    folder = out / "runs" / model / dataset

    def current(seed: int) -> bool:
        path = folder / f"seed{seed}" / "trace.npz"
        return path.exists() and set(stored_lenses()) <= set(load_trace(path).lenses)

    seeds = [s for s in seeds if (folder / f"seed{s}" / "sweep.json").exists() and not current(s)]
    if not seeds:
        return
    lm = load_model(model)
    task = load_task(dataset_spec(dataset))
    for seed in seeds:
        parts, _ = study_split(task, scale, seed)
        enc_train = encode(lm.tokenizer, task, parts.train, scale.max_length)
        tr = trace_encoded(lm, encode(lm.tokenizer, task, parts.calib, scale.max_length), progress=False)
        deviations = trace_deviations(tr, lm)
        write_trace(folder / f"seed{seed}" / "trace.npz", deviations,
                    price_cuts(lm, enc_train, scale.batch_size, scale.device)[1], lm.num_layers)
        stored = json.loads((folder / f"seed{seed}" / "sweep.json").read_text())["deviation"]
        gap = float(np.max(np.abs(deviations["logit-labels"].mean(0) - np.array(stored))))
        print(f"== {model} / {dataset} / seed {seed}: trace.npz with {len(deviations)} lenses; mean deviation "
              f"within {gap:.2g} nats of sweep.json's", flush=True)


def lr_sensitivity(model: str, dataset: str, scale: StudyScale, out: Path, progress: bool = False) -> None:
    """The grid of cuts (no baselines) of seed 0 at the grid's learning rates either side of the
    validation-chosen one, to show how much of the realised curve is the optimiser."""
    folder = out / "runs" / model / dataset
    picked = json.loads((folder / "lr_blocks.json").read_text())
    chosen, grid = picked["lr"], sorted(picked.get("grid", scale.lr_grid))
    i = grid.index(chosen)
    others = [grid[i - 1] if i > 0 else chosen / 3, grid[i + 1] if i + 1 < len(grid) else chosen * 3]
    lm = load_model(model)
    task = load_task(dataset_spec(dataset))
    parts, _ = study_split(task, scale, 0)
    for lr in others:
        config = replace(sweep_config(scale, Rates(blocks=lr), 0), strategies=(), variants=False)
        sweep = run_sweep(lm, task, parts, config, out=folder / "lr-sensitivity" / f"lr{lr:g}", progress=progress)
        print(f"== {model} / {dataset} / lr {lr:g}\n{sweep}", flush=True)


def check_scale(out: Path, scale_name: str, scale: StudyScale) -> None:
    """Record the budget in `out/scale.json`; refuse to mix runs of another budget into `out`."""
    wanted = json.loads(json.dumps({"scale": scale_name, **asdict(scale)}))
    path = out / "scale.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if {k: stored.get(k) for k in BUDGET} != {k: wanted[k] for k in BUDGET}:
            raise FreezelabError(f"{out} holds runs of another budget ({path}); pass a fresh --out "
                                 "or remove its runs/ and scale.json")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m freezelab.study", description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="full", choices=sorted(SCALES))
    p.add_argument("--out", default="book/results")
    p.add_argument("--models", default=None, help="comma-separated subset of the scale's models")
    p.add_argument("--datasets", default=None, help="comma-separated subset of the scale's datasets")
    p.add_argument("--seeds", default=None, help="comma-separated subset of the scale's seeds")
    p.add_argument("--collect", action="store_true", help="only rebuild the summary from stored runs")
    p.add_argument("--progress", action="store_true", help="progress bars for every run")
    p.add_argument("--lr-sensitivity", action="store_true",
                   help="instead: the grid at the learning rates either side of the chosen one (seed 0)")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help="train only the missing or stale runs of these learning-rate families (the others wait)")
    p.add_argument("--lr-only", action="store_true", help="only pick (or extend) the learning rates of --families")
    p.add_argument("--no-collect", action="store_true", help="store the runs only (`--collect` summarises later)")
    p.add_argument("--if-complete", action="store_true",
                   help="summarise only when every planned sweep is complete at its pair's current rates "
                        "(otherwise name the missing ones and fail)")
    p.add_argument("--retrace", action="store_true",
                   help="only write trace.npz of every stored sweep lacking one or a lens (no training)")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    out = Path(args.out)
    check_scale(out, args.scale, scale)
    if args.lr_sensitivity:
        for dataset in args.datasets.split(",") if args.datasets else scale.datasets[:1]:
            for model in args.models.split(",") if args.models else scale.models[:1]:
                lr_sensitivity(model, dataset, scale, out, args.progress)
    elif not args.collect:
        families = tuple(f for f in args.families.split(",") if f)
        if set(families) - set(FAMILIES):
            raise FreezelabError(f"--families takes {', '.join(FAMILIES)}; got {args.families}")
        for dataset in args.datasets.split(",") if args.datasets else scale.datasets:
            for model in args.models.split(",") if args.models else scale.models:
                seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else scale.seeds_for(dataset)
                if args.retrace:
                    retrace_pair(model, dataset, scale, out, seeds)
                else:
                    run_pair(model, dataset, scale, out, seeds, args.progress, families, args.lr_only)
    if args.collect or not (args.retrace or args.lr_only or args.no_collect):
        if args.if_complete and (waiting := missing(load_study(out), scale)):
            raise FreezelabError(f"{len(waiting)} planned sweep(s) are not complete at their pair's current rates, "
                                 f"so nothing was summarised: {', '.join(f'{m} x {d} seed {s}' for m, d, s in waiting)}"
                                 "; `make results` trains them")
        collect(out, args.scale, scale)

