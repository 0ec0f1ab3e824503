"""A typed LoRA setting (what PEFT's `LoraConfig` holds, reduced to what freezelab varies) and the
projections it adapts per architecture."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from freezelab.errors import FreezelabError

# Attention and MLP projections adapted per architecture adapter (`lm.arch.name`).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}


@dataclass(frozen=True)
class Adapter:
    """LoRA adapters of rank `r` (scaled by alpha / r) in the trained blocks; A drawn from `seed`."""

    r: int = 8
    alpha: int = 16
    seed: int = 0
    targets: tuple[str, ...] | None = None  # projection names; None: the architecture's LORA_TARGETS

    def __post_init__(self) -> None:
        if self.r < 1:
            raise FreezelabError(f"the LoRA rank r must be at least 1, got {self.r}")

    def targets_for(self, arch: str) -> tuple[str, ...]:
        """The projections this adapter adapts in architecture `arch`."""
        if self.targets is not None:
            return self.targets
        if arch not in LORA_TARGETS:
            raise FreezelabError(f"no LoRA targets known for architecture {arch!r}; pass Adapter(targets=...)")
        return LORA_TARGETS[arch]

    def to_dict(self) -> dict:
        """{r, alpha, seed} (and targets when set): the `lora` entry of plan.json."""
        d = asdict(self)
        if self.targets is None:
            del d["targets"]
        else:
            d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Adapter:
        unknown = set(d) - {"r", "alpha", "seed", "targets"}
        if unknown:
            raise FreezelabError(f"a LoRA setting takes r, alpha, seed and targets, not {sorted(unknown)}")
        targets = d.get("targets")
        return cls(**{**d, "targets": tuple(targets) if targets is not None else None})
