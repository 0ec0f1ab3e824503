"""The lens registry, the virtual-transition lens, and one final state for the lens and training.

Tiny random twins only (no real model): the virtual lens's line, its options and its errors, and
on an OPT twin whose head reads a projection after the final norm (word_embed_proj_dim != hidden),
the lens's N(h_L) equals what the training loss and the model's own forward read.
"""

import pytest
import torch

from freezelab.errors import FreezelabError
from freezelab.method.basis import semantic_basis_columns
from freezelab.method.lens import LENSES, deviation, describe_lenses, lens_spec, normed, parse_lens
from freezelab.method.trace import Trace, latent_states, trace_encoded
from freezelab.method.virtual import VIRTUAL_OPTIONS, distance_to, virtual_points
from freezelab.model.encode import Encoded, collate
from freezelab.model.models import load_model

LABEL_IDS = torch.tensor([5, 9, 13])
PROMPTS = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]]


@pytest.fixture(scope="module")
def llama():
    return load_model("random:smollm2-135m", device="cpu", dtype="fp32", hidden_size=32, intermediate_size=64,
                      num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, vocab_size=500)


def a_trace(hidden: torch.Tensor, labelled: bool = True) -> Trace:
    labels = torch.tensor([0, 1, 2, 0, 1])
    if not labelled:
        return Trace(hidden, LABEL_IDS[labels], None, None, 0.0, PROMPTS)
    return Trace(hidden, LABEL_IDS[labels], LABEL_IDS, labels, 0.0, PROMPTS)


def line(lm, index: str = "l", base: str = "token") -> torch.Tensor:
    """The virtual points of the five examples, built by hand: (5, L+1, d)."""
    table = lm.embeddings[0].weight.detach()
    source = torch.stack([table[p[-1]] if base == "token" else table[p].mean(0) for p in PROMPTS])
    target = semantic_basis_columns(lm, a_trace(torch.zeros(5, 1, 1)).targets)
    return virtual_points(source, target, lm.num_layers, index)


def test_every_lens_is_registered_with_its_unit_and_in_the_cli_help(llama):
    from freezelab.cli import build_parser

    assert list(LENSES) == ["logit", "cosine", "kl", "virtual"]
    plan_help = next(a for a in build_parser()._subparsers._group_actions[0].choices["plan"]._actions
                     if "--lens" in a.option_strings).help
    for usage, text in describe_lenses():
        assert usage in plan_help and text in plan_help
    tr = a_trace(torch.randn(5, 4, 32))
    units = {name: deviation(tr, llama, name).units for name in LENSES}
    assert units == {"logit": "nats", "cosine": "1 - cosine", "kl": "nats", "virtual": "Euclidean distance"}
    assert deviation(tr, llama, "virtual:distance=cosine").units == "1 - cosine"


def test_lens_options_parse_to_a_canonical_name():
    lens, options = parse_lens("virtual:index=l+1,distance=cosine")  # options in any order
    assert options == {"distance": "cosine", "base": "token", "index": "l+1"}
    assert lens_spec(lens, options) == "virtual:distance=cosine,base=token,index=l+1" == lens_spec(*parse_lens(
        "virtual:index=l+1,base=token,distance=cosine"))  # every option spelled out, in the registry's order
    defaults = {k: v[0] for k, v in VIRTUAL_OPTIONS.items()}
    assert parse_lens("virtual") == (lens, defaults) and lens_spec(*parse_lens("logit")) == "logit"
    with pytest.raises(FreezelabError, match="unknown lens 'tuned'"):
        parse_lens("tuned")
    with pytest.raises(FreezelabError, match="no option 'distance=manhattan'.*distance=euclidean\\|cosine"):
        parse_lens("virtual:distance=manhattan")
    with pytest.raises(FreezelabError, match="lens 'logit' has no option 'base=mean' \\(options: none\\)"):
        parse_lens("logit:base=mean")


def test_virtual_line_runs_from_the_token_row_to_the_label_basis(llama):
    points = line(llama)
    L = llama.num_layers
    table = llama.embeddings[0].weight.detach()
    basis = semantic_basis_columns(llama, LABEL_IDS[torch.tensor([0, 1, 2, 0, 1])])
    assert points.shape == (5, L + 1, 32)
    assert torch.allclose(points[:, 0], table[[p[-1] for p in PROMPTS]])
    assert torch.allclose(points[:, L], basis, atol=1e-6)
    assert torch.allclose(points[:, 1] - points[:, 0], points[:, 2] - points[:, 1], atol=1e-6)  # a straight line
    shifted = line(llama, index="l+1")  # the code's ratio read on latent spaces: the basis at L - 1
    assert torch.allclose(shifted[:, L - 1], basis, atol=1e-6) and torch.allclose(shifted[:, 0], points[:, 1])


