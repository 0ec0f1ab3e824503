"""The Colab edition (notebooks/colab/, written by notebooks/make_colab.py): current, free of MyST, the solutions
only in the instructor edition, the sources' code and install cell, and the converter itself on small cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
make_colab = load_script(REPO / "notebooks" / "make_colab.py", "make_colab")
colab_check = load_script(REPO / "notebooks" / "colab_check.py", "colab_check")
md = make_colab.markdown
EDITIONS = make_colab.editions()
MYST = [re.compile(p, re.M) for p in (r"\{glue", r"\{cite", r"\{exercise", r"\{solution", r"\{[\w:.+-]+\}`",
                                      r"^\s*(`{3,}|:{3,})\s*\{", r"\{\{\s*[\w.-]+\s*\}\}", r"^\([\w:.-]+\)=\s*$")]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _markdown(nb: dict) -> str:
    return "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")


def _ids(edition) -> str:
    return edition.target.relative_to(make_colab.OUT).as_posix()


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    return make_colab.colab_notebooks()


def test_every_source_has_its_editions():
    chapters = sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb"))
    assignments = sorted(p.name for p in (REPO / "notebooks" / "assignments").glob("0*.ipynb"))
    assert chapters and assignments
    want = {*chapters, *(f"instructor/{n}" for n in chapters), *(f"assignments/{n}" for n in assignments),
            *(f"instructor/assignments/{n}" for n in assignments)}
    assert {_ids(e) for e in EDITIONS} == want


def test_the_committed_edition_is_current(generated):
    """Regenerated in memory, every Colab notebook equals the committed file, and no other file is there."""
    stale = [p.relative_to(REPO).as_posix() for p, text in generated.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    extra = [p.relative_to(REPO).as_posix() for p in make_colab.OUT.rglob("*.ipynb") if p not in generated]
    assert not stale and not extra, f"stale {stale}, left over {extra}: run make colab"


@pytest.mark.parametrize("edition", EDITIONS, ids=_ids)
def test_no_myst_is_left(edition, generated):
    nb = json.loads(generated[edition.target])
    text = _markdown(nb)
    for pattern in MYST:
        found = pattern.search(text)
        assert found is None, f"{_ids(edition)}: MyST markup left: {text[max(0, found.start() - 80):found.end() + 80]!r}"
    assert "img.shields.io" not in text and "](figures/" not in text  # no image from a CDN, none a relative path
    assert nb["metadata"]["freezelab"]["colab_edition_of"] == edition.source.relative_to(REPO).as_posix()
    nbformat.validate(nbformat.from_dict(nb))


@pytest.mark.parametrize("edition", EDITIONS, ids=_ids)
def test_code_cells_and_install_cell_are_the_sources(edition, generated):
    """The edition runs exactly the source's code (so nbval on it runs the source) and installs on Colab first."""
    nb, source = json.loads(generated[edition.target]), _load(edition.source)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code == [c for c in source["cells"] if c["cell_type"] == "code"]
    assert colab_check.install_commands(edition.target) == colab_check.install_commands(edition.source)


@pytest.mark.parametrize("edition", EDITIONS, ids=_ids)
def test_glued_numbers_are_the_stored_runs(edition, generated):
    """Each glued name's place holds the stored value as the book formats it, and the title says so."""
    text = _markdown(json.loads(generated[edition.target]))
    roles = re.findall(r"\{glue:text\}`([\w]+)(?::([^`]*))?`", _markdown(_load(edition.source)))
    values = make_colab.glue_values(edition.glue_from)
    for key, spec in roles:
        from myst_nb.core.variables import format_plain_text

        assert format_plain_text(values[key].data["text/plain"], spec or "s") in text, f"{key}:{spec}"
    assert (make_colab.STORED_RUN in text) == bool(roles)


def test_a_glued_number_is_written_in():
    chapter = next(e for e in EDITIONS if e.target.name == "07_does_it_work.ipynb" and not e.instructor)
    regret = float(make_colab.glue_values(chapter.glue_from)["regret"].data["text/plain"])
    text = _markdown(_load(chapter.target))
    assert f"regret (the gap to the best cut that costs no more) was\n{regret:.3f} nats" in text


def _solution_lines(nb: dict) -> list[str]:
    """One distinctive plain line of each {solution} of a source notebook."""
    lines = []
    for body in (b for c in nb["cells"] if c["cell_type"] == "markdown" for b in md.solution_bodies(_source(c))):
        plain = [line.strip() for line in body.split("\n") if not re.search(r"[{}`$]", line)]
        if plain:
            lines.append(max(plain, key=len))
    return lines


def test_student_edition_has_no_solution_text_and_the_instructor_edition_does():
    checked = 0
    for student in (e for e in EDITIONS if not e.instructor):
        instructor = next(e for e in EDITIONS if e.instructor and e.target.name == student.target.name)
        s_text, i_text = (json.dumps(_load(e.target)) for e in (student, instructor))
        for line in _solution_lines(_load(instructor.source)):
            assert json.dumps(line)[1:-1] not in s_text, f"{_ids(student)} shows a solution: {line!r}"
            assert json.dumps(line)[1:-1] in i_text, f"{_ids(instructor)} lost a solution: {line!r}"
            checked += 1
        assert "Solution to" not in _markdown(_load(student.target))
        assert ("### BEGIN SOLUTION" in i_text) == ("assignments" in instructor.target.parts)
        assert "### BEGIN SOLUTION" not in s_text
    assert checked >= 20  # the chapters' solutions were all sampled


