"""Scale presets for the notebooks: how many examples, steps and sweep runs one execution uses.

`preset("full")` is what the book shows (all seven notebooks run in well under half an hour on a
2-core CPU); `preset("ci")` is a tiny smoke run whose numbers mean nothing, used by the nbval test.
The notebooks read the preset name from $FREEZELAB_SCALE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import FreezelabError


@dataclass(frozen=True)
class Scale:
    """Sizes of one notebook execution."""

    name: str
    n_calib: int  # calibration examples traced by the planner
    n_train: int  # training examples for fine-tuning
    n_test: int  # held-out examples for loss / accuracy
    steps: int  # optimizer steps per fine-tuning run
    batch_size: int  # sequences per optimizer step
    lr: float  # AdamW learning rate
    timing_steps: int  # steps per run when only the step time is measured (06)
    sweep_cuts: str  # cuts of the oracle sweep: "even:N" or "all" (07)
    sweep_strategies: tuple[str, ...]  # baselines fine-tuned next to the cuts (07)
    max_length: int = 256  # prompt tokens kept (the last ones)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Scale] = {
    "ci": Scale("ci", n_calib=10, n_train=16, n_test=10, steps=2, batch_size=4, lr=1e-4,
                timing_steps=2, sweep_cuts="even:2", sweep_strategies=("top25",), max_length=64),
    "full": Scale("full", n_calib=128, n_train=320, n_test=200, steps=24, batch_size=8, lr=1e-4,
                  timing_steps=4, sweep_cuts="even:4", sweep_strategies=("full", "top25", "lora")),
}


def preset(name: str) -> Scale:
    """The sizes of scale `name` ("ci" or "full"); a FreezelabError for anything else."""
    try:
        return PRESETS[name]
    except KeyError:
        raise FreezelabError(f"unknown scale '{name}': choose one of {', '.join(PRESETS)} "
                             "(set FREEZELAB_SCALE)") from None
