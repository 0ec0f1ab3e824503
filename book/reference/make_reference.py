"""The canonical reference trace of the book: SmolLM2-135M x BBC News at the notebooks' `full` scale.

    python book/reference/make_reference.py

Runs the method once (the calibration prompts, prompt length and seed of `preset("full")`, the
default label-restricted logit lens) and writes freezelab/smollm2_bbc.json, package data read by
``freezelab.classroom.checks.reference_trace()``. The assignments' graders use its trace, and the book's
local extension (book/_ext/freezelab_book.py) turns its numbers into MyST substitutions such as
{{ ref_chosen }}, so the method page, the chapters and the assignments quote one trace, never typed numbers.
"""

import json
from pathlib import Path

import numpy as np

from freezelab.data import load_task, split
from freezelab.deviation import deviation
from freezelab.gains import layer_gains
from freezelab.law import fit_scaling_law
from freezelab.models import load_model
from freezelab.planner import make_plan
from freezelab.scale import preset

from freezelab.classroom.checks import REFERENCE as OUT
MODEL, DATA = "smollm2-135m", "bbc-news"


def main() -> None:
    S = preset("full")
    lm, task = load_model(MODEL, device="cpu"), load_task(DATA)
    parts = split(task, seed=S.seed, n_calib=S.n_calib)
    run = make_plan(lm, task, parts.calib, max_length=S.max_length, progress=False)
    d, L = run.deviation.mean, lm.num_layers
    full_vocab = deviation(run.trace, lm, "logit", restrict_to_labels=False).mean
    with_embedding = layer_gains(run.deviation, fit_scaling_law(run.deviation, include_embedding=True, min_r2=0))
    reference = {
        "model": MODEL, "data": DATA, "scale": S.to_dict(), "lens": run.deviation.lens,
        "n_calib": len(parts.calib), "num_layers": L,
        "deviation": [round(float(x), 4) for x in d],
        "full_vocab_middle": [round(float(full_vocab[1:L - 5].min()), 2), round(float(full_vocab[1:L - 5].max()), 2)],
        "largest_later_step": round(float(np.abs(np.diff(d[1:])).max()), 2),
        "law": {k: v for k, v in run.law.to_dict().items() if k in ("E", "A", "alpha", "r2", "first_layer")},
        "cut": run.plan.cut,
        "argmax_with_embedding": {"raw": int(np.argmax(with_embedding.observed)) + 1,
                                  "excess": int(np.argmax(with_embedding.excess)) + 1},
    }
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}: k* = {reference['cut']}, R^2 = {run.law.r2:.2f}")


if __name__ == "__main__":
    main()
