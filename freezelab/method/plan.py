"""Steps 5 and 7 of the method (book/method.md): where to cut (freeze blocks 1..k, train k+1..L) and what each cut buys."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from freezelab.costmodel.nominal import nominal_cost_curve
from freezelab.errors import FreezelabError
from freezelab.io import atomic_write_json
from freezelab.method.gains import Gains
from freezelab.model.adapter import Adapter

RULES = ("argmax-excess", "argmax-raw", "budget", "knee", "knee-gain")
KNEE_RULES = ("knee", "knee-gain")  # candidates of the knee study (book: results chapter)
# the name under which classroom.checks and the assignment notebooks import the nominal curve
default_cost_curve = nominal_cost_curve
SHARE_RULES = KNEE_RULES  # the rules that take `share`; only "budget" takes `budget`


@dataclass(frozen=True)
class CutPoint:
    """Cut k: blocks 1..k frozen, k+1..L trained."""

    cut: int
    benefit: float  # predicted benefit, nats
    benefit_ratio: float  # benefit / benefit of cut 0 (full fine-tuning)
    cost_ratio: float  # predicted step time / full fine-tuning's (cost ledger)
    cost_ratio_cached: float  # same, with the frozen prefix's outputs cached


class Schedule(Protocol):
    """The plan in force at each optimizer step: what `finetune` and `FreezeCallback` follow. A `Plan`
    is the schedule that never changes; LISA's sampling (`train.strategies.LisaSchedule`) varies."""

    num_layers: int
    varies: ClassVar[bool]  # False: the same plan at every step (a fixed plan)
    extras: dict

    def __call__(self, step: int) -> Plan: ...


@dataclass(frozen=True)
class Plan:
    """Which blocks to freeze: the `cut` k freezes blocks 1..k and trains k+1..L; 0-based
    `frozen` = 0..k-1 and `trained` = k..L-1 partition range(L) (a baseline may train any subset)."""

    num_layers: int
    cut: int  # k: the number of frozen blocks (blocks 1..k frozen, k+1..L trained)
    frozen: list[int]
    trained: list[int]
    rule: str
    budget: float | None  # the budget rule's cost cap, a share of full fine-tuning's step cost
    predicted_benefit: float | None  # nats; None when the plan was made without gains
    cost_ratio: float
    cost_ratio_cached: float
    curve: list[CutPoint]  # every cut k = 0..L-1 (empty without gains)
    freeze_embeddings: bool = True
    train_final_norm: bool = True
    train_head: bool = False  # the LM head follows the embedding when tied
    lora: Adapter | None = None  # LoRA adapters inside the trained blocks, base weights frozen
    share: float | None = None  # the knee rules' share of the benefit (or gains) to keep
    extras: dict = field(default_factory=dict)  # caller's metadata (model, dataset, lens, law, gains...)
    varies: ClassVar[bool] = False  # as a `Schedule`: the same plan at every step

    def to_dict(self) -> dict:
        """The plan's fields with `extras` merged in at the top level (the plan.json layout); an
        unset `lora` or `share` is left out."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["curve"] = [asdict(c) for c in self.curve]
        for optional in ("lora", "share"):
            if d[optional] is None:
                del d[optional]
        if self.lora is not None:
            d["lora"] = self.lora.to_dict()
        return {**d.pop("extras"), **d}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan from its plan.json layout; `chosen_layer` (the old name of `cut`) is read too."""
        if "cut" not in d and "chosen_layer" in d:
            d = {**{k: v for k, v in d.items() if k != "chosen_layer"}, "cut": d["chosen_layer"]}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise FreezelabError(f"a saved plan needs the keys {missing}; write plans with Plan.save")
        known = {f.name for f in fields(cls)} - {"extras"}
        values = {k: v for k, v in d.items() if k in known}
        values["curve"] = [CutPoint(**c) for c in values["curve"]]
        if values.get("lora") is not None:
            values["lora"] = Adapter.from_dict(values["lora"])
        if sorted(values["frozen"] + values["trained"]) != list(range(values["num_layers"])):
            raise FreezelabError(
                f"a plan's frozen and trained blocks must partition range({values['num_layers']}); "
                f"got frozen {values['frozen']}, trained {values['trained']}"
            )
        return cls(**values, extras={k: v for k, v in d.items() if k not in known})

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as JSON, atomically; numpy values in `extras` become lists."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise FreezelabError(f"no plan at {path}; make one with plan(...) and Plan.save") from None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise FreezelabError(f"{path} is not a plan JSON file ({e}); write plans with Plan.save") from None

    @classmethod
    def from_cut(cls, num_layers: int, k: int, rule: str = "manual", curve: list[CutPoint] | None = None) -> Plan:
        """A plan that freezes blocks 1..k (e.g. full fine-tuning is k = 0, top-25% is k = L - L//4).

        With `curve` (from `benefit_curve`) benefit and costs are read at cut k; without it the
        benefit is None and the costs are the nominal ones of equal blocks (`nominal_cost_curve`);
        `train.strategies.resolve` prices its plans on the model instead.
        """
        if not 0 <= k < num_layers:
            raise FreezelabError(
                f"cut k = {k} is out of range for {num_layers} blocks: freeze k = 0..{num_layers - 1} blocks "
                "(at least the last block must be trained)"
            )
        if curve and len(curve) != num_layers:
            raise FreezelabError(
                f"curve has {len(curve)} cuts but the model has {num_layers} blocks; pass plan(...).curve of this model"
            )
        if curve:
            point = curve[k]
            benefit, ratio, ratio_cached = point.benefit, point.cost_ratio, point.cost_ratio_cached
        else:
            ratios, cached = nominal_cost_curve(num_layers)
            benefit, ratio, ratio_cached = None, float(ratios[k]), float(cached[k])
        return cls(
            num_layers=num_layers,
            cut=k,
            frozen=list(range(k)),
            trained=list(range(k, num_layers)),
            rule=rule,
            budget=None,
            predicted_benefit=benefit,
            cost_ratio=ratio,
            cost_ratio_cached=ratio_cached,
            curve=list(curve or []),
        )

    def __call__(self, step: int) -> Plan:
        """A plan is a schedule that never changes: the plan of every step is itself."""
        return self

    @property
    def contiguous(self) -> bool:
        """Blocks 1..cut frozen and the rest trained (a cut plan, not a subset)."""
        return self.frozen == list(range(self.cut)) and self.trained == list(range(self.cut, self.num_layers))


