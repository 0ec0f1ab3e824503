"""Encoding prompts and targets: truncation keeps BOS and the template's cue; LM targets."""

import pytest

from freezelab.model.data import Example, Task
from freezelab.model.encode import _tail, batches, collate, encode
from freezelab.errors import FreezelabError


class BosTokenizer:
    """Word-level stand-in with a BOS like Gemma's: every call starts with id 2."""

    bos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        ids = [10 + len(w) for w in text.split()]
        return type("Enc", (), {"input_ids": ([2] if add_special_tokens else []) + ids})()


def test_truncation_keeps_bos_and_the_tail():
    tok = BosTokenizer()
    assert _tail(tok, [2, 5, 6, 7, 8], 3) == [2, 7, 8]
    assert _tail(tok, [5, 6, 7, 8], 3) == [6, 7, 8]
    assert _tail(tok, [2, 5], 3) == [2, 5]


def test_lm_targets_are_the_last_token():
    task = Task("toy", "lm", [Example("a bb ccc dddd", None)], [])
    enc = encode(BosTokenizer(), task, task.examples, max_length=3)
    assert enc.prompts == [[2, 12, 13]] and enc.targets.tolist() == [14]


@pytest.mark.slow
def test_long_prompts_keep_the_cue(smollm, bbc):
    long = Example("word " * 400, 0)
    enc = encode(smollm.tokenizer, bbc, [long], max_length=32)
    assert len(enc.prompts[0]) == 32
    assert smollm.tokenizer.decode(enc.prompts[0]).endswith("Topic:")
    assert enc.targets.tolist() == [smollm.tokenizer(" sport", add_special_tokens=False).input_ids[0]]


def test_right_padding_and_prediction_positions():
    task = Task("toy", "lm", [Example("a bb ccc", None), Example("a bb ccc dddd eeeee", None)], [])
    enc = encode(BosTokenizer(), task, task.examples)
    b = collate(enc, [0, 1], pad_id=0)
    assert b.input_ids.shape == (2, 5) and b.positions.tolist() == [2, 4]
    assert b.attention_mask.sum(1).tolist() == [3, 5]
    assert len(list(batches(enc, 1, 0))) == 2
    with pytest.raises(FreezelabError, match="batch size"):
        list(batches(enc, 0, 0))


def test_empty_and_tokenizerless_inputs_are_clear_errors(bbc):
    with pytest.raises(FreezelabError, match="no examples"):
        encode(BosTokenizer(), bbc, [])
    with pytest.raises(FreezelabError, match="no tokenizer"):
        encode(None, bbc, bbc.examples[:1])
