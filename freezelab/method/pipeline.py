"""Steps 1-7 in one call: trace a calibration set, read the deviation, fit the law, compute the
gains, choose the cut and price it. What `freezelab plan` and the notebooks run."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

from freezelab.costmodel.ledger import Cost, TRAIN_BATCH, cut_cost_curve, price
from freezelab.model.data import Example, Task
from freezelab.method.lens import Deviation, check_lens, deviation
from freezelab.model.encode import encode
from freezelab.errors import FreezelabError
from freezelab.method.gains import Gains, layer_gains
from freezelab.method.law import BoundWarning, Law, LowFitWarning, fit_scaling_law
from freezelab.model.models import LoadedModel
from freezelab.method.plan import Plan, check_rule, plan
from freezelab.method.trace import Trace, trace_encoded



@dataclass
class PlanRun:
    """Everything the method computed on the way to a plan."""

    trace: Trace
    deviation: Deviation
    law: Law
    gains: Gains
    plan: Plan
    cost: Cost
    seq_len: int  # mean calibration prompt length in tokens, used by the cost ledger
    seconds: float  # wall time of the whole planning
    warnings: list[str]


@dataclass(frozen=True)
class Reading:
    """A trace read through one lens: steps 2-4 (deviation, law, gains) and the law's warnings."""

    deviation: Deviation
    law: Law
    gains: Gains
    warnings: list[str]


def read_trace(tr: Trace, lm: LoadedModel, lens: str = "logit", restrict_to_labels: bool | None = None,
               include_embedding: bool = False) -> Reading:
    """Deviation d_0..d_L through `lens`, the fitted law and each block's gains."""
    dev = deviation(tr, lm, lens=lens, restrict_to_labels=restrict_to_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LowFitWarning)
        warnings.simplefilter("always", BoundWarning)
        law = fit_scaling_law(dev, include_embedding=include_embedding)
    return Reading(dev, law, layer_gains(dev, law), [str(w.message) for w in caught])


def plan_reading(reading: Reading, lm: LoadedModel, rule: str = "argmax-excess", budget: float | None = None,
                 share: float | None = None, cost_curve: tuple | None = None, cached: bool = False) -> Plan:
    """Step 5 on a reading: the plan of `rule`, with what the method read in its extras."""
    dev = reading.deviation
    chosen = plan(reading.gains, rule=rule, budget=budget, share=share, cost_curve=cost_curve, cached=cached)
    return replace(chosen, extras={
        "model": lm.name, "lens": dev.lens, "restrict_to_labels": dev.restrict_to_labels,
        "deviation": dev.mean.tolist(), "gains": reading.gains.to_dict(), "law": reading.law.to_dict()})


def make_plan(lm: LoadedModel, task: Task, calib: Sequence[Example], *, lens: str = "logit",
              restrict_to_labels: bool | None = None, include_embedding: bool = False,
              rule: str = "argmax-excess", budget: float | None = None, share: float | None = None,
              cached: bool = False, batch_size: int = 16, max_length: int = 256, first_token: bool = False,
              progress: bool = True) -> PlanRun:
    """Plan where to fine-tune `lm` for `task` from the calibration examples `calib`: steps 1-7,
    priced once (`costmodel.ledger.price`) at the calibration prompts' mean length and TRAIN_BATCH."""
    if not calib:
        raise FreezelabError("the calibration set is empty: give at least a few examples (--n-calib)")
    check_lens(lens)
    check_rule(rule, budget, share)
    start = time.perf_counter()
    enc = encode(lm.tokenizer, task, calib, max_length=max_length, first_token=first_token)
    tr = trace_encoded(lm, enc, batch_size=batch_size, progress=progress)
    reading = read_trace(tr, lm, lens, restrict_to_labels, include_embedding)
    seq_len = round(sum(len(p) for p in enc.prompts) / len(enc))
    label_rows = None if enc.label_ids is None else len(enc.label_ids)
    chosen = plan_reading(reading, lm, rule, budget, share, cached=cached,
                          cost_curve=cut_cost_curve(lm, seq_len, label_rows=label_rows, batch_size=TRAIN_BATCH))
    chosen, priced = price(lm, chosen, seq_len, label_rows)
    seconds = time.perf_counter() - start
    dev = reading.deviation
    chosen = replace(chosen, extras={
        **chosen.extras, "dataset": task.name, "include_embedding": include_embedding,
        "deviation_sem": dev.sem.tolist(),
        "embeddings": "trained" if not chosen.freeze_embeddings else "frozen",
        "head": "tied to the embeddings" if lm.tied else ("trained" if chosen.train_head else "frozen"),
        "final_norm": "trained" if chosen.train_final_norm else "frozen",
        "predicted": {"benefit": chosen.predicted_benefit, "cost_ratio": chosen.cost_ratio,
                      "cost_ratio_cached": chosen.cost_ratio_cached},
        "cost": priced.to_dict(),
        "calibration": {"n": len(enc), "seconds": seconds, "trace_seconds": tr.seconds,
                        "seq_len": seq_len, "label_rows": label_rows},
    })
    return PlanRun(tr, dev, reading.law, reading.gains, chosen, priced, seq_len, seconds, reading.warnings)