def benefit_curve(gains: Gains, cost_curve: tuple[np.ndarray, np.ndarray] | None = None) -> list[CutPoint]:
    """Predicted benefit and cost of every cut k = 0..L-1.

    Benefit (our reconstruction of step 7): the shortfall the trainable suffix can still make up,
    benefit(k) = sum_{l=k+1..L} max(0, -g_l) nats, i.e. how far the trained blocks fall short of the
    generic law. benefit_ratio = benefit(k) / benefit(0) (1 everywhere when benefit(0) = 0).
    `cost_curve` is (ratio, ratio_cached) of shape (L,) from `cost.cut_cost_curve`;
    None means `cost.nominal_cost_curve` (equal blocks, no head or embeddings).
    """
    L = gains.excess.size
    ratio, cached = nominal_cost_curve(L) if cost_curve is None else map(np.asarray, cost_curve)
    if ratio.shape != (L,) or cached.shape != (L,):
        raise FreezelabError(
            f"cost_curve must be two arrays of shape ({L},), one ratio per cut, got {ratio.shape} and "
            f"{cached.shape}; build it with cost.cut_cost_curve on the same model"
        )
    shortfall = np.maximum(0.0, -gains.excess)
    benefit = np.cumsum(shortfall[::-1])[::-1]
    benefit_ratio = benefit / benefit[0] if benefit[0] > 0 else np.ones(L)
    return [
        CutPoint(int(k), float(benefit[k]), float(benefit_ratio[k]), float(ratio[k]), float(cached[k]))
        for k in range(L)
    ]


def _deepest_argmax(values: np.ndarray) -> int:
    """Index of the maximum, ties going to the largest index."""
    return int(np.flatnonzero(values == values.max())[-1])


