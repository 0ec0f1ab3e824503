"""MyST Markdown (what the book renders) to plain Markdown (what Colab, Jupyter and GitHub render).

Used by ``notebooks/make_colab.py``, one ``Converter`` per notebook: ``collect`` reads every markdown
cell first (exercise, figure and equation numbers, section titles, so references may point forward),
then ``convert`` rewrites one cell at a time:

- fenced directives, backtick (```` ```{note} ````) and colon (``:::{note}``) forms, nested or not, with
  ``:key: value`` or YAML options: ``{exercise}`` becomes a bold "Exercise N" paragraph, ``{solution}``
  "Solution to Exercise N" (the instructor edition) or nothing (the student edition), and so do the
  gated ``{solution-start}``/``{solution-end}`` pairs, code cells between them included;
  admonitions, dropdowns and margins become block quotes; ``{figure}``/``{image}`` images
  (relative files inlined as data URIs: Colab shows no relative image); ``{math}`` a ``$$`` block
  (labelled ones numbered with ``\\tag``); ``{code-block}`` a plain fence; ``{glue:...}`` the value;
- roles: ``{glue:text}`` and the other glue roles give the stored run's value (``GlueValue``),
  formatted as myst-nb does; ``{cite}`` (any variant) an author-year link, with the full entries
  (authors, year, title, venue) in ``references()``; ``{term}``, ``{ref}``, ``{numref}``, ``{eq}``,
  ``{doc}``, ``{math}`` and any other role their readable text;
- ``{{ name }}`` substitutions, ``(label)=`` targets, ``%`` comments and ``$$ ... $$ (label)``.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,}|~{3,})[ \t]*(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.-]+)\}[ \t]*(?P<args>.*)$")
OPTION = re.compile(r"^[ \t]*:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
ROLE = re.compile(r"\{(?P<name>[\w:.+-]+)\}`(?P<content>[^`]*)`")
TITLED = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)  # role content "text <target>"
SUBSTITUTION = re.compile(r"\{\{\s*(?P<name>[\w.-]+)\s*\}\}")
TARGET = re.compile(r"^\((?P<label>[\w:.-]+)\)=[ \t]*$")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*$")
LABELLED_MATH = re.compile(r"^(?P<pre>.*)\$\$[ \t]*\((?P<label>[\w:.-]+)\)[ \t]*$")
IMAGE = re.compile(r"(!\[[^\]]*\]\()(?P<src>[^)\s]+)(\))|(<img\b[^>]*\bsrc=\")(?P<src2>[^\"]+)(\")")
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error",
               "seealso", "admonition", "dropdown", "margin", "sidebar", "topic", "epigraph", "pull-quote",
               "highlights", "versionadded", "versionchanged", "deprecated", "card"}
TITLES = {"seealso": "See also", "versionadded": "New in version", "versionchanged": "Changed in version"}
DROPPED = {"bibliography", "toctree", "tableofcontents", "contents", "glossary-index", "exercise-end"}
NUMBERED = {"exercise": "Exercise", "exercise-start": "Exercise", "figure": "Figure", "math": "Equation"}
CODE = {"code-block", "code", "sourcecode", "code-cell"}
PARENTHETICAL = {"cite", "cite:p", "cite:ps", "cite:alp", "cite:cts", "footcite", "footcite:p"}
TEXTUAL = {"cite:t", "cite:ts", "cite:ct", "footcite:t"}


class MystError(ValueError):
    """Markup the stored outputs or the bibliography cannot fill: a glue name, a citation key, a substitution,
    an image file."""


@dataclass(frozen=True)
class GlueValue:
    """One glued value of the stored run: its MIME bundle (``text/plain``, ``image/png``, ...)."""

    data: dict[str, str]


@dataclass(frozen=True)
class Reference:
    """One bibliography entry, as a reader needs it."""

    key: str
    short: str  # "Gu et al."
    year: str
    title: str
    venue: str
    url: str

    def full(self, authors: str) -> str:
        title = f"[*{self.title}*]({self.url})" if self.url else f"*{self.title}*"
        return f"{authors} ({self.year}). {title}." + (f" {self.venue}." if self.venue else "")


def read_bibliography(path: Path) -> dict[str, tuple[Reference, str]]:
    """{key: (Reference, full author list)} from a BibTeX file (pybtex, shipped with sphinxcontrib-bibtex)."""
    from pybtex.database import parse_file
    from pybtex.richtext import Text

    def plain(latex: str) -> str:
        return Text.from_latex(latex).render_as("text").replace("``", "\u201c").replace("''", "\u201d")

    out = {}
    for key, entry in parse_file(str(path)).entries.items():
        people = [p for p in entry.persons.get("author", []) if str(p) != "others"]
        names = [plain(" ".join(p.first_names + p.middle_names + p.prelast_names + p.last_names)) for p in people]
        lasts = [plain(" ".join(p.prelast_names + p.last_names)) for p in people]
        etal = len(people) < len(entry.persons.get("author", []))
        short = lasts[0] + (" et al." if len(lasts) > 2 or etal else f" and {lasts[1]}" if len(lasts) == 2 else "")
        authors = ", ".join(names) + " et al." if etal else \
            ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        venue = next((plain(entry.fields[f]) for f in ("booktitle", "journal", "howpublished") if f in entry.fields),
                     f"arXiv:{entry.fields['eprint']}" if "eprint" in entry.fields else "")
        fields = entry.fields
        out[key] = (Reference(key, short, fields.get("year", "n.d."), plain(fields["title"]), venue,
                              fields.get("url", "")), authors)
    return out


@dataclass
class Converter:
    """Converts the markdown cells of one notebook, in order (see the module docstring).

    ``glue``: the stored run's values by name; ``bibliography``: from ``read_bibliography``;
    ``instructor``: keep the solutions; ``folder``: where relative image paths start;
    ``substitutions``: called once, on the first ``{{ name }}``, for the book's substitutions;
    ``doc``: (path of a ``{doc}`` target relative to this notebook) -> (title, link or "").
    """

    glue: dict[str, GlueValue]
    bibliography: dict[str, tuple[Reference, str]]
    instructor: bool
    folder: Path
    substitutions: Callable[[], dict[str, str]] = dict
    doc: Callable[[str], tuple[str, str]] = lambda target: (target, "")
    labels: dict[str, str] = field(default_factory=dict)  # label -> "Exercise 2", "Figure 1", "(3)", a title
    cited: list[str] = field(default_factory=list)  # keys in order of first citation
    hiding: bool = False  # inside a gated solution, in the student edition
    _numbers: dict[str, int] = field(default_factory=dict)
    _values: dict[str, str] | None = None

    # ---- numbering, read ahead over every markdown cell ------------------------------------------------------
    def collect(self, texts: list[str]) -> None:
        """Number exercises, figures and labelled equations, and read section titles, as ``convert`` meets them."""
        counts: dict[str, int] = {}
        target = kind = None  # a pending (label)= target; the kind of the directive whose options are read
        for line in "\n".join(texts).split("\n"):
            heading, fence, option, math = HEADING.match(line), FENCE.match(line), OPTION.match(line), \
                LABELLED_MATH.match(line)
            if TARGET.match(line):
                target = TARGET.match(line)["label"]
            elif heading and target:
                self.labels[target], target = self.inline(heading["title"], collect=True), None
            directive = DIRECTIVE.match(fence["info"]) if fence else None
            if directive:
                kind = NUMBERED.get(directive["name"])
                if kind and kind != "Equation":
                    counts[kind] = counts.get(kind, 0) + 1
            elif option and option["key"] == "label" and kind:
                if kind == "Equation":
                    counts[kind] = counts.get(kind, 0) + 1
                n = counts[kind]
                self.labels[option["value"].strip()] = f"({n})" if kind == "Equation" else f"{kind} {n}"
                kind = None
            elif math:
                counts["Equation"] = counts.get("Equation", 0) + 1
                self.labels[math["label"]] = f"({counts['Equation']})"

    def _next(self, kind: str) -> int:
        self._numbers[kind] = self._numbers.get(kind, 0) + 1
        return self._numbers[kind]

    # ---- blocks ---------------------------------------------------------------------------------------------
    def convert(self, text: str) -> str:
        """One markdown cell (or directive body) in plain Markdown."""
        lines, out, i = text.split("\n"), [], 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                if not self.hiding:
                    out.append(self._line(lines[i]))
                i += 1
                continue
            end = _closing(lines, i, m["fence"])
            d = DIRECTIVE.match(m["info"])
            if d is None:  # a plain code fence: copied as it is
                if not self.hiding:
                    out.extend(lines[i:end + 1])
            elif not self.hiding or d["name"] == "solution-end":
                out.append(self.directive(d["name"], d["args"].strip(), lines[i + 1:end]))
            i = end + 1
        return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")

    def directive(self, name: str, args: str, body: list[str]) -> str:
        options, body = _options(body)
        label = options.get("label", "")
        content = "\n".join(body)
        if name in CODE:
            return f"```{args}\n{content}\n```"
        if name == "raw":
            return content if args == "html" else ""
        if name in DROPPED:
            return ""
        if name in ("exercise", "exercise-start"):
            n = self._next("Exercise")
            head = f"**Exercise {n}**" + (f" ({self.inline(args)})" if args else "")
            return head + ("\n\n" + self.convert(content) if content.strip() else "\n")  # gated: text follows
        if name in ("solution", "solution-start"):
            if not self.instructor:
                self.hiding = name == "solution-start"
                return ""
            head = f"**Solution to {self.labels.get(args, 'the exercise')}**"
            return head + ("\n\n" + self.convert(content) if content.strip() else "\n")  # gated: text follows
        if name == "solution-end":
            self.hiding = False
            return ""
        if name in ("figure", "image"):
            alt = options.get("alt", "")
            image = f"![{alt}]({self._image(args)})"
            caption = self.convert(content)
            n = self._next("Figure") if name == "figure" else 0
            number = f"Figure {n}. " if label else ""
            return image + (f"\n\n*{number}{caption}*" if caption else "")
        if name == "math":
            tag = f" \\tag{{{self._next('Equation')}}}" if label else ""
            return f"$$\n{content.strip()}{tag}\n$$"
        if name.startswith("glue"):
            return self._glue_block(name, args, options, content)
        title = self.inline(args) if args else TITLES.get(name, name.replace("-", " ").capitalize())
        inner = self.convert(content)
        quoted = "\n".join(f"> {line}" if line.strip() else ">" for line in inner.split("\n"))
        return f"> **{title}**\n>\n{quoted}" if inner else f"> **{title}**"

    def _glue_block(self, name: str, key: str, options: dict[str, str], caption: str) -> str:
        data = self._glued(key).data
        if name == "glue:math":
            return f"$$\n{data.get('text/latex', data.get('text/plain', '')).strip().strip('$')}\n$$"
        image = next((m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in data), None)
        if image:
            payload = data[image] if image != "image/svg+xml" else base64.b64encode(
                data[image].encode()).decode()
            text = f"![{options.get('alt', key)}](data:{image};base64,{payload.strip()})"
            return text + (f"\n\n*{self.convert(caption)}*" if caption.strip() else "")
        return data.get("text/markdown") or data.get("text/plain", "")

    # ---- lines and roles ------------------------------------------------------------------------------------
    def _line(self, line: str) -> str:
        if TARGET.match(line) or line.startswith("%") or line.strip() == "+++":
            return ""
        math = LABELLED_MATH.match(line)
        if math:
            line = f"{math['pre']} \\tag{{{self._next('Equation')}}}$$"
        return self.inline(IMAGE.sub(self._inline_image, line))

    def inline(self, text: str, collect: bool = False) -> str:
        """Roles and substitutions of one line; ``collect``: while numbering (cites are not recorded)."""
        if SUBSTITUTION.search(text):
            if self._values is None:
                self._values = self.substitutions()
            text = SUBSTITUTION.sub(lambda m: self._substitute(m["name"]), text)
        return ROLE.sub(lambda m: self.role(m["name"], m["content"], collect), text)

    def _substitute(self, name: str) -> str:
        if name not in self._values:
            raise MystError(f"no value for the substitution {{{{ {name} }}}}")
        return self._values[name]

    def role(self, name: str, content: str, collect: bool = False) -> str:
        titled = TITLED.match(content)
        text, target = (titled["text"], titled["target"]) if titled else ("", content)
        if name.startswith("glue"):
            return self._glue_role(name, content)
        if name.startswith(("cite", "footcite")):
            return self._cite(name, content, collect)
        if name in ("ref", "numref", "eq"):
            number = self.labels.get(target, target)
            if text:
                return text.replace("%s", number.split()[-1].strip("()")) if name == "numref" else text
            return number
        if name == "doc":
            title, link = self.doc(target)
            return f"[{text or title}]({link})" if link else text or title
        if name == "math":
            return f"${content}$"
        if name in ("code", "kbd", "samp", "file", "command", "literal"):
            return f"`{content}`"
        if name in ("sub", "sup"):
            return f"<{name}>{content}</{name}>"
        if name == "abbr":
            return re.sub(r"\s*\(.*\)$", "", content)
        return text or target  # {term}, {download}, {guilabel}, ... : their text

    def _glued(self, key: str) -> GlueValue:
        if key not in self.glue:
            raise MystError(f"no stored value glued as {key!r}: run the notebook (make notebooks) so its "
                            "outputs hold it")
        return self.glue[key]

    def _glue_role(self, name: str, content: str) -> str:
        from myst_nb.core.variables import format_plain_text  # the book's own formatting

        key, _, spec = content.rpartition(":") if name == "glue:text" and ":" in content else (content, "", "")
        data = self._glued(key).data
        if name == "glue:text":
            return format_plain_text(data["text/plain"], spec or "s")
        return data.get("text/markdown") or data.get("text/plain", "")

    def _cite(self, name: str, content: str, collect: bool) -> str:
        refs = []
        for key in (k.strip() for k in content.split(",")):
            if key not in self.bibliography:
                raise MystError(f"{{{name}}}`{key}`: no such entry in the bibliography")
            if not collect and key not in self.cited:
                self.cited.append(key)
            refs.append(self.bibliography[key][0])
        if name == "cite:author":
            return ", ".join(r.short for r in refs)
        if name == "cite:year":
            return ", ".join(r.year for r in refs)
        if name in TEXTUAL:
            return "; ".join(f"{r.short} ([{r.year}]({r.url}))" if r.url else f"{r.short} ({r.year})" for r in refs)
        cites = "; ".join(f"[{r.short}, {r.year}]({r.url})" if r.url else f"{r.short}, {r.year}" for r in refs)
        return f"\\[{cites}\\]"  # escaped brackets, as the book's label style brackets its citations

    def references(self) -> str:
        """The cited entries in full (a markdown cell), in order of first citation; "" when none."""
        if not self.cited:
            return ""
        items = [self.bibliography[k][0].full(self.bibliography[k][1]) for k in self.cited]
        return "## References\n\n" + "\n".join(f"- {item}" for item in items)

    # ---- images ---------------------------------------------------------------------------------------------
    def _image(self, src: str) -> str:
        """A relative image file as a data URI (Colab resolves no relative path); other sources as they are."""
        if re.match(r"^([a-z]+:|/|#)", src):
            return src
        path = self.folder / src
        if not path.is_file():
            raise MystError(f"image {src} not found next to the notebook ({path})")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"

    def _inline_image(self, m: re.Match) -> str:
        if m["src"] is not None:
            return m.group(1) + self._image(m["src"]) + m.group(3)
        return m.group(4) + self._image(m["src2"]) + m.group(6)


def _closing(lines: list[str], start: int, fence: str) -> int:
    """The index of the line closing the fence opened at ``start`` (at least as long, same character)."""
    return next((j for j in range(start + 1, len(lines))
                 if set(lines[j].strip()) == {fence[0]} and len(lines[j].strip()) >= len(fence)), len(lines))


def _options(body: list[str]) -> tuple[dict[str, str], list[str]]:
    """A directive body's options (``:key: value`` lines or a ``---`` YAML block) and the rest."""
    options: dict[str, str] = {}
    if body and body[0].strip() == "---":
        end = next((i for i in range(1, len(body)) if body[i].strip() == "---"), 0)
        for line in body[1:end]:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        body = body[end + 1:]
    else:
        while body and OPTION.match(body[0]):
            m = OPTION.match(body[0])
            options[m["key"]] = m["value"].strip()
            body = body[1:]
    while body and not body[0].strip():
        body = body[1:]
    return options, body


def solution_bodies(text: str) -> list[str]:
    """The raw text of every ``{solution}`` directive of a markdown cell (the test's sample of solution text)."""
    found, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = _closing(lines, i, m["fence"])
        d = DIRECTIVE.match(m["info"])
        if d and d["name"] == "solution":
            found.append("\n".join(_options(lines[i + 1:end])[1]))
        elif d:
            found += solution_bodies("\n".join(lines[i + 1:end]))
        i = end + 1
    return found
