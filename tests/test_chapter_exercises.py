"""The chapters' write-from-scratch exercises: each check cell passes the solution, fails a wrong answer and
says "not written yet" for the blank stub, run on a random SmolLM2 twin (no real model is loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(p.name[:2] for p in NOTEBOOKS.glob("0*.ipynb"))

# One wrong answer per chapter, each a mistake a student could make.
WRONG = {
    "01": "def my_logits(h, g, eps, W):\n    return (h * g) @ W.T  # the norm's division forgotten",
    "02": "def my_top_labels(hn, W_labels, words):\n    return [(words[0], 1.0)] * len(hn)",
    "03": "def my_deviation(hn, W_labels, labels):\n    return -torch.log_softmax(hn @ W_labels.T, -1).mean((0, 2))",
    "04": "def my_fit(d):\n    return min(d), d[1] - min(d), 1.0  # the start, not a fit",
    "05": "def my_step_cost(F, head, k, cached=False):\n    return sum(F) + 2 * sum(F[k:]) + head  # the cache ignored",
    "06": "def my_freeze(lm, k):\n    for b in lm.blocks[k:]:\n        b.requires_grad_(True)\n"
          "    lm.final_norm.requires_grad_(True)\n    return sum(q.numel() for q in lm.model.parameters() if q.requires_grad)",
    "07": "def my_regret(cuts, chosen):\n    mine = next(r for r in cuts if r['cut'] == chosen)\n"
          "    return mine['loss'] - min(r['loss'] for r in cuts)  # cost ignored",
}


def exercise(chapter: str) -> dict[str, str]:
    """The stub, solution and check of a chapter's write-from-scratch exercise, as source text."""
    cells = json.loads(next(NOTEBOOKS.glob(f"{chapter}_*.ipynb")).read_text())["cells"]
    by_tag = {tag: "".join(c["source"]) for c in cells for tag in c["metadata"].get("tags", [])}
    label = f"ex-{chapter}-code"
    solution = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
                    and re.match(r"`{3,}\{solution\} " + label, "".join(c["source"])))
    return {"stub": by_tag["exercise"], "check": by_tag["exercise-check"],
            "solution": re.search(r"```python\n(.*?)\n```", solution, re.S).group(1)}


@pytest.fixture(scope="module")
def state() -> dict:
    """What the chapters' check cells read: a tiny random SmolLM2 twin (6 blocks) traced on 8 random prompts
    of 5 classes, with a stand-in tokenizer that decodes token t as " wt"."""
    from freezelab.method.law import fit_scaling_law
    from freezelab.method.lens import deviation
    from freezelab.method.trace import trace_encoded
    from freezelab.model.arch import architecture_for
    from freezelab.model.encode import Encoded
    from freezelab.model.models import LoadedModel, random_model
    from freezelab.train.freeze import freeze

    model = random_model("smollm2-135m", hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=500).eval()
    tokenizer = SimpleNamespace(pad_token_id=0, decode=lambda ids: f" w{ids[0]}")
    lm = LoadedModel("random:smollm2-135m", model, tokenizer, architecture_for(model.config.model_type))
    g = torch.Generator().manual_seed(0)
    label_ids, labels = torch.tensor([11, 17, 23, 29, 31]), torch.arange(8) % 5
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 3, 5, 6, 4, 7, 2, 5)]
    tr = trace_encoded(lm, Encoded(prompts, label_ids[labels], label_ids, labels), progress=False)
    law_like = 1.0 + 4.0 * np.maximum(np.arange(31), 1.0) ** -0.8  # a smooth trace for the law fit
    cuts = [{"cut": c, "loss": loss, "cost_ratio": 1 - c / 30} for c, loss in [(0, 1.0), (10, 0.9), (20, 1.2), (29, 1.5)]]
    return {"np": np, "torch": torch, "lm": lm, "tr": tr, "i": 1, "k": 2, "MODEL": lm.name, "freeze": freeze,
            "task": SimpleNamespace(label_words=[f" w{t}" for t in label_ids.tolist()]),
            "devs": {"logit": deviation(tr, lm, "logit")}, "sweep": {"cuts": cuts},
            "run": SimpleNamespace(deviation=SimpleNamespace(mean=law_like), law=fit_scaling_law(law_like))}


def run_check(state: dict, answer: str, check: str) -> str:
    """Print output of the check cell after the answer's cell, in a copy of `state`."""
    import contextlib
    import io

    namespace = dict(state)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(answer, namespace)  # noqa: S102 - the notebook's own cells
        exec(check, namespace)  # noqa: S102
    return out.getvalue()


def test_every_chapter_has_a_checked_exercise_and_a_reading_list():
    assert CHAPTERS == ["01", "02", "03", "04", "05", "06", "07"]
    for chapter in CHAPTERS:
        cells = json.loads(next(NOTEBOOKS.glob(f"{chapter}_*.ipynb")).read_text())["cells"]
        assert "".join(cells[-1]["source"]).startswith("## Further reading"), chapter
        assert "{cite}`" in "".join(cells[-1]["source"]), chapter
        assert "raise NotImplementedError" in exercise(chapter)["stub"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_check_passes_the_solution_fails_a_wrong_answer_and_waits_for_the_stub(state, chapter):
    ex = exercise(chapter)
    out = run_check(state, ex["solution"], ex["check"])
    assert "not written yet" not in out and out.strip(), out
    with pytest.raises(AssertionError):
        run_check(state, WRONG[chapter], ex["check"])
    assert "not written yet" in run_check(state, ex["stub"], ex["check"])
