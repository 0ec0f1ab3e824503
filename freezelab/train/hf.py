"""Plans inside a Hugging Face `Trainer`: `Trainer(..., callbacks=[FreezeCallback(plan)])`.

The plan is applied when the Trainer is built (`on_init_end`), so its optimizer and any DDP wrapper
only ever see the trainable parameters, and again when training begins. A schedule (LISA) is
re-applied at every step: the Trainer's optimizer then holds every parameter (frozen ones get no
gradient, so AdamW skips them), which rules out several processes (DDP registers parameters once).
For a LoRA plan, inject the adapters (`freezelab.train.lora.inject_lora`) before building the Trainer.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from freezelab.model.arch import architecture_for
from freezelab.errors import FreezelabError
from freezelab.train.freeze import freeze
from freezelab.train.lora import lora_blocks
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan, Schedule


def as_loaded(model: nn.Module) -> LoadedModel:
    """A bare HF causal LM (or a PEFT wrapper of one) seen through its architecture adapter (no tokenizer)."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    config = model.config
    return LoadedModel(getattr(config, "name_or_path", "") or config.model_type, model, None,
                       architecture_for(config.model_type))


class FreezeCallback(TrainerCallback):
    """Sets requires_grad per `plan` (a Plan, or a schedule step -> Plan) on the Trainer's model."""

    def __init__(self, plan: Schedule) -> None:
        self.plan = plan
        self._applied: Plan | None = None

    def _apply(self, model: nn.Module, step: int) -> None:
        plan = self.plan(step)
        if plan is self._applied:
            return
        lm = as_loaded(model)
        if plan.lora is not None and lora_blocks(lm) != sorted(plan.trained):
            raise FreezelabError(f"the LoRA plan trains blocks {sorted(plan.trained)} but the model has adapters "
                                 f"in {lora_blocks(lm)}: call freezelab.train.lora.inject_lora(lm, plan) before "
                                 "building the Trainer")
        freeze(lm, plan)
        self._applied = plan

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.plan.varies:
            if args.world_size > 1:
                raise FreezelabError("a schedule changes the trainable blocks during training, but DDP fixes "
                                     "them when it wraps the model: use one process or a fixed plan")
            return  # leave every parameter trainable so that the optimizer holds them all
        self._apply(model, 0)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        self._applied = None  # the model may have been changed since the Trainer was built
        self._apply(model, state.global_step)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.plan.varies:
            self._apply(model, state.global_step)
