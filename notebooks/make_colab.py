#!/usr/bin/env python
"""Write the Colab edition of the notebooks: nothing in it needs the book's MyST (`make colab`).

    python notebooks/make_colab.py          # write notebooks/colab/ (student) and notebooks/colab/instructor/
    python notebooks/make_colab.py --check  # exit 1 if any is out of date (or left over from a removed source)

Sources and editions (``editions()``; every notebook matching the globs):

- chapters ``notebooks/0*.ipynb`` -> ``colab/<name>`` (exercises, no solutions) and ``colab/instructor/<name>``;
- assignments ``notebooks/assignments/0*.ipynb`` (the student versions) -> ``colab/assignments/<name>``;
- solutions ``notebooks/assignments/solutions/0*.ipynb`` -> ``colab/instructor/assignments/<name>``.

Code cells, their stored outputs (what readers see before running) and the Colab install cell are
copied unchanged; markdown cells go through ``colab_markdown.Converter``: every glued number is written
in as the stored run's value (from the source's own outputs; a student assignment's from its solution's),
with one line under the title saying so; citations become author-year links and a References cell;
exercises and solutions plain Markdown (the student edition drops the solutions). Colab links (the
badge) open the Colab edition and load no image. Generated files: edit the sources, then run this.
"""

import argparse
import copy
import functools
import importlib.util
import json
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "colab"
BIBLIOGRAPHY = REPO / "book" / "references.bib"
EXTENSION = REPO / "book" / "_ext" / "freezelab_book.py"  # the book's Colab paths and substitutions
GLUE = re.compile(r"\{glue(:\w*)?\}`")
BADGE = re.compile(r"\[!\[[^\]]*\]\([^)]*\)\]\((?P<url>https://colab\.research\.google\.com/[^)\s]+)\)")
STORED_RUN = ("*The numbers in the text are those of the stored run (the outputs saved in this notebook); "
              "when you run it, the cells print your own.*")


