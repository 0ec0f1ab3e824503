"""The method end to end on the real offline model and BBC News: trace, lenses, basis, plan, CLI."""

import json
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import torch

from freezelab.method.basis import decompose, semantic_basis
from freezelab.cli import main
from freezelab.method.lens import deviation, lens_top_tokens
from freezelab.model.encode import collate, encode
from freezelab.errors import FreezelabError
from freezelab.method.pipeline import make_plan
from freezelab.method.trace import trace

SCHEMA = json.loads(files("freezelab").joinpath("plan.schema.json").read_text())


@pytest.fixture(scope="module")
def calib_trace(smollm, bbc, bbc_split):
    return trace(smollm, bbc, bbc_split.calib[:16], batch_size=8, progress=False)


@pytest.mark.slow
def test_trace_keeps_only_prediction_positions(calib_trace, smollm):
    assert calib_trace.hidden.shape == (16, 31, 576)
    assert calib_trace.hidden.dtype == torch.float32
    assert calib_trace.label_ids.tolist() == [7807, 1861, 5993, 10722, 11154]


@pytest.mark.slow
def test_trace_subset_keeps_the_chosen_examples(calib_trace):
    sub = calib_trace.subset([3, 1])
    assert torch.equal(sub.hidden, calib_trace.hidden[[3, 1]])
    assert sub.labels.tolist() == calib_trace.labels[[3, 1]].tolist()


@pytest.mark.slow
def test_trace_does_not_depend_on_padding_or_batching(smollm, bbc, bbc_split):
    one = trace(smollm, bbc, bbc_split.calib[:4], batch_size=1, progress=False)
    four = trace(smollm, bbc, bbc_split.calib[:4], batch_size=4, progress=False)
    assert torch.allclose(one.hidden, four.hidden, atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_h0_is_the_embedding_of_the_last_prompt_token(smollm, bbc, bbc_split, calib_trace):
    enc = encode(smollm.tokenizer, bbc, bbc_split.calib[:16])
    last_tokens = torch.tensor([p[-1] for p in enc.prompts])
    emb = smollm.embeddings[0].weight[last_tokens].detach()
    assert torch.allclose(calib_trace.hidden[:, 0], emb)


@pytest.mark.slow
def test_last_latent_space_reads_the_models_own_loss(smollm, bbc, bbc_split, calib_trace):
    dev = deviation(calib_trace, smollm, lens="logit")
    enc = encode(smollm.tokenizer, bbc, bbc_split.calib[:16])
    batch = collate(enc, range(16), smollm.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = smollm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    own = torch.nn.functional.cross_entropy(
        logits[torch.arange(16), batch.positions][:, enc.label_ids], batch.labels, reduction="none")
    assert np.allclose(dev.per_example[:, -1], own.numpy(), atol=1e-4)
    assert dev.mean.shape == (31,) and dev.restrict_to_labels
    assert dev.mean[-1] < np.log(5)  # the model reads the topic better than chance


@pytest.mark.slow
def test_label_restriction_changes_the_scale(smollm, calib_trace):
    restricted = deviation(calib_trace, smollm, lens="logit").mean
    full = deviation(calib_trace, smollm, lens="logit", restrict_to_labels=False).mean
    assert (restricted <= np.log(5) * 10).all()
    assert (full > restricted).all()  # the full-vocabulary softmax can only spread mass further


@pytest.mark.slow
def test_cosine_and_kl_lenses(smollm, calib_trace):
    cos = deviation(calib_trace, smollm, lens="cosine")
    assert ((cos.per_example >= 0) & (cos.per_example <= 2)).all()
    kl = deviation(calib_trace, smollm, lens="kl")
    assert np.allclose(kl.per_example[:, -1], 0, atol=1e-6) and (kl.per_example >= -1e-6).all()
    assert kl.mean[:-1].max() > 0.1


@pytest.mark.slow
def test_unknown_lens(smollm, calib_trace):
    with pytest.raises(FreezelabError, match="unknown lens 'tuned'"):
        deviation(calib_trace, smollm, lens="tuned")


@pytest.mark.slow
def test_semantic_basis_identity_and_cache(smollm, calib_trace):
    basis = semantic_basis(smollm)
    assert basis.shape == (576, 49152)
    assert semantic_basis(smollm) is basis  # computed once per model
    h = calib_trace.hidden[:4, 15]
    z, rebuilt = decompose(smollm, h)
    assert z.shape == (4, 49152)
    assert torch.allclose(rebuilt, h, atol=1e-3 * h.abs().max().item())


@pytest.mark.slow
def test_lens_top_tokens_at_the_last_layer_is_the_models_prediction(smollm, calib_trace):
    tokens, probs = lens_top_tokens(smollm, calib_trace, 0, k=3)
    assert len(tokens) == 31 and probs.shape == (31, 3)
    assert (np.diff(probs, axis=1) <= 1e-6).all()


@pytest.mark.slow
def test_make_plan_end_to_end_validates_against_schema(smollm, bbc, bbc_split):
    run = make_plan(smollm, bbc, bbc_split.calib, progress=False)
    d = run.plan.to_dict()
    jsonschema.validate(d, SCHEMA)
    assert sorted(d["frozen"] + d["trained"]) == list(range(30))
    assert d["frozen"] == list(range(d["cut"]))
    assert 2 <= d["cut"] <= 29
    assert len(d["deviation"]) == 31 and len(d["gains"]["excess"]) == 30
    assert 0 < d["predicted"]["cost_ratio_cached"] < d["predicted"]["cost_ratio"] < 1
    assert d["calibration"]["n"] == 32


@pytest.mark.slow
def test_cli_plan_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["plan", "--n-calib", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "<- k*" in printed and "cost ratio" in printed and "R^2" in printed
    plan = json.loads((out / "plan.json").read_text())
    jsonschema.validate(plan, SCHEMA)
    for name in ("report.md", "deviation.png", "gains.png", "benefit_cost.png", "lens.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_cli_plan_json_to_stdout(capsys):
    assert main(["plan", "--data", "movie-polarity", "--n-calib", "16", "--json", "--rule", "argmax-raw"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dataset"] == "movie-polarity" and plan["rule"] == "argmax-raw"


@pytest.mark.parametrize("argv, message", [
    (["plan", "--lens", "tuned", "--n-calib", "8"], "unknown lens"),
    (["plan", "--rule", "median", "--n-calib", "8"], "median"),
    (["plan", "--budget", "1.5", "--n-calib", "8"], "budget"),
    (["plan", "--budget", "0", "--n-calib", "8"], "budget"),
    (["plan", "--rule", "knee", "--budget", "0.9"], "--share"),  # a knee takes a share, not a cost cap
    (["plan", "--rule", "knee"], "--share"),
    (["plan", "--share", "0.5"], "a share only applies to the knee rules"),
    pytest.param(["plan", "--data", "movie-polarity", "--n-calib", "500"], "calib", marks=pytest.mark.slow),
    (["plan", "--model", "no-such-org/no-such-model"], "neither an offline model"),
    (["plan", "--data", "csv:/no/such/file.csv"], "not found"),
])
def test_cli_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "freezelab: error:" in err and message in err and "Traceback" not in err
