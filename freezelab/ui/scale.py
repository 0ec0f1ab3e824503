"""Scale presets for the notebooks: how many examples, steps and sweep runs one execution uses.

`preset("full")` is what the book shows, sized so that all seven notebooks execute in about
10 to 20 minutes on a 2-core CPU: prompts are cut to their last 48 tokens, batches are small and
runs are short, so the fine-tuning results are illustrations, not a study (the results chapter,
`make results`, has the study). `preset("gpu")` is sized for one free Colab T4 (16 GB): a real
fine-tuning budget (one epoch over 1,024 training examples, 400 test examples, 128-token prompts),
each chapter in under 10 minutes with a model of up to about 0.5B parameters (estimated from FLOP
counts, not measured: CUDA cannot run where this package is developed; the code is device-agnostic).
`preset("ci")` is a tiny smoke run whose numbers mean nothing, used by the nbval test.
`preset("auto")` is `gpu` when CUDA is present, otherwise `full`. The notebooks read the preset's
name from $FREEZELAB_SCALE (default `auto`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from freezelab.errors import FreezelabError


@dataclass(frozen=True)
class Scale:
    """Sizes of one notebook execution."""

    name: str
    n_calib: int  # calibration prompts traced by the planner (03-07)
    n_train: int  # training examples for fine-tuning (06, 07)
    n_test: int  # held-out examples for loss and accuracy (06, 07)
    steps: int  # optimizer steps per fine-tuning run (06, 07)
    batch_size: int  # sequences per optimizer step
    lr: float  # AdamW learning rate, the same for every run
    timing_steps: int  # steps per run when only the time per step is measured (06)
    sweep_cuts: str  # cuts of the oracle sweep: "even:N" or "all" (07)
    sweep_strategies: tuple[str, ...]  # baselines fine-tuned next to the cuts (07)
    max_length: int  # prompt tokens kept (the last ones, so the cue is never cut)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Scale] = {
    "ci": Scale("ci", n_calib=8, n_train=8, n_test=4, steps=1, batch_size=4, lr=1e-4, timing_steps=1,
                sweep_cuts="even:2", sweep_strategies=("top25",), max_length=32),
    "full": Scale("full", n_calib=64, n_train=128, n_test=32, steps=10, batch_size=4, lr=1e-4,
                  timing_steps=4, sweep_cuts="even:3", sweep_strategies=("top25", "lora", "lora-plan"),
                  max_length=48),
    # 64 steps x 16 = 1,024 examples: one epoch over the training part.
    "gpu": Scale("gpu", n_calib=128, n_train=1024, n_test=400, steps=64, batch_size=16, lr=1e-4,
                 timing_steps=8, sweep_cuts="even:3", sweep_strategies=("top25", "lora", "lora-plan"),
                 max_length=128),
}


def preset(name: str) -> Scale:
    """The sizes of scale `name` ("ci", "full", "gpu", or "auto": `gpu` when CUDA is present,
    otherwise `full`); a FreezelabError for anything else."""
    if name == "auto":
        import torch

        name = "gpu" if torch.cuda.is_available() else "full"
    try:
        return PRESETS[name]
    except KeyError:
        raise FreezelabError(f"unknown scale '{name}': choose one of {', '.join([*PRESETS, 'auto'])} "
                             "(set FREEZELAB_SCALE)") from None