def test_badges_open_the_colab_edition(generated):
    for edition in EDITIONS:
        first = _source(json.loads(generated[edition.target])["cells"][0])
        links = re.findall(r"\(https://colab\.research\.google\.com/([^)]+)\)", first)
        url = f"github/freezelab/freezelab/blob/main/{edition.target.relative_to(REPO).as_posix()}"
        assert links in ([], [url]), f"{_ids(edition)}: {links}"
        if edition.source.parent.name == "notebooks":
            assert links == [url], f"{_ids(edition)}: no Colab link in the title cell"


# ---- the converter on small cases ------------------------------------------------------------------------------

BIB = md.read_bibliography(REPO / "book" / "references.bib")
GLUE = {"acc": md.GlueValue({"text/plain": "0.91234"}), "name": md.GlueValue({"text/plain": "'bbc-news'"})}


def _convert(cells: list[str], instructor: bool = False, **kw) -> tuple[list[str], md.Converter]:
    conv = md.Converter(glue=GLUE, bibliography=BIB, instructor=instructor, folder=REPO / "notebooks", **kw)
    conv.collect(cells)
    return [conv.convert(c) for c in cells], conv


def test_glue_roles_format_as_the_book():
    (out,), _ = _convert(["Accuracy {glue:text}`acc:.2f` ({glue:text}`acc:.1%`) on {glue:text}`name`."])
    assert out == "Accuracy 0.91 (91.2%) on bbc-news."
    with pytest.raises(md.MystError, match="'missing'"):
        _convert(["{glue:text}`missing`"])


EXERCISE = ":::{exercise} A title\n:label: ex-a\n\nCompute it:\n\n```python\nx = 1\n```\n:::"
SOLUTION = "````{solution} ex-a\n:class: dropdown\n\nThe answer is forty-two.\n\n```python\nprint(42)\n```\n````"


def test_exercises_and_solutions_per_edition():
    (ex, sol), _ = _convert([EXERCISE, SOLUTION])
    assert ex == "**Exercise 1** (A title)\n\nCompute it:\n\n```python\nx = 1\n```" and sol == ""
    (ex, sol), _ = _convert([EXERCISE, SOLUTION], instructor=True)
    assert sol == "**Solution to Exercise 1**\n\nThe answer is forty-two.\n\n```python\nprint(42)\n```"


def test_gated_solution_hides_its_code_cells_from_students():
    cells = ["```{solution-start} ex-a\n```", "Explained.", "```{solution-end}\n```", "After."]
    out, conv = _convert(cells)
    assert out == ["", "", "", "After."] and not conv.hiding
    out, _ = _convert(cells, instructor=True)
    assert out[0] == "**Solution to the exercise**" and out[1] == "Explained."


def test_citations_become_references():
    (out,), conv = _convert(["As shown {cite:p}`hu2021lora,gu2025semantic`; {cite:t}`lee2019elsa` freeze."])
    assert out == ("As shown \\[[Hu et al., 2022](https://arxiv.org/abs/2106.09685); [Gu et al., 2025]"
                   "(https://arxiv.org/abs/2406.11753)\\]; Lee et al. ([2019](https://arxiv.org/abs/1911.03090)) freeze.")
    refs = conv.references()
    assert refs.startswith("## References") and refs.count("\n- ") == 3
    assert "Jian Gu, Aldeida Aleti, Chunyang Chen and Hongyu Zhang (2025). [*A Semantic-Aware" in refs
    with pytest.raises(md.MystError, match="nosuchkey"):
        _convert(["{cite}`nosuchkey`"])


def test_directives_and_roles_become_markdown():
    cells = ["(sec-law)=\n## The law\n% a comment", "```{note}\nA {term}`lens <deviation>` note.\n```",
             "```{math}\n:label: eq-law\nd = E\n```\nSee {eq}`eq-law` and {numref}`Exercise %s <ex-b>` in {ref}`sec-law`.",
             "```{exercise}\n:label: ex-b\nDo it.\n```", "```{figure} figures/pipeline.png\n:name: fig-p\n:alt: steps\n\n"
             "The steps.\n```"]
    out, _ = _convert(cells)
    assert out[0] == "## The law"
    assert out[1] == "> **Note**\n>\n> A lens note."
    assert out[2] == "$$\nd = E \\tag{1}\n$$\nSee (1) and Exercise 1 in The law."
    assert out[4].startswith("![steps](data:image/png;base64,iVBOR") and out[4].endswith("*The steps.*")


def test_substitutions_come_from_the_book():
    (out,), _ = _convert(["Cut {{ ref_chosen }}."], substitutions=lambda: {"ref_chosen": "12"})
    assert out == "Cut 12."
    with pytest.raises(md.MystError, match="nope"):
        _convert(["{{ nope }}"], substitutions=dict)


def test_make_test_runs_the_colab_edition_under_nbval():
    """nbval executes the student chapters as their Colab edition. Each notebook runs once: the assignments
    (the same code as their Colab edition) run in a fresh kernel where they are graded, at ci scale, the
    student copies raising only in their tagged cells (test_checks, test_capstone), the solutions with full
    marks and no cell error."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*?(?=^\S)", makefile, re.S | re.M).group(0).replace("\\\n", " ")
    nbval = next(line for line in recipe.split("\n") if "--nbval-lax" in line)
    assert "FREEZELAB_SCALE=ci" in nbval and "notebooks/colab/0*.ipynb" in nbval.split()
    assert not any("assignments" in word for word in nbval.split())  # graded instead: not run twice
    from test_checks import NOTEBOOKS

    graded = {*NOTEBOOKS, "04_capstone"}
    assert {p.stem for p in (REPO / "notebooks/assignments/solutions").glob("0*.ipynb")} == graded
    assert "make_colab.py" in re.search(r"^colab:.*?(?=^\S)", makefile, re.S | re.M).group(0)
