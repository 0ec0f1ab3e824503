"""The `freezelab` command line: models, datasets, info, plan, finetune, sweep, bench, cost, rules, grade."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="offline name, local folder or hub id")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, else fp32), fp32, bf16, fp16")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="bbc-news",
                   help="bbc-news, movie-polarity, hf:sst2, csv:PATH (delimiter sniffed), tsv:PATH, jsonl:PATH, text:PATH")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-map", default=None,
                   help="JSON object mapping label strings to single-token words")
    p.add_argument("--template", default=None, help="prompt template containing {text}")
    p.add_argument("--first-token", action="store_true",
                   help="use the first token of label words that are several tokens")
    p.add_argument("--max-length", type=int, default=256, help="prompt tokens kept (the last ones)")
    p.add_argument("--seed", type=int, default=0)


def _load(args: argparse.Namespace):
    """The model, the task and its seeded split from the common arguments."""
    from freezelab.model.data import load_task, split
    from freezelab.model.models import load_model

    try:
        label_map = json.loads(args.label_map) if args.label_map else None
    except json.JSONDecodeError as e:
        raise FreezelabError(f"--label-map is not valid JSON ({e})") from None
    task = load_task(args.data, text_column=args.text_column, label_column=args.label_column,
                     label_map=label_map, template=args.template, seed=args.seed)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    parts = split(task, seed=args.seed, n_calib=getattr(args, "n_calib", 64))
    return lm, task, parts


def _cmd_models(_args: argparse.Namespace) -> None:
    from freezelab.model.models import list_models

    for m in list_models():
        print(f"{'*' if m.offline else ' '} {m.name:<34} {m.description}")
    print("\n* loadable here without network")


def _cmd_datasets(_args: argparse.Namespace) -> None:
    from freezelab.model.data import list_datasets

    for d in list_datasets():
        print(f"{'*' if d.offline else ' '} {d.name:<16} {d.kind:<15} {d.description}")
    print("\n* available here without network")


def _cmd_info(args: argparse.Namespace) -> None:
    lm, task, parts = _load(args)
    print(lm.summary())
    print(task.summary())
    print(f"split (seed {args.seed}): {len(parts.train)} train, {len(parts.calib)} calibration, "
          f"{len(parts.test)} test")


def _cmd_plan(args: argparse.Namespace) -> None:
    from freezelab.ui import report
    from freezelab.method.pipeline import make_plan

    from freezelab.method.lens import check_lens
    from freezelab.method.plan import check_rule
    from freezelab.study.decision import plan_note, variant

    rule = args.rule or ("budget" if args.budget is not None else "argmax-excess")
    check_rule(rule, args.budget, args.share)  # before the model loads
    check_lens(args.lens)
    lm, task, parts = _load(args)
    run = make_plan(lm, task, parts.calib, lens=args.lens, restrict_to_labels=not args.full_vocab,
                    include_embedding=args.include_embedding, rule=rule, budget=args.budget, share=args.share,
                    cached=args.cached, batch_size=args.batch_size, max_length=args.max_length,
                    first_token=args.first_token, progress=not args.json)
    if args.out:
        report.write(run, lm, args.out)
    if args.json:
        print(json.dumps(run.plan.to_dict(), indent=2))
        return
    print(lm.summary())
    print(task.summary())
    print(report.table(run))
    note = plan_note(variant(rule, args.share, args.lens, not args.full_vocab), lm.num_layers)
    if note:  # the study recommends another rule (freezelab/recommendation.json, written by its --collect)
        print(note)
    if args.out:
        print(f"wrote {Path(args.out) / 'plan.json'}, report.md and figures")


def _cmd_finetune(args: argparse.Namespace) -> None:
    from freezelab.train.finetune import FinetuneConfig, finetune
    from freezelab.train.strategies import resolve

    lm, task, parts = _load(args)
    train = parts.train[: args.n_train] if args.n_train else parts.train
    test = parts.test[: args.n_test] if args.n_test else parts.test
    plan = resolve(args.plan, lm, task=task, calib=parts.calib, seed=args.seed, steps=args.steps,
                   plan_path=args.plan_path, max_length=args.max_length)
    config = FinetuneConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                            cache_prefix=args.cache_prefix, max_length=args.max_length, first_token=args.first_token)
    result = finetune(lm, task, plan, train, test, config, out=args.out, resume=args.resume, strategy=args.plan)
    print(json.dumps({k: v for k, v in result.to_dict().items() if k not in ("train_losses", "step_times", "per_example_loss", "per_example_correct")}, indent=2))


def _cmd_sweep(args: argparse.Namespace) -> None:
    from freezelab.study.rates import Rates
    from freezelab.study.sweep import SweepConfig, run_sweep

    lm, task, parts = _load(args)
    rates = Rates(blocks=args.lr, lora=args.lora_lr, full=args.full_lr or args.lr)
    config = SweepConfig(cuts=args.cuts, steps=args.steps, lr=rates, batch_size=args.batch_size, seed=args.seed,
                         strategies=tuple(args.strategies.split(",")) if args.strategies else (),
                         n_train=args.n_train, n_test=args.n_test, max_length=args.max_length,
                         first_token=args.first_token, variants=args.variants)
    print(run_sweep(lm, task, parts, config, out=args.out))


def _cmd_bench(args: argparse.Namespace) -> None:
    import runpy

    script = Path("benchmarks/step_cost.py")
    if not script.exists():
        raise FreezelabError("the step-cost benchmark lives in benchmarks/ of a freezelab checkout: "
                             "run `freezelab bench` from the repository root")
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = [str(script), *rest]
    sys.path.insert(0, str(script.parent))  # the script imports its sibling _common.py
    runpy.run_path(str(script), run_name="__main__")


def _cmd_cost(args: argparse.Namespace) -> None:
    from freezelab.costmodel.device import MB, device_constants
    from freezelab.costmodel.ledger import cost
    from freezelab.model.models import load_model
    from freezelab.train.strategies import resolve

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    chosen = resolve(args.plan, lm, max_length=args.seq_len or 256)
    chosen = chosen(0)  # a LISA schedule: its first draw
    calibration = chosen.extras.get("calibration", {})
    seq_len = args.seq_len or calibration.get("seq_len")
    if seq_len is None:
        raise FreezelabError("give --seq-len: the plan does not record its calibration prompts' length")
    label_rows = args.label_rows if args.label_rows is not None else calibration.get("label_rows")
    device = device_constants(lm.device, lm.dtype, refresh=args.calibrate)
    priced = cost(lm, chosen, seq_len, args.batch, label_rows=label_rows, device=device)
    print(lm.summary())
    for ledger in (priced.plan, priced.plan_cached, priced.full):
        print(f"\n{ledger.table()}")
    print(f"\ncost ratio {priced.cost_ratio:.3f} of full fine-tuning ({priced.cost_ratio_cached:.3f} with the "
          f"frozen prefix cached); device {device.flops / 1e9:.1f} GFLOP/s, {device.bandwidth / 1e9:.2f} GB/s; "
          f"peak {priced.peak_memory_bytes / MB:.0f} MB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, priced.to_dict(), newline=True)
        print(f"wrote {args.json}")


def _cmd_grade(args: argparse.Namespace) -> int:
    from freezelab.classroom.grade import main

    return main(args.notebook, json_path=args.json, timeout=args.timeout, seed=args.seed, oracles=tuple(args.oracles))


def _cmd_rules(args: argparse.Namespace) -> None:
    from freezelab.study.rules import STUDY, leaderboard, score_rules

    scores = score_rules(args.rules_file, oracles=args.oracles or [STUDY])
    print(leaderboard(scores))
    if args.json:
        atomic_write_json(args.json, scores.to_dict(), newline=True)
        print(f"wrote {args.json}")


def build_parser() -> argparse.ArgumentParser:
    from freezelab.method.lens import describe_lenses

    parser = argparse.ArgumentParser(prog="freezelab", description=(
        "Semantic-aware layer freezing: decide where to fine-tune a language model."))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list models (offline ones marked)").set_defaults(func=_cmd_models)
    sub.add_parser("datasets", help="list datasets").set_defaults(func=_cmd_datasets)

    p = sub.add_parser("info", help="summarise a model and a task")
    _model_args(p), _data_args(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("plan", help="trace, deviation, law, gains: which blocks to freeze")
    _model_args(p), _data_args(p)
    p.add_argument("--n-calib", type=int, default=256, help="calibration examples (class-balanced)")
    p.add_argument("--lens", default="logit", help="the lens that reads the deviation (name[:option=value,...]): "
                   + "; ".join(f"{usage}: {text}" for usage, text in describe_lenses()))
    p.add_argument("--full-vocab", action="store_true", help="do not restrict the lens to the labels")
    p.add_argument("--include-embedding", action="store_true", help="fit the law from l = 0")
    p.add_argument("--rule", default=None,
                   help="argmax-excess (the paper's rule, the default), argmax-raw, budget, knee or knee-gain")
    p.add_argument("--budget", type=float, default=None,
                   help="the budget rule's cost cap, a share of full fine-tuning's step cost in (0, 1] "
                        "(alone, it implies --rule budget)")
    p.add_argument("--share", type=float, default=None,
                   help="the knee rules' share of the predicted benefit to keep, in (0, 1]")
    p.add_argument("--cached", action="store_true", help="the budget counts the cached cost ratio")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="folder for plan.json, report.md and figures")
    p.add_argument("--json", action="store_true", help="print plan.json to stdout")
    p.set_defaults(func=_cmd_plan)

    def train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, default=100)
        p.add_argument("--lr", type=float, default=1e-4)
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--n-train", type=int, default=None, help="use only the first N training examples")
        p.add_argument("--n-test", type=int, default=256, help="held-out examples evaluated")
        p.add_argument("--n-calib", type=int, default=64)
        p.add_argument("--out", default=None)

    p = sub.add_parser("finetune", help="fine-tune under a plan or a baseline strategy")
    _model_args(p), _data_args(p), train_args(p)
    p.add_argument("--plan", default="full", help=(
        "runs/X/plan.json, full, top:K, top25, random, gradnorm:K, lisa:K[:P], lora, lora-plan"))
    p.add_argument("--plan-path", default=None, help="plan.json for lora-plan")
    p.add_argument("--cache-prefix", action="store_true", help="cache the frozen prefix's outputs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("sweep", help="oracle sweep: fine-tune each cut and compare with the plan")
    _model_args(p), _data_args(p), train_args(p)
    p.add_argument("--cuts", default="even:6",
                   help="dense (every cut up to 18 blocks, else every second), all, every:N or even:N")
    p.add_argument("--lora-lr", type=float, default=1e-3, help="learning rate of the LoRA strategies")
    p.add_argument("--full-lr", type=float, default=None, help="learning rate of full fine-tuning (default: --lr)")
    p.add_argument("--variants", action="store_true",
                   help="also fine-tune the cut of every rule x lens variant")
    p.add_argument("--strategies", default="full,top25,random,gradnorm:8,lisa:8,lora,lora-plan",
                   help="baselines run next to the cuts (comma separated; empty for none)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("bench", help="time an optimizer step per strategy (see benchmarks/)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the step-cost benchmark")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("cost", help="the cost ledger of a plan: FLOPs, bytes, seconds and memory per part")
    _model_args(p)
    p.add_argument("--plan", required=True,
                   help="plan.json or a strategy (full, top:K, top25, random, lisa:K, lora, lora-plan:PATH)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence (default: the plan's calibration length; needed for random twins)")
    p.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    p.add_argument("--label-rows", type=int, default=None,
                   help="classification over this many head rows (default: the plan's; else the LM loss)")
    p.add_argument("--calibrate", action="store_true", help="measure the device's constants again")
    p.add_argument("--json", default=None, help="also write the ledger to this JSON file")
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("rules", help="score rules written later on the stored oracle sweeps (no model loaded)")
    rules = p.add_subparsers(dest="action", required=True)
    p = rules.add_parser("score", help="each public function of a rules file, t -> cut k, on every stored oracle")
    p.add_argument("rules_file", help="a Python file; each public top-level function is a rule (freezelab.study.rules)")
    p.add_argument("--oracles", nargs="+", default=None, metavar="DIR",
                   help="folders holding runs/MODEL/DATASET/seedS/ sweeps (default: the checkout's book/results)")
    p.add_argument("--json", default=None, help="also write every score to this JSON file")
    p.set_defaults(func=_cmd_rules)

    p = sub.add_parser("grade", help="execute an assignment notebook and run every check (freezelab.classroom)")
    p.add_argument("notebook", help="a notebook of notebooks/assignments/, filled in by a student")
    p.add_argument("--json", default=None, help="write the scores here (for a learning-management system)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    p.add_argument("--seed", type=int, default=None,
                   help="draw the hidden cases from this seed (the JSON records it: the same seed regrades exactly)")
    p.add_argument("--oracles", action="append", default=[], metavar="DIR",
                   help="the capstone: also score the rule on the oracle sweeps under DIR (repeatable)")
    p.set_defaults(func=_cmd_grade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except FreezelabError as e:
        print(f"freezelab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freezelab: interrupted (checkpoints, if any, are saved: rerun with --resume)",
              file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