def knee_cut(values: np.ndarray, share: float) -> int:
    """The deepest cut k whose trained suffix keeps `share` of the total: max k with
    sum(values[k:]) >= share * sum(values) (values (L,) >= 0, block l at index l-1); 0 if all are 0."""
    kept = np.cumsum(values[::-1])[::-1]
    if kept[0] <= 0:
        return 0
    return int(np.flatnonzero(kept >= share * kept[0] - 1e-12)[-1])


def _choose_cut(gains: Gains, rule: str, budget: float | None, share: float | None, ratios: np.ndarray,
                benefit: np.ndarray) -> int:
    L = gains.excess.size
    if rule == "knee":  # the predicted benefit (shortfalls above the cut) saturates
        return knee_cut(np.maximum(0.0, -gains.excess), share)
    if rule == "knee-gain":  # the trained suffix holds this share of the positive excess gains
        return knee_cut(np.maximum(0.0, gains.excess), share)
    if rule in ("argmax-excess", "argmax-raw"):
        if L < 3:
            raise FreezelabError(
                f"the argmax rules choose among blocks 2..L-1 and need L >= 3, got L = {L}; "
                "use rule='budget' or Plan.from_cut"
            )
        score = gains.excess if rule == "argmax-excess" else gains.observed
        return 2 + _deepest_argmax(score[1 : L - 1])
    fits = np.flatnonzero(ratios <= budget + 1e-12)
    if fits.size == 0:
        raise FreezelabError(
            f"no cut fits the cost budget {budget}: the cheapest cut costs {ratios.min():.3f} of full "
            "fine-tuning; raise the budget"
        )
    return int(fits[_deepest_argmax(benefit[fits])])


def check_rule(rule: str, budget: float | None = None, share: float | None = None) -> None:
    """A FreezelabError unless `rule` is known and gets the one setting it takes: `budget` (a cost
    cap) for the budget rule, `share` for the knee rules, neither for the argmax rules."""
    if rule not in RULES:
        raise FreezelabError(f"unknown rule {rule!r}; choose one of {RULES}")
    if rule == "budget" and (budget is None or not 0 < budget <= 1):
        raise FreezelabError(
            f"rule='budget' needs a cost budget in (0, 1] (a share of full fine-tuning), got {budget}"
        )
    if rule in SHARE_RULES:
        if budget is not None:
            raise FreezelabError(f"rule={rule!r} takes the share of the benefit to keep as share= "
                                 f"(--share), not a cost budget; got budget={budget}")
        if share is None or not 0 < share <= 1:
            raise FreezelabError(f"rule={rule!r} needs the share of the benefit to keep, in (0, 1], as "
                                 f"share= (--share); got {share}")
    elif share is not None:
        raise FreezelabError(f"a share only applies to the knee rules {SHARE_RULES}, not {rule!r}")
    if rule != "budget" and rule not in SHARE_RULES and budget is not None:
        raise FreezelabError(
            f"a budget only applies to rule='budget', not {rule!r}; drop it or set rule='budget'"
        )


def plan(
    gains: Gains,
    rule: str = "argmax-excess",
    budget: float | None = None,
    cost_curve: tuple[np.ndarray, np.ndarray] | None = None,
    cached: bool = False,
    share: float | None = None,
) -> Plan:
    """Choose the cut k from the gains (step 5) and report benefit and cost of every cut (step 7).

    Rules: "argmax-excess" (paper rule) k = argmax_{2 <= l <= L-1} g_l; "argmax-raw" the same on the
    observed gains delta_l; "budget": among cuts whose cost ratio (cached ratio when `cached`) is at
    most `budget` in (0, 1], the one with the highest predicted benefit. Ties go to the deeper cut.
    Candidates (the knee study): "knee", the deepest cut whose predicted benefit is at least the
    `share` of full fine-tuning's; "knee-gain", the deepest cut whose trained blocks hold that
    share of the positive excess gains (the blocks doing task work beyond the law).
    """
    check_rule(rule, budget, share)
    curve = benefit_curve(gains, cost_curve)
    ratios = np.array([c.cost_ratio_cached if cached else c.cost_ratio for c in curve])
    k = _choose_cut(gains, rule, budget, share, ratios, np.array([c.benefit for c in curve]))
    return replace(Plan.from_cut(gains.excess.size, k, rule=rule, curve=curve), budget=budget, share=share)
