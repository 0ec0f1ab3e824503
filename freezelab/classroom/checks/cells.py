"""Reading a saved notebook for the checks that grade what it says or how it ran (no student code runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from freezelab.classroom.checks.common import PLACEHOLDER


def notebook_path(notebook: str | os.PathLike | None, check: str) -> Path:
    """The notebook file to read: `notebook`, else the one of this Jupyter session (Jupyter Server 2)."""
    if notebook is None:
        session = os.environ.get("JPY_SESSION_NAME")  # set by Jupyter Server 2 for a notebook's kernel
        if not session:
            raise AssertionError(f"cannot tell which notebook to read: pass its file name, e.g. "
                                 f"{check}('my_notebook.ipynb'), or pass your text as {check}(text='...')")
        notebook = session
    path = Path(notebook).expanduser()
    if not path.exists():
        raise AssertionError(f"no notebook at {path.resolve()}: run the notebook from its own folder, pass the "
                             "right path, or (e.g. on Colab, where the notebook is not a file) pass your text "
                             f"as {check}(text='...')")
    return path


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def read_cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8")).get("cells", [])


def tagged(cells: list[dict], tag: str, kind: str | None = None) -> list[dict]:
    """The cells tagged `tag` (metadata tags, or a first line ``<!-- tag -->`` / ``# tag``), of `kind` if given."""
    found = []
    for cell in cells:
        if kind and cell.get("cell_type") != kind:
            continue
        first = cell_source(cell).lstrip()
        if (tag in cell.get("metadata", {}).get("tags", []) or first.startswith(f"<!-- {tag} -->")
                or first.startswith(f"# {tag}\n")):
            found.append(cell)
    return found


def tagged_text(path: Path, tag: str) -> str:
    """The markdown cells tagged `tag`, joined; AssertionError (saying how to tag one) when there is none."""
    found = tagged(read_cells(path), tag, kind="markdown")
    if not found:
        raise AssertionError(f"{path.name} has no markdown cell tagged '{tag}' (nor one starting with "
                             f"<!-- {tag} -->): write your text in the cell that said {PLACEHOLDER!r}, or add "
                             f"<!-- {tag} --> at the top of the markdown cell that holds it")
    return "\n".join(cell_source(c) for c in found)
