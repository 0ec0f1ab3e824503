"""LoRA inside the trained blocks of a plan (PEFT `layers_to_transform`): freezing decides *where*,
LoRA *how*. Adapters are injected in place, so `lm.blocks` and every other path still resolve.

peft is an optional extra (`pip install 'freezelab[peft]'`), imported only when a LoRA plan runs.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch

from freezelab.errors import FreezelabError
from freezelab.train.freeze import check_plan
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan
from freezelab.model.adapter import Adapter

if TYPE_CHECKING:
    from peft import LoraConfig

def _peft() -> ModuleType:
    try:
        import peft
    except ImportError:
        raise FreezelabError("LoRA needs peft: pip install 'freezelab[peft]'") from None
    return peft


def lora_config_for(plan: Plan, lm: LoadedModel, adapter: Adapter, dropout: float = 0.0) -> LoraConfig:
    """A `peft.LoraConfig` adapting the attention and MLP projections of the plan's trained blocks only."""
    check_plan(lm, plan)
    if not plan.trained:
        raise FreezelabError("a LoRA plan needs at least one trained block to put adapters in")
    peft = _peft()
    return peft.LoraConfig(
        r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=dropout, bias="none",
        target_modules=list(adapter.targets_for(lm.arch.name)),
        layers_to_transform=sorted(plan.trained),
        layers_pattern=lm.arch.blocks.rsplit(".", 1)[-1],
        fan_in_fan_out=lm.arch.name == "gpt2",  # GPT-2 projections are Conv1D (weight d_in x d_out)
    )


def lora_blocks(lm: LoadedModel) -> list[int]:
    """0-based indices of the blocks that hold LoRA adapters (empty before injection)."""
    return [i for i, b in enumerate(lm.blocks) if any("lora_" in n for n, _ in b.named_parameters())]


def inject_lora(lm: LoadedModel, plan: Plan, adapter: Adapter) -> None:
    """Add LoRA adapters (B = 0, so the model's outputs are unchanged) to the plan's trained blocks, in
    place. The random A matrices are drawn from `adapter.seed` (the global RNG is left as it was)."""
    if lora_blocks(lm):
        raise FreezelabError(f"'{lm.name}' already has LoRA adapters in blocks {lora_blocks(lm)}; "
                             "reload the model to inject new ones")
    with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
        torch.manual_seed(adapter.seed)
        _peft().inject_adapter_in_model(lora_config_for(plan, lm, adapter), lm.model)
    lm.model.to(lm.device, lm.dtype)


def ensure_lora(lm: LoadedModel, plan: Plan) -> None:
    """Inject the adapters a LoRA plan (`plan.lora`) asks for, unless present.

    No-op for plans without LoRA; a FreezelabError when `lm` has adapters in other blocks than the plan trains.
    """
    if plan.lora is None:
        return
    present = lora_blocks(lm)
    if not present:
        inject_lora(lm, plan, plan.lora)
    elif present != sorted(plan.trained):
        raise FreezelabError(f"'{lm.name}' has LoRA adapters in blocks {present} but the plan trains "
                             f"{sorted(plan.trained)}; reload the model for this plan")
