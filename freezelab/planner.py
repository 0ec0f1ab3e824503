"""Steps 1-7 in one call: trace a calibration set, read the deviation, fit the law, compute the
gains, choose the cut and price it. What `freezelab plan` and the notebooks run."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Sequence

from .cost import Cost, cost, cut_cost_curve
from .data import Example, Task
from .deviation import Deviation, check_lens, deviation
from .encode import encode
from .errors import FreezelabError
from .gains import Gains, layer_gains
from .law import BoundWarning, Law, LowFitWarning, fit_scaling_law
from .models import LoadedModel
from .plan import Plan, check_rule, plan
from .strategies import TRAIN_BATCH
from .trace import Trace, trace_encoded



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


def make_plan(lm: LoadedModel, task: Task, calib: Sequence[Example], *, lens: str = "logit",
              restrict_to_labels: bool | None = None, include_embedding: bool = False,
              rule: str = "argmax-excess", budget: float | None = None, cached: bool = False,
              batch_size: int = 16, max_length: int = 256, first_token: bool = False,
              progress: bool = True) -> PlanRun:
    """Plan where to fine-tune `lm` for `task` from the calibration examples `calib`."""
    if not calib:
        raise FreezelabError("the calibration set is empty: give at least a few examples (--n-calib)")
    check_lens(lens)
    check_rule(rule, budget)
    start = time.perf_counter()
    enc = encode(lm.tokenizer, task, calib, max_length=max_length, first_token=first_token)
    tr = trace_encoded(lm, enc, batch_size=batch_size, progress=progress)
    dev = deviation(tr, lm, lens=lens, restrict_to_labels=restrict_to_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LowFitWarning)
        warnings.simplefilter("always", BoundWarning)
        law = fit_scaling_law(dev, include_embedding=include_embedding)
    gains = layer_gains(dev, law)
    seq_len = round(sum(len(p) for p in enc.prompts) / len(enc))
    label_rows = None if enc.label_ids is None else len(enc.label_ids)
    chosen = plan(gains, rule=rule, budget=budget, cached=cached,
                  cost_curve=cut_cost_curve(lm, seq_len, label_rows=label_rows, batch_size=TRAIN_BATCH))
    priced = cost(lm, chosen, seq_len, TRAIN_BATCH, label_rows=label_rows)
    seconds = time.perf_counter() - start
    chosen.extras.update({
        "model": lm.name, "dataset": task.name, "lens": lens,
        "restrict_to_labels": dev.restrict_to_labels, "include_embedding": include_embedding,
        "deviation": dev.mean.tolist(), "deviation_sem": dev.sem.tolist(),
        "gains": gains.to_dict(), "law": law.to_dict(),
        "embeddings": "trained" if not chosen.freeze_embeddings else "frozen",
        "head": "tied to the embeddings" if lm.tied else ("trained" if chosen.train_head else "frozen"),
        "final_norm": "trained" if chosen.train_final_norm else "frozen",
        "predicted": {"benefit": chosen.predicted_benefit, "cost_ratio": chosen.cost_ratio,
                      "cost_ratio_cached": chosen.cost_ratio_cached},
        "cost": priced.to_dict(),
        "calibration": {"n": len(enc), "seconds": seconds, "trace_seconds": tr.seconds,
                        "seq_len": seq_len, "label_rows": label_rows},
    })
    return PlanRun(tr, dev, law, gains, chosen, priced, seq_len, seconds, [str(w.message) for w in caught])
