"""The book builds strictly (warnings are errors) and shows what the notebooks stored.

The build runs on a temporary copy of ``book/`` so the repository's ``book/_build`` is left
alone. It uses the repository's ``notebooks/`` folder; set ``FREEZELAB_BOOK_NOTEBOOKS`` to
build with another folder of notebooks (e.g. stubs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

from freezelab.classroom.checks import reference_trace

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
NOTEBOOKS = Path(os.environ.get("FREEZELAB_BOOK_NOTEBOOKS", REPO / "notebooks"))
HIDDEN_OUTPUT_TAGS = {"remove-output", "remove-cell"}

pytestmark = pytest.mark.slow


build = load_script(BOOK / "build.py", "freezelab_book_build")


def _png_outputs(notebook: Path) -> list[str]:
    """Base64 PNGs stored in the notebook's visible cell outputs."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    pngs = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if HIDDEN_OUTPUT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                png = data["image/png"]
                pngs.append("".join(png) if isinstance(png, list) else png)
    return pngs


def _content_imgs(page_html: str) -> list[str]:
    """src of every <img> that shows content (stored images), not theme assets such as logos."""
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", page_html)
    return [s for s in srcs if "_images/" in s or s.startswith("data:image/")]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    expected = build.toc_notebooks(BOOK)
    present = [name for name in expected if (NOTEBOOKS / f"{name}.ipynb").exists()]
    if not present:
        pytest.skip(
            f"none of the {len(expected)} chapter notebooks named in book/_toc.yml exist in "
            f"{NOTEBOOKS} yet ({', '.join(expected)}); the book test runs once they are added"
        )
    root = tmp_path_factory.mktemp("bookbuild")
    book = root / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "notebooks", ".ipynb_checkpoints"))
    proc = subprocess.run(
        [sys.executable, str(book / "build.py"), "--strict", "--notebooks", str(NOTEBOOKS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        f"strict book build failed (status {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return book


def test_every_toc_page_is_built(built_book):
    html = built_book / "_build" / "html"
    missing = [f for f in build.toc_files(built_book / "_toc.yml") if not (html / f"{f}.html").exists()]
    assert not missing, f"pages named in _toc.yml without HTML: {missing}"


def test_notebook_images_are_embedded(built_book):
    html = built_book / "_build" / "html"
    for name in build.toc_notebooks(built_book):
        pngs = _png_outputs(built_book / "notebooks" / f"{name}.ipynb")
        page = (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        imgs = _content_imgs(page)
        assert len(imgs) >= len(pngs), f"{name}: {len(pngs)} stored PNG outputs but {len(imgs)} <img> in the page"
        for i, png in enumerate(pngs):
            digest = hashlib.sha256(base64.b64decode(png)).hexdigest()
            shown = any(digest in src for src in imgs) or any(png[:200] in src for src in imgs)
            assert shown, f"{name}: stored PNG output #{i + 1} (sha256 {digest[:12]}) is not shown in the page"
            if any(digest in src for src in imgs):
                assert (html / "_images" / f"{digest}.png").exists(), f"{name}: image file {digest}.png missing"


def test_widget_state_is_embedded(built_book):
    html = built_book / "_build" / "html"
    for name in build.toc_notebooks(built_book):
        nb = json.loads((built_book / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        if not state.get("state"):
            continue
        page = (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        assert 'type="application/vnd.jupyter.widget-state+json"' in page, f"{name}: widget state not embedded"
        order = [page.find(f'_static/{script}') for script in ("widgets/require.js", "widgets/widget_paths.js", "widgets/embed-amd.js")]
        assert -1 < order[0] < order[1] < order[2], f"{name}: widget scripts missing or out of order: {order}"


def test_pages_load_no_script_from_a_cdn(built_book):
    """Every <script src> of every page is a file of the built book: equations and widgets work offline."""
    html = built_book / "_build" / "html"
    local = set()
    for page in html.rglob("*.html"):
        if page.relative_to(html).parts[0] == "_static":  # the theme's template fragments, not pages
            continue
        for src in re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", page.read_text(encoding="utf-8")):
            assert not re.match(r"(https?:)?//", src), f"{page.relative_to(html)} loads a script from {src}"
            path = (page.parent / src.split("?")[0]).resolve()
            assert path.is_file(), f"{page.relative_to(html)}: script {src} is not in the book"
            local.add(path.relative_to(html.resolve()).as_posix())
    assert {"_static/widgets/require.js", "_static/widgets/embed-amd.js", "_static/mathjax/MathJax.js"} <= local


def test_each_script_is_loaded_once(built_book):
    """sphinx-thebe's inline configuration came twice on every page: `const` declared twice, a console error."""
    html = built_book / "_build" / "html"
    for page in (html / "intro.html", html / "notebooks" / "01_latent_spaces.html"):
        scripts = re.findall(r"<script[^>]*>.*?</script>", page.read_text(encoding="utf-8"), re.S)
        assert scripts and len(scripts) == len(set(scripts)), [s[:80] for s in scripts if scripts.count(s) > 1]


def test_widget_scripts_need_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it, and nothing in the cache yet
    with pytest.raises(RuntimeError, match="npm is not installed"):
        build.widget_scripts(tmp_path / "cache")


def test_colab_buttons_open_the_colab_edition(built_book):
    """The launch button and the badge open the committed Colab edition (notebooks/colab/, make colab);
    the badge is drawn in the page (no image from a CDN); the assignment pages link the students' Colab copies."""
    html = built_book / "_build" / "html"
    colab = "https://colab.research.google.com/github/freezelab/freezelab/blob/main/notebooks/colab/"
    for name in build.toc_notebooks(built_book):
        page = (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        urls = set(re.findall(r"https://colab\.research\.google\.com/[^\"']+", page))
        assert urls == {f"{colab}{name}.ipynb"}, f"{name}: unexpected Colab links {urls}"
        assert (REPO / "notebooks" / "colab" / f"{name}.ipynb").exists(), name
        assert "img.shields.io" not in page and 'aria-label="Open in Colab"' in page, f"{name}: badge not inline"
    page = (html / "assignments" / "cosine_lens.html").read_text(encoding="utf-8")
    assert f"{colab}assignments/01_cosine_lens.ipynb" in page


def test_method_page_separates_paper_from_reconstruction(built_book):
    text = (built_book / "_build" / "html" / "method.html").read_text(encoding="utf-8")
    assert "reconstruction" in text
    assert "Paper" in text
    assert "Paper (known)" in text and "Our reconstruction" in text


@pytest.fixture(scope="module")
def instructor_book(built_book):
    """The instructor edition, built (strict) from the same copy of the book."""
    proc = subprocess.run(
        [sys.executable, str(built_book / "build.py"), "--strict", "--edition", "instructor", "--notebooks",
         str(NOTEBOOKS)], capture_output=True, text=True)
    assert proc.returncode == 0, f"instructor edition failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return built_book / "_build" / "instructor" / "html"


SOLUTION_BLOCK = r"class=\"[^\"]*\bsolution\b[^\"]*\bdropdown\b[^\"]*\""


def test_student_edition_has_exercises_and_no_solutions(built_book):
    html = built_book / "_build" / "html"
    page = (html / "assignments" / "index.html").read_text(encoding="utf-8")
    assert re.search(r"class=\"[^\"]*\bexercise\b[^\"]*\"", page), "no rendered exercise"
    for path in html.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(SOLUTION_BLOCK, text), f"a solution in the student edition: {path}"
        assert "A sample defence" not in text, path
    assert not (html / "_sources").exists(), "the copied sources hold the solutions"
    assert not (html / "notebooks" / "assignments").exists(), "solution notebooks in the student edition"


def test_instructor_edition_shows_solutions_and_the_solution_notebooks(instructor_book):
    page = (instructor_book / "assignments" / "budget_plan.html").read_text(encoding="utf-8")
    assert re.search(SOLUTION_BLOCK, page) and "A sample defence" in page
    for name in ("01_cosine_lens", "02_fit_law", "03_budget_plan"):
        solution = (instructor_book / "notebooks" / "assignments" / "solutions" / f"{name}.html").read_text(
            encoding="utf-8")
        assert solution.count("\u2714") >= 2, f"{name}: the executed checks' outputs are not shown"
        colab = "https://colab.research.google.com/github/freezelab/freezelab/blob/main/notebooks/colab/instructor/"
        assert f"{colab}assignments/{name}.ipynb" in solution, f"{name}: Colab does not open the instructor edition"
    chapter = (instructor_book / "notebooks" / "01_latent_spaces.html").read_text(encoding="utf-8")
    assert set(re.findall(r"https://colab\.research\.google\.com/[^\"']+", chapter)) == {
        f"{colab}01_latent_spaces.ipynb"}


def test_results_summary_is_included(built_book):
    summary = (built_book / "results" / "summary.md").read_text(encoding="utf-8")
    page = (built_book / "_build" / "html" / "results.html").read_text(encoding="utf-8")
    words = re.findall(r"[A-Za-z]{6,}", re.sub(r"<!--.*?-->", "", summary, flags=re.S))
    assert words and all(w in page for w in words[:5]), "results/summary.md is not included in results.html"


def test_build_reports_missing_notebooks(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "notebooks", ".ipynb_checkpoints"))
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, str(book / "build.py"), "--notebooks", str(empty)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    for name in build.toc_notebooks(BOOK):
        assert f"{name}.ipynb" in proc.stderr


def test_citations_resolve_to_the_bibliography(built_book):
    html = built_book / "_build" / "html"
    bib = (html / "bibliography.html").read_text(encoding="utf-8")
    for key_text in ("semantic-aware layer-freezing", "logit lens", "Tuned Lens", "LoRA", "FreezeOut"):
        assert key_text.lower() in bib.lower(), f"bibliography misses {key_text!r}"
    for name in build.toc_notebooks(built_book):
        page = (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        assert "bibliography.html#" in page, f"{name}: cites nothing"
        assert "{cite}" not in page, f"{name}: an unresolved {{cite}} role"


def test_math_is_served_from_the_book(built_book):
    html = built_book / "_build" / "html"
    assert (html / "_static" / "mathjax" / "MathJax.js").exists(), "MathJax not copied into the book"
    for page in (html / "method.html", html / "notebooks" / "04_scaling_law.html"):
        text = page.read_text(encoding="utf-8")
        scripts = re.findall(r"<script[^>]*src=\"([^\"]*MathJax[^\"]*)\"", text, flags=re.I)
        assert scripts and all("://" not in s for s in scripts), f"{page.name}: MathJax from {scripts}"


def test_math_is_set_in_the_fonts_the_book_ships(built_book):
    """MathJax 2's default TeX fonts are not in the package: the config must name the STIX-Web fonts it ships, and
    inline math must keep MathJax's own baseline (the theme's flex layout for MathJax 3 lifts it above the line)."""
    html = built_book / "_build" / "html"
    page = (html / "method.html").read_text(encoding="utf-8")
    config = json.loads(re.search(r"MathJax\.Hub\.Config\((.*?)\)</script>", page).group(1))["HTML-CSS"]
    assert config["availableFonts"] == [] and config["imageFont"] is None, config
    fonts = html / "_static" / "mathjax" / "jax" / "output" / "HTML-CSS" / "fonts" / config["webFont"]
    assert (fonts / "fontdata.js").is_file(), f"MathJax is told to use {config['webFont']}, which the book lacks"
    css = (html / "_static" / "freezelab.css").read_text(encoding="utf-8")
    assert re.search(r"span\.math\s*\{[^}]*display:\s*inline;", css), "inline math is laid out as a flex box"


def test_method_page_quotes_the_reference_trace(built_book):
    ref = reference_trace()
    html = built_book / "_build" / "html"
    for page in [html / "method.html", *sorted((html / "assignments").glob("*.html"))]:
        # a substitution inside $...$ is not replaced: MathJax would typeset its name
        assert "{{" not in page.read_text(encoding="utf-8"), f"an unreplaced substitution on {page.name}"
    text = (html / "method.html").read_text(encoding="utf-8")
    assert re.search(rf"excess argmax picks block\s+{ref['cut']}\b", text)  # the source wraps lines
    assert f"{ref['law']['r2']:.2f}" in text


def test_long_output_lines_wrap(built_book):
    html = built_book / "_build" / "html"
    css = (html / "_static" / "freezelab.css").read_text(encoding="utf-8")
    assert "pre-wrap" in css
    for name in build.toc_notebooks(built_book):
        assert "_static/freezelab.css" in (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8"), name


def test_run_times_come_from_the_notebooks_execution_metadata(tmp_path):
    """The assignment pages quote each solution notebook's run time, read from its stored cells' timing."""
    ext = load_script(BOOK / "_ext" / "freezelab_book.py", "freezelab_book")
    (tmp_path / "assignments" / "solutions").mkdir(parents=True)

    def notebook(path: Path, *spans: tuple[str, str]) -> None:
        cells = [{"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": a, "iopub.status.idle": b}}}
                 for a, b in spans] + [{"cell_type": "markdown", "metadata": {}}]
        path.write_text(json.dumps({"cells": cells}))

    notebook(tmp_path / "01_chapter.ipynb", ("2026-01-01T10:00:00.000Z", "2026-01-01T10:00:05.000Z"),
             ("2026-01-01T10:00:05.000Z", "2026-01-01T10:07:31.000Z"))
    notebook(tmp_path / "assignments" / "solutions" / "01_task.ipynb",
             ("2026-01-01T10:00:00.000Z", "2026-01-01T10:00:12.400Z"))
    assert ext.runtime_substitutions(tmp_path) == {"runtime_01_chapter": "8 min", "runtime_01_task": "12 s"}
    (tmp_path / "02_unrun.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}}]}))
    with pytest.raises(RuntimeError, match="02_unrun.ipynb stores no execution times"):
        ext.runtime_substitutions(tmp_path)
    stored = ext.runtime_substitutions(NOTEBOOKS)  # the repository's notebooks all have their timing
    assert {f"runtime_{p.stem}" for p in NOTEBOOKS.glob("assignments/solutions/*.ipynb")} <= stored.keys()
    pages = "".join(p.read_text(encoding="utf-8") for p in BOOK.glob("**/*.md") if "_build" not in p.parts)
    assert [key for key in stored if f"{{{{ {key} }}}}" not in pages] == []  # each one is quoted somewhere
