#!/usr/bin/env python
"""Build the freezelab book (Jupyter Book 1.x, offline).

    python book/build.py [--strict] [--notebooks DIR] [--edition student|instructor]

1. Copies ``DIR/*.ipynb`` (default: the repository's ``notebooks/``) and the images of
   ``DIR/figures/`` into ``book/notebooks/`` (git-ignored), replacing what was there.
2. Fails with a clear message if a notebook named in ``book/_toc.yml`` is missing.
3. Takes the widget scripts (RequireJS and ``@jupyter-widgets/html-manager``'s ``embed-amd.js``, in the
   version range the installed ipywidgets declares) from their npm packages, fetched once with
   ``npm pack`` into ``$FREEZELAB_CACHE/book-js`` (default ``~/.cache/freezelab``), and hands their folder
   to the book's extension, which serves them from the book's ``_static/widgets`` instead of a CDN.
   Without npm and without that cache the build fails with a message saying so (no CDN fallback).
4. Runs ``jupyter-book build book`` (with ``-W -n --keep-going`` under ``--strict``:
   every Sphinx warning is an error) and exits with its status.

Two editions: ``student`` (the default, into ``book/_build/html``) leaves every ``{solution}`` out
of the pages (sphinx-exercise's ``hide_solutions``, set by the local extension from
``FREEZELAB_BOOK_EDITION``); ``instructor`` (into ``book/_build/instructor/html``) shows them and adds
the executed solution notebooks of ``notebooks/assignments/solutions/`` as a part of their own.

Notebooks are never executed: the book shows their stored outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
NOTEBOOK_PREFIX = "notebooks/"
SOLUTIONS = "assignments/solutions"  # under notebooks/: the instructor edition's extra pages
FIGURES = "figures"
WIDGETS_ENV = "FREEZELAB_BOOK_WIDGETS"  # the folder of widget scripts the extension serves (book/_ext)
SOURCE_ENV = "FREEZELAB_BOOK_SOURCE"  # the notebooks folder whose run times the extension quotes (book/_ext)
HTML_MANAGER = "@jupyter-widgets/html-manager"
REQUIREJS = "requirejs@2"


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry (and the root) of a jb-book ``_toc.yml``, in order."""
    import yaml  # shipped with jupyter-book

    toc = yaml.safe_load(toc_path.read_text())
    found: list[str] = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def toc_notebooks(book: Path = BOOK) -> list[str]:
    """Stems of the notebooks the table of contents expects under ``notebooks/``."""
    return [f[len(NOTEBOOK_PREFIX):] for f in toc_files(book / "_toc.yml") if f.startswith(NOTEBOOK_PREFIX)]


def copy_notebooks(src: Path, book: Path = BOOK) -> list[Path]:
    dest = book / "notebooks"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    copied = []
    for nb in sorted(src.glob("*.ipynb")):
        target = dest / nb.name
        shutil.copy2(nb, target)
        copied.append(target)
    if (src / FIGURES).is_dir():  # images the notebooks' markdown shows (the pipeline figures)
        shutil.copytree(src / FIGURES, dest / FIGURES, ignore=shutil.ignore_patterns("*.py"))
    return copied


def instructor_toc(src: Path, book: Path = BOOK) -> Path:
    """Copy the solution notebooks into the book and write a table of contents that lists them.

    Returns the path of that table of contents (under book/_build/instructor/, next to the edition).
    """
    import yaml

    dest = book / "notebooks" / SOLUTIONS
    dest.mkdir(parents=True)
    names = []
    for nb in sorted((src / SOLUTIONS).glob("*.ipynb")):
        shutil.copy2(nb, dest / nb.name)
        names.append(nb.stem)
    if not names:
        raise FileNotFoundError(f"no solution notebooks in {src / SOLUTIONS}")
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["parts"].append({"caption": "Instructors: solution notebooks",
                         "chapters": [{"file": f"{NOTEBOOK_PREFIX}{SOLUTIONS}/{name}"} for name in names]})
    path = book / "_build" / "instructor" / "_toc.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(toc, sort_keys=False))
    return path


