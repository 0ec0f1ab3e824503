"""Readers for the user's own data files: delimited tables (CSV, TSV, semicolon), JSON lines, plain text.

Each reader returns plain rows or text chunks; `freezelab.model.data` turns them into a `Task`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from freezelab.errors import FreezelabError

DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon"}  # the ones `csv:` detects, in order of preference
LM_CHUNK_CHARS = 512
_SNIFF_ROWS = 50  # records read to check that a delimiter splits every row alike


@dataclass(frozen=True)
class Table:
    """Column names and (line number, row) pairs of a data file; `delimiter` is None for JSON lines."""

    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]
    delimiter: str | None = None


def read_utf8(path: Path) -> str:
    """The text of `path`, or an error that says why it cannot be read (missing, folder, not UTF-8, empty)."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise FreezelabError(f"data file {str(path)!r} {what}; check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FreezelabError(
            f"{path} is not UTF-8: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line {line}). "
            f"Re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8_{path.name}"
        ) from None
    if not text.strip():
        raise FreezelabError(f"{path} is empty; it needs a header row / records with your data")
    return text


def sniff_delimiter(text: str) -> str:
    """The delimiter (comma, tab or semicolon) that splits the header into the most columns and every
    one of the first rows into as many; comma when none splits the header (a one-column file)."""
    best, best_key = ",", (False, 0, 0)
    for rank, delim in enumerate(DELIMITERS):
        records = list(islice(csv.reader(io.StringIO(text, newline=""), delimiter=delim), _SNIFF_ROWS + 1))
        width = len(records[0]) if records else 0
        if width < 2:
            continue
        alike = all(len(r) == width for r in records[1:] if r)
        key = (alike, width, -rank)
        if key > best_key:
            best, best_key = delim, key
    return best


def read_table(path: Path, delimiter: str | None = None, quoting: bool = True) -> Table:
    """A delimited file with a header row; `delimiter=None` detects comma, tab or semicolon.

    `quoting=False` reads every field literally, quotes included (TSV as IANA's
    text/tab-separated-values defines it: no field holds a tab or a line break).
    """
    text = read_utf8(path)
    delim = sniff_delimiter(text) if delimiter is None else delimiter
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim,
                            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise FreezelabError(
            f"{path} line {reader.line_num} is not valid {DELIMITERS[delim]}-separated text: {e}"
        ) from None
    return Table(list(reader.fieldnames or []), rows, delim)


def joined_hint(columns: list[str], delimiter: str | None) -> str:
    """A sentence naming the delimiter that seems to join the column names, or "" when none does."""
    for delim, name in DELIMITERS.items():
        if delim != delimiter and any(delim in c for c in columns):
            read_as = "tsv:PATH" if delim == "\t" else "csv:PATH (it detects comma, tab and semicolon)"
            return (f" The column names look joined by a {name} ({delim!r}): the file seems to be "
                    f"{name}-separated; read it as {read_as}.")
    return ""


def read_jsonl(path: Path) -> Table:
    """Keys seen and (line number, record) pairs of a JSON-lines file."""
    columns: dict[str, None] = {}
    rows = []
    for n, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FreezelabError(f"{path} line {n} is not valid JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise FreezelabError(f"{path} line {n} is a JSON {type(record).__name__}, not an object like "
                                 '{"text": "...", "label": "..."}')
        columns.update(dict.fromkeys(record))
        rows.append((n, record))
    return Table(list(columns), rows)


def text_chunks(path: Path, limit: int = LM_CHUNK_CHARS) -> list[str]:
    """The text of `path` in chunks of at most about `limit` characters, cut between words."""
    chunks: list[str] = []
    current = ""
    for piece in re.findall(r"\S+\s*", read_utf8(path)):
        if current and len(current) + len(piece.rstrip()) > limit:
            chunks.append(current.strip())
            current = ""
        current += piece
    if current.strip():
        chunks.append(current.strip())
    return chunks
