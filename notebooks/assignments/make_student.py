#!/usr/bin/env python
"""Derive the student notebooks from the instructor solutions.

    python notebooks/assignments/make_student.py          # write notebooks/assignments/*.ipynb
    python notebooks/assignments/make_student.py --check  # exit 1 if they are out of date

The solution notebooks in ``solutions/`` are the source. In their code cells, every block between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``# YOUR CODE HERE`` followed by
``raise NotImplementedError`` (at the block's indentation), and code cells from the first such block on
are tagged ``raises-exception`` (nbval runs a blank notebook and expects them to fail); a block between
``### BEGIN ANSWER`` and ``### END ANSWER`` (an assignment, e.g. the capstone's success criterion) becomes
``NAME = "YOUR ANSWER HERE"``; markdown cells tagged ``defence`` or ``report`` keep only their
``<!-- tag -->`` marker and the placeholder ``YOUR ANSWER HERE``. Outputs, execution counts and timings
are dropped: students get clean notebooks (the solutions keep theirs, for teachers).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"
BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.S | re.M)
STUB = "{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError\n"
ANSWER = re.compile(r"^([ \t]*)### BEGIN ANSWER[^\n]*\n[ \t]*(\w+)\s*=.*?^[ \t]*### END ANSWER[^\n]*(\n|$)", re.S | re.M)
PLACEHOLDER = "YOUR ANSWER HERE"
WRITTEN = ("defence", "report")  # markdown cells a student writes: only their marker is kept


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def strip_solutions(nb: dict) -> dict:
    """The student version of a solution notebook (a new dict; `nb` is left as it is)."""
    out = copy.deepcopy(nb)
    stubbed = False
    for cell in out["cells"]:
        if cell["cell_type"] == "code":
            src = BLOCK.sub(lambda m: STUB.format(indent=m.group(1)), _source(cell))
            src = ANSWER.sub(lambda m: f'{m.group(1)}{m.group(2)} = "{PLACEHOLDER}"\n', src)
            stubbed = stubbed or src != _source(cell)
            if stubbed:  # from the first exercise on, a blank notebook may raise (nbval: expected)
                tags = cell["metadata"].setdefault("tags", [])
                if "raises-exception" not in tags:
                    tags.append("raises-exception")
            cell["source"] = src.rstrip("\n")
            cell["outputs"] = []
            cell["execution_count"] = None
            cell["metadata"].pop("execution", None)  # the timings of the executed solutions
        else:
            tag = next((t for t in WRITTEN if t in cell.get("metadata", {}).get("tags", [])), None)
            if tag:
                cell["source"] = f"<!-- {tag} -->\n{PLACEHOLDER}"
    return out


def render(nb: dict) -> str:
    """The notebook as nbformat writes it (indent 1, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def student_notebooks() -> dict[Path, str]:
    """{student notebook path: its text} for every solution notebook."""
    return {HERE / path.name: render(strip_solutions(json.loads(path.read_text(encoding="utf-8"))))
            for path in sorted(SOLUTIONS.glob("*.ipynb"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report student notebooks that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in student_notebooks().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent.parent)}")
    if args.check and stale:
        print("out of date (run python notebooks/assignments/make_student.py): "
              + ", ".join(p.name for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
