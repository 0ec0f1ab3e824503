"""The oracle study behind the book's results chapter (`make results`).

For each model x data set: a learning rate per strategy family (block training, LoRA), picked on a
validation split carved from the training data, each on a proxy run of the family in the top third
of the blocks; then, per seed, the dense oracle grid of cuts plus
every rule x lens variant's chosen cut and every baseline (`sweep.run_sweep`), one epoch each.
The train/validation/test split is fixed (split seed 0); a seed changes the calibration sample,
the batch order, LoRA's initialisation and the random baselines. Every run is stored as it ends,
so rerunning resumes; `--collect` only rebuilds the summary (`freezelab.study.collect`).

    python -m freezelab.study --scale full --out book/results
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from freezelab.model.data import Split, load_task, split
from freezelab.costmodel.device import Device
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json
from freezelab.model.adapter import Adapter
from freezelab.model.models import load_model
from freezelab.method.plan import Plan
from freezelab.study.collect import collect
from freezelab.study.sweep import pick_lr, run_sweep

BUDGET = ("batch_size", "n_train", "n_val", "n_test", "n_calib", "max_length", "cuts", "lr_grid",
          "lora_lr_grid", "strategies", "variants", "pricing")  # what a run's result depends on


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
    lr_grid: tuple[float, ...]  # block training
    lora_lr_grid: tuple[float, ...]
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
                       lora_lr_grid=(3e-4, 1e-3, 3e-3)),
    "ci": StudyScale(("smollm2-135m",), ("movie-polarity",), (0,), (0,), batch_size=4, n_train=16, n_val=8,
                     n_test=8, n_calib=8, max_length=32, cuts="even:2", strategies=("full", "top25", "lora"),
                     lr_grid=(1e-4, 3e-4), lora_lr_grid=(1e-3,), variants=False),
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


def run_pair(model: str, dataset: str, scale: StudyScale, out: Path, seeds: Sequence[int],
             progress: bool = False) -> None:
    """Learning rates, then the sweep of every seed, for one model x data set."""
    lm = load_model(model)
    task = load_task(dataset_spec(dataset))
    folder = out / "runs" / model / dataset
    steps = scale.n_train // scale.batch_size
    L = lm.num_layers
    parts, val = study_split(task, scale, 0)
    proxy = Plan.from_cut(L, L - L // 3, rule="lr")  # each family's learning rate is picked on its top third
    block_lr = pick_lr(lm, task, lambda m: proxy, scale.lr_grid, parts.train, val, steps, scale.batch_size, 0,
                       scale.max_length, folder / "lr_blocks.json", progress)

    def lora_lr() -> float:
        def lora_proxy(m) -> Plan:
            return replace(proxy, rule="lr-lora", train_final_norm=False, lora=Adapter(seed=0))
        return pick_lr(lm, task, lora_proxy, scale.lora_lr_grid, parts.train, val, steps, scale.batch_size, 0,
                       scale.max_length, folder / "lr_lora.json", progress)["lr"]

    for seed in seeds:
        parts, _ = study_split(task, scale, seed)
        sweep = run_sweep(lm, task, parts, cuts=scale.cuts, steps=steps, lr=block_lr["lr"], lora_lr=lora_lr,
                          batch_size=scale.batch_size, seed=seed, out=folder / f"seed{seed}",
                          strategies=scale.strategies, max_length=scale.max_length, variants=scale.variants,
                          n_test=scale.n_test, pricing=scale.device, progress=progress)
        print(f"== {model} / {dataset} / seed {seed}\n{sweep}", flush=True)


def lr_sensitivity(model: str, dataset: str, scale: StudyScale, out: Path, progress: bool = False) -> None:
    """The grid of cuts (no baselines) of seed 0 at the grid's learning rates either side of the
    validation-chosen one, to show how much of the realised curve is the optimiser."""
    folder = out / "runs" / model / dataset
    chosen = json.loads((folder / "lr_blocks.json").read_text())["lr"]
    grid = sorted(scale.lr_grid)
    i = grid.index(chosen)
    others = [grid[i - 1] if i > 0 else chosen / 3, grid[i + 1] if i + 1 < len(grid) else chosen * 3]
    lm = load_model(model)
    task = load_task(dataset_spec(dataset))
    parts, _ = study_split(task, scale, 0)
    for lr in others:
        sweep = run_sweep(lm, task, parts, cuts=scale.cuts, steps=scale.n_train // scale.batch_size, lr=lr,
                          batch_size=scale.batch_size, seed=0, out=folder / "lr-sensitivity" / f"lr{lr:g}",
                          max_length=scale.max_length, n_test=scale.n_test, pricing=scale.device,
                          progress=progress)
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
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    out = Path(args.out)
    check_scale(out, args.scale, scale)
    if args.lr_sensitivity:
        for dataset in args.datasets.split(",") if args.datasets else scale.datasets[:1]:
            for model in args.models.split(",") if args.models else scale.models[:1]:
                lr_sensitivity(model, dataset, scale, out, args.progress)
    elif not args.collect:
        for dataset in args.datasets.split(",") if args.datasets else scale.datasets:
            for model in args.models.split(",") if args.models else scale.models:
                seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else scale.seeds_for(dataset)
                run_pair(model, dataset, scale, out, seeds, args.progress)
    collect(out, args.scale, scale)