def test_a_trace_on_the_line_has_zero_deviation_and_one_off_it_does_not(llama):
    points = line(llama)
    on = deviation(a_trace(points * 3.0), llama, "virtual:distance=cosine")  # the norm (weight 1) keeps directions
    assert on.per_example.shape == (5, llama.num_layers + 1)
    assert abs(on.per_example).max() < 1e-5
    off = deviation(a_trace(points + torch.randn_like(points)), llama, "virtual:distance=cosine")
    assert off.per_example.min() > 1e-3
    assert distance_to(points, points, "euclidean").abs().max() == 0
    assert torch.allclose(distance_to(points, points + 2.0, "euclidean"), torch.full((5, 4), 2.0 * 32**0.5))


def test_the_mean_base_reads_the_whole_prompt(llama):
    points = line(llama, base="mean")
    on = deviation(a_trace(points), llama, "virtual:distance=cosine,base=mean").per_example
    assert abs(on).max() < 1e-5
    token = deviation(a_trace(points), llama, "virtual:distance=cosine").per_example
    assert token[:, 0].max() > 1e-3  # the token base is another line


def test_every_lens_reads_a_text_task_and_the_virtual_lens_ends_at_the_cosine_lens(llama):
    hidden = torch.randn(5, 4, 32)
    for labelled in (True, False):  # a classification trace, and a text (language-modelling) one
        tr = a_trace(hidden, labelled)
        virtual = deviation(tr, llama, "virtual:distance=cosine").per_example
        cosine = deviation(tr, llama, "cosine").per_example
        assert virtual.shape == cosine.shape == (5, 4)
        # v_L is the target's semantic basis (index=l): at l = L the two lenses are one
        assert abs(virtual[:, -1] - cosine[:, -1]).max() < 1e-5 and abs(virtual[:, 0] - cosine[:, 0]).max() > 1e-3
        for name in ("logit", "kl", "virtual"):
            assert deviation(tr, llama, name).per_example.shape == (5, 4)


def test_virtual_lens_refuses_a_trace_without_prompts(llama):
    bare = Trace(torch.randn(5, 4, 32), LABEL_IDS[:1].repeat(5), LABEL_IDS, torch.zeros(5, dtype=torch.long), 0.0)
    with pytest.raises(FreezelabError, match="needs the prompts' token ids"):
        deviation(bare, llama, "virtual")
    assert deviation(a_trace(torch.randn(5, 4, 32), labelled=False), llama, "kl").per_example.shape == (5, 4)


def test_lens_and_training_read_the_same_final_state_on_opt_with_project_out():
    from freezelab.train.cache import build_cache
    from freezelab.train.finetune import final_hidden

    lm = load_model("random:opt-125m", device="cpu", dtype="fp32", hidden_size=32, ffn_dim=64,
                    num_hidden_layers=2, num_attention_heads=2, vocab_size=500, word_embed_proj_dim=16)
    assert lm.arch.after_norm == "project_out" and lm.hidden_size == 16
    labels = torch.tensor([0, 1, 2, 0, 1])
    enc = Encoded(PROMPTS, LABEL_IDS[labels], LABEL_IDS, labels)
    tr = trace_encoded(lm, enc, progress=False)
    assert tr.hidden.shape == (5, 3, 32) and tr.prompts == PROMPTS
    lens_state = normed(lm, tr)[:, -1]  # what every lens reads at l = L: (5, 16)
    batch = collate(enc, range(5), 0)
    rows = torch.arange(5)
    with torch.no_grad():
        trained = final_hidden(lm, batch)[rows, batch.positions]  # what the training loss reads
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[rows, batch.positions]
    assert torch.allclose(lens_state, trained, atol=1e-5)
    assert torch.allclose(lm.unembed(lens_state), logits, atol=1e-4)
    own = torch.nn.functional.cross_entropy(logits, enc.targets, reduction="none")
    assert torch.allclose(torch.as_tensor(deviation(tr, lm, "logit", restrict_to_labels=False).per_example[:, -1]),
                          own.double(), atol=1e-4)
    cache = build_cache(lm, enc, progress=False)  # the cache is built by the same latent-state builder
    assert torch.allclose(cache.trace(enc).hidden, tr.hidden, atol=1e-6) and cache.trace(enc).prompts == PROMPTS
    with torch.no_grad():
        resumed = latent_states(lm, batch, cache.states(1, range(5)), start=1, last_only=True)
    assert torch.allclose(torch.stack(resumed, 1), tr.hidden[:, 1:], atol=1e-5)