def html_manager_range() -> str:
    """The html-manager versions the installed ipywidgets renders with (its ``__html_manager_version__``)."""
    from ipywidgets._version import __html_manager_version__

    return __html_manager_version__


def _npm_pack(spec: str, dest: Path) -> Path:
    """``npm pack SPEC`` into ``dest``; returns the tarball."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"the book serves its widget scripts from the npm packages {HTML_MANAGER} and requirejs, and npm "
            "is not installed: install Node.js with npm (Debian: apt-get install npm) and build again")
    proc = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack {spec} failed (status {proc.returncode}):\n{proc.stderr[-2000:]}")
    return dest / json.loads(proc.stdout)[0]["filename"]


def widget_scripts(cache: Path) -> Path:
    """A folder holding ``require.js``, ``embed-amd.js`` and the fonts embed-amd.js loads next to itself.

    Extracted from ``npm pack`` tarballs kept in ``cache``, one folder per html-manager range: once there,
    later builds need neither npm nor a network.
    """
    spec = f"{HTML_MANAGER}@{html_manager_range()}"
    folder = cache / re.sub(r"[^\w.@-]+", "_", spec)
    scripts = folder / "widgets"
    if (scripts / "embed-amd.js").exists() and (scripts / "require.js").exists():
        return scripts
    tarballs = folder / "npm"
    tarballs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scripts, ignore_errors=True)
    scripts.mkdir()
    with tarfile.open(_npm_pack(spec, tarballs)) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/dist/")
            if member.isfile() and name != member.name and name != "embed.js" and not name.startswith("libembed") \
                    and not name.endswith(".map"):
                (scripts / name).write_bytes(tar.extractfile(member).read())
    with tarfile.open(_npm_pack(REQUIREJS, tarballs)) as tar:
        (scripts / "require.js").write_bytes(tar.extractfile("package/require.js").read())
    return scripts


def jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "jupyter_book"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="treat every warning as an error (-W -n --keep-going)")
    parser.add_argument("--notebooks", type=Path, default=REPO / "notebooks", help="folder of the chapter notebooks (default: repo notebooks/)")
    parser.add_argument("--edition", choices=("student", "instructor"), default="student",
                        help="student: no solutions (book/_build/html); instructor: solutions and the solution "
                             "notebooks (book/_build/instructor/html)")
    args = parser.parse_args(argv)

    book = BOOK
    src = args.notebooks.resolve()
    if not src.is_dir():
        print(f"error: notebooks folder not found: {src}", file=sys.stderr)
        return 2

    copied = copy_notebooks(src, book)
    have = {p.stem for p in copied}
    missing = [name for name in toc_notebooks(book) if name not in have]
    if missing:
        print(
            f"error: {len(missing)} notebook(s) named in {book / '_toc.yml'} are missing from {src}:\n"
            + "\n".join(f"  - {name}.ipynb" for name in missing),
            file=sys.stderr,
        )
        return 1
    print(f"copied {len(copied)} notebook(s) from {src} into {book / 'notebooks'}")

    cache = Path(os.environ.get("FREEZELAB_CACHE", Path.home() / ".cache" / "freezelab")) / "book-js"
    try:
        widgets = widget_scripts(cache)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    cmd = jupyter_book_command() + ["build", str(book)]
    out = book / "_build"
    if args.edition == "instructor":
        out = book / "_build" / "instructor"
        cmd += ["--toc", str(instructor_toc(src, book)), "--path-output", str(out)]
    if args.strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = {"FREEZELAB_BOOK_EDITION": args.edition, WIDGETS_ENV: str(widgets), SOURCE_ENV: str(src)}
    print("$ " + " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    status = subprocess.call(cmd, env={**os.environ, **env})
    elapsed = time.perf_counter() - start
    if args.edition == "instructor" and status == 0:  # jupyter-book writes <path-output>/_build/html
        shutil.rmtree(out / "html", ignore_errors=True)
        shutil.move(out / "_build" / "html", out / "html")
    index = out / "html" / "index.html"
    if status == 0:
        print(f"book built in {elapsed:.0f} s: open {index}")
    else:
        print(f"error: jupyter-book build failed with status {status} after {elapsed:.0f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