def _load(path: Path, name: str):
    """A module from a file outside the package (this script's helpers, the book's extension)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


markdown = _load(HERE / "colab_markdown.py", "colab_markdown")


@functools.cache
def extension():
    return _load(EXTENSION, "freezelab_book")


@dataclass(frozen=True)
class Edition:
    """One Colab-edition notebook: ``target``, written from ``source``; glued values from ``glue_from``."""

    source: Path
    target: Path
    instructor: bool
    glue_from: tuple[Path, ...]


def editions(notebooks: Path = HERE, out: Path = OUT) -> list[Edition]:
    """Every Colab-edition notebook, from the chapters, the student assignments and their solutions."""
    found = []
    for nb in sorted(notebooks.glob("0*.ipynb")):
        found += [Edition(nb, out / nb.name, False, (nb,)), Edition(nb, out / "instructor" / nb.name, True, (nb,))]
    solutions = notebooks / "assignments" / "solutions"
    for nb in sorted((notebooks / "assignments").glob("0*.ipynb")):
        found.append(Edition(nb, out / "assignments" / nb.name, False, (nb, solutions / nb.name)))
    for nb in sorted(solutions.glob("0*.ipynb")):
        found.append(Edition(nb, out / "instructor" / "assignments" / nb.name, True, (nb,)))
    return found


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def glue_values(paths: tuple[Path, ...]) -> dict[str, markdown.GlueValue]:
    """The values glued in the stored outputs (myst-nb's "scrapbook" display data) of the first notebook
    that has each name; a later glue of the same name in one notebook wins, as in the book."""
    values: dict[str, markdown.GlueValue] = {}
    for path in reversed([p for p in paths if p.exists()]):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
                book = output.get("metadata", {}).get("scrapbook")
                if book:
                    prefix = len(book.get("mime_prefix", ""))
                    values[book["name"]] = markdown.GlueValue(
                        {k[prefix:]: "".join(v) if isinstance(v, list) else v for k, v in output["data"].items()})
    return values


@functools.cache
def bibliography() -> dict:
    return markdown.read_bibliography(BIBLIOGRAPHY)


def substitutions() -> dict[str, str]:
    """The book's ``{{ name }}`` values (the reference trace, the study protocol, the run times)."""
    ext = extension()
    return {**ext.reference_substitutions(), **ext.study_substitutions(), **ext.runtime_substitutions(HERE)}


def colab_url(path: str, instructor: bool) -> str:
    """The Colab link of the Colab edition of a repository notebook (``notebooks/...``)."""
    ext = extension()
    return ext.COLAB_GITHUB + ext.colab_edition(path, instructor)


def relink(text: str, instructor: bool) -> str:
    """Colab links open the Colab edition; a badge (an image from a CDN) becomes the words "Open in Colab"."""
    base = re.escape(extension().COLAB_GITHUB)
    text = BADGE.sub(lambda m: f"[Open in Colab]({m['url']})", text)
    return re.sub(base + r"(?P<path>notebooks/[^)\s\"']+\.ipynb)",
                  lambda m: colab_url(m["path"], instructor), text)


def _title(path: Path) -> str:
    """The first ``# `` heading of a notebook or a Markdown page."""
    if path.suffix == ".ipynb":
        text = "\n".join(_source(c) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                         if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    found = re.search(r"^# (.+)$", text, re.M)
    return found.group(1).strip() if found else path.stem


def doc_link(edition: Edition, target: str) -> tuple[str, str]:
    """A ``{doc}`` target of the source (a book path, relative to the page) -> (its title, a Colab link or "")."""
    folder = edition.source.parent.relative_to(REPO).as_posix()  # the page's folder in the book mirrors the repo
    doc = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
    notebook, page = REPO / f"{doc}.ipynb", REPO / "book" / f"{doc}.md"
    if notebook.exists():
        return _title(notebook), colab_url(f"{doc}.ipynb", edition.instructor)
    return (_title(page), "") if page.exists() else (target, "")


def _cell(text: str, cell_id: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": text.splitlines(keepends=True)}


def colab_notebook(edition: Edition) -> dict:
    """The Colab edition of one notebook (a new dict)."""
    nb = json.loads(edition.source.read_text(encoding="utf-8"))
    converter = markdown.Converter(glue=glue_values(edition.glue_from), bibliography=bibliography(),
                                   instructor=edition.instructor, folder=edition.source.parent,
                                   substitutions=substitutions, doc=lambda target: doc_link(edition, target))
    converter.collect([_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"])
    cells, glued = [], False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            if not converter.hiding:  # code between {solution-start} and {solution-end}: instructors only
                cells.append(cell)
            continue
        text = _source(cell)
        glued = glued or bool(GLUE.search(text))
        try:
            text = converter.convert(relink(text, edition.instructor))
        except markdown.MystError as err:
            raise markdown.MystError(f"{edition.source.relative_to(REPO)}, cell {cell.get('id', '?')}: {err}") from None
        if text.strip():
            cells.append({**copy.deepcopy(cell), "source": text.splitlines(keepends=True)})
    first = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if glued and first is not None:
        first["source"] = _stored_run_line(_source(first)).splitlines(keepends=True)
    references = converter.references()
    if references:
        cells.append(_cell(references, "colab-references"))
    nb["cells"] = cells
    nb["metadata"]["freezelab"] = {"colab_edition_of": edition.source.relative_to(REPO).as_posix(),
                                   "edition": "instructor" if edition.instructor else "student",
                                   "generated_by": "notebooks/make_colab.py"}
    return nb


def _stored_run_line(text: str) -> str:
    """The title cell with the stored-run line after its title (and badge) line."""
    lines = text.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if "Open in Colab" in line), 1 if lines[0].startswith("#") else 0)
    return "\n".join(lines[:at] + ["", STORED_RUN, ""] + lines[at:]).replace("\n\n\n", "\n\n")


def render(nb: dict) -> str:
    """The notebook as nbformat writes it (indent 1, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def colab_notebooks(notebooks: Path = HERE, out: Path = OUT) -> dict[Path, str]:
    """{Colab-edition path: its text} for every edition."""
    return {e.target: render(colab_notebook(e)) for e in editions(notebooks, out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report Colab notebooks that are out of date")
    args = parser.parse_args(argv)
    try:
        wanted = colab_notebooks()
    except markdown.MystError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    orphans = [p for p in OUT.rglob("*.ipynb") if p not in wanted]
    if args.check:
        for path in stale + orphans:
            print(f"out of date: {path.relative_to(REPO)} (run python notebooks/make_colab.py)", file=sys.stderr)
        return 1 if stale or orphans else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    for path in orphans:
        path.unlink()
        print(f"removed {path.relative_to(REPO)} (its source is gone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
