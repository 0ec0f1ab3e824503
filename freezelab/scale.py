"""Scale presets for the notebooks: how many examples, steps and sweep runs one execution uses.

`preset("full")` is what the book shows, sized so that all seven notebooks execute in about
10 to 20 minutes on a 2-core CPU: prompts are cut to their last 48 tokens, batches are small and
runs are short, so the fine-tuning results are illustrations, not a study (the results chapter,
`make results`, has the study). `preset("ci")` is a tiny smoke run whose numbers mean nothing, used by
the nbval test. The notebooks read the preset's name from $FREEZELAB_SCALE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import FreezelabError


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
}


def preset(name: str) -> Scale:
    """The sizes of scale `name` ("ci" or "full"); a FreezelabError for anything else."""
    try:
        return PRESETS[name]
    except KeyError:
        raise FreezelabError(f"unknown scale '{name}': choose one of {', '.join(PRESETS)} "
                             "(set FREEZELAB_SCALE)") from None
