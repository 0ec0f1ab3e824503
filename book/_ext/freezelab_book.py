"""Local Sphinx extension for the freezelab book.

The chapters are the notebooks of the repository's top-level ``notebooks/`` folder;
``book/build.py`` copies them into ``book/notebooks/`` (git-ignored) before building.
sphinx-book-theme builds launch links as ``<repo>/blob/<branch>/<path_to_book>/<page>.ipynb``,
which would point at the git-ignored copy.  This extension rewrites the launch links of
pages under ``notebooks/``, and every Colab link of every page, so that Colab opens the
committed *Colab edition* (``colab_edition``: ``notebooks/colab/``, written by
``notebooks/make_colab.py``, plain Markdown where the book has MyST), and draws the
Colab badges inline (an SVG in the page, no image from a CDN).

It also keeps the book readable offline and its numbers in one place:

- MathJax is served from the built book's own ``_static/mathjax`` folder, copied from the
  ``jupyter-server-mathjax`` package (a dependency of the ``book`` extra), not from a CDN;
- so are the widget scripts (RequireJS and ipywidgets' ``embed-amd.js``), from ``_static/widgets``,
  copied from the folder ``book/build.py`` extracts from their npm packages (``FREEZELAB_BOOK_WIDGETS``);
- the canonical reference trace (``freezelab/smollm2_bbc.json``, package data that the assignments'
  graders read too, written by ``reference/make_reference.py``) becomes MyST substitutions (``{{ ref_chosen }}``, ...) that
  the method page and the chapters quote instead of typed numbers; so do the oracle study's protocol constants,
  from ``book/results/summary.json`` (``{{ study_acc_points }}``, ...).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

NOTEBOOK_DIR = "notebooks/"
COLAB_GITHUB = "https://colab.research.google.com/github/freezelab/freezelab/blob/main/"
BADGE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
             '<rect width="117" height="20" rx="3" fill="#555"/><rect x="60" width="57" height="20" rx="3" '
             'fill="#F9AB00"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
             '<text x="8" y="14">Open in</text><text x="68" y="14">Colab</text></g></svg>')
MATHJAX_PACKAGE = "jupyter_server_mathjax"  # MathJax 2.7 in the package's static/ folder
MATHJAX_PATH = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
MATHJAX_FONT = "STIX-Web"  # the only font the package ships (static/fonts/HTML-CSS/STIX-Web)
WIDGETS_ENV = "FREEZELAB_BOOK_WIDGETS"
REQUIRE_JS, EMBED_JS = WIDGET_SCRIPTS = ("require.js", "embed-amd.js")  # from their npm packages, in _static/widgets
WIDGET_PATHS = Path(__file__).with_name("widget_paths.js")  # tells RequireJS where the manager's fonts are


def _mathjax_dir() -> Path:
    # find_spec without importing: the package's own import needs a Jupyter server
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the book serves MathJax from the {MATHJAX_PACKAGE} package: "
                           "pip install -e '.[book]'")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _widgets_dir() -> Path:
    folder = os.environ.get(WIDGETS_ENV)
    if not folder or not all((Path(folder) / name).is_file() for name in WIDGET_SCRIPTS):
        raise RuntimeError(f"the book serves the widget scripts {', '.join(WIDGET_SCRIPTS)} from the folder "
                           f"${WIDGETS_ENV} names ({folder or 'unset'}): build the book with book/build.py, "
                           "which takes them from their npm packages")
    return Path(folder)


def reference_substitutions() -> dict[str, str]:
    """The reference trace's numbers as MyST substitutions, formatted as the book quotes them."""
    import warnings

    from freezelab.classroom.checks import DEFENCE_BUDGET, budget_cases, reference_trace
    from freezelab.method.gains import layer_gains
    from freezelab.method.law import fit_scaling_law
    from freezelab.method.plan import default_cost_curve, plan

    ref = reference_trace()
    d, law, L = ref["deviation"], ref["law"], ref["num_layers"]
    k = ref["cut"]
    with warnings.catch_warnings():  # the trace is noisy: the fits warn about their R^2
        warnings.simplefilter("ignore")
        raw = plan(layer_gains(d, fit_scaling_law(d)), rule="argmax-raw").cut
        emb = fit_scaling_law(d, include_embedding=True, min_r2=0)
        emb_chosen = plan(layer_gains(d, emb)).cut
        gains = layer_gains(d, fit_scaling_law(d))
    # assignment 3: the budget rule on the reference gains, with and without the cached prefix
    curve = default_cost_curve(L)
    budget = {cached: plan(gains, rule="budget", budget=DEFENCE_BUDGET, cost_curve=curve, cached=cached)
              for cached in (False, True)}
    b, bc, star = budget[False].cut, budget[True].cut, plan(gains)
    second = max((i for i in range(2, L) if i != k), key=lambda i: gains.excess[i - 1])  # the rule's runner-up
    benefit = [c.benefit for c in star.curve]
    return {
        "ref_raw_chosen": str(raw), "ref_raw_before": f"{d[raw - 1]:.2f}", "ref_raw_after": f"{d[raw]:.2f}",
        "ref_raw_step": f"{d[raw - 1] - d[raw]:.2f}", "ref_emb_E": f"{emb.E:.2f}", "ref_emb_A": f"{emb.A:.1f}",
        "ref_emb_alpha": f"{emb.alpha:.2f}", "ref_emb_r2": f"{emb.r2:.2f}",
        "ref_emb_chosen": str(emb_chosen),
        "ref_model": "SmolLM2-135M", "ref_data": "BBC News", "ref_n_calib": str(ref["n_calib"]),
        "ref_max_length": str(ref["scale"]["max_length"]), "ref_L": str(L),
        "ref_d0": f"{d[0]:.2f}", "ref_d1": f"{d[1]:.2f}", "ref_dL": f"{d[L]:.2f}",
        "ref_full_vocab_low": f"{ref['full_vocab_middle'][0]:.0f}",
        "ref_full_vocab_high": f"{ref['full_vocab_middle'][1]:.0f}",
        "ref_middle_last": str(L - 6), "ref_largest_step": f"{ref['largest_later_step']:.1f}",
        "ref_r2": f"{law['r2']:.2f}", "ref_E": f"{law['E']:.2f}", "ref_A": f"{law['A']:.2f}",
        "ref_alpha": f"{law['alpha']:.2f}", "ref_chosen": str(k), "ref_first_trained": str(k + 1),
        "ref_trained": str(L - k), "ref_with_embedding_raw": str(ref["argmax_with_embedding"]["raw"]),
        "ref_with_embedding_excess": str(ref["argmax_with_embedding"]["excess"]),
        "ref_top_excess": f"{gains.excess[k - 1]:.2f}", "ref_second": str(second),
        "ref_second_excess": f"{gains.excess[second - 1]:.2f}",
        "ref_excess_low": f"{gains.excess.min():.2f}", "ref_excess_high": f"{gains.excess.max():.2f}",
        "ref_budget": f"{DEFENCE_BUDGET:g}", "ref_budget_cases": str(len(budget_cases())),
        "ref_budget_cut": str(b), "ref_budget_first": str(b + 1), "ref_budget_trained": str(L - b),
        "ref_budget_cost": f"{curve[0][b]:.3f}", "ref_budget_benefit": f"{benefit[b]:.2f}",
        "ref_star_cost": f"{curve[0][k]:.3f}", "ref_star_benefit": f"{benefit[k]:.2f}",
        "ref_total_benefit": f"{benefit[0]:.2f}", "ref_between_benefit": f"{benefit[k] - benefit[b]:.2f}",
        "ref_cached_cut": str(bc), "ref_cached_first": str(bc + 1), "ref_cached_trained": str(L - bc),
        "ref_cached_cost": f"{curve[1][bc]:.3f}", "ref_cached_benefit": f"{benefit[bc]:.2f}",
    }


STUDY_SUMMARY = Path(__file__).resolve().parents[1] / "results" / "summary.json"


def _listed(values) -> str:
    values = [f"{v:g}" for v in values]
    return ", ".join(values[:-1]) + f" and {values[-1]}" if len(values) > 1 else values[0]


def study_substitutions() -> dict[str, str]:
    """The oracle study's protocol constants, from its committed summary (``freezelab.study.results.protocol``)."""
    summary = json.loads(STUDY_SUMMARY.read_text())
    p = summary["protocol"]
    lo, hi = p["ci_percentiles"]
    blocks = dict(spec.split(":") for spec in summary["budget"]["strategies"] if ":" in spec)  # gradnorm:8
    return {"study_acc_points": f"{100 * p['acc_tolerance']:g}", "study_ci_pct": f"{hi - lo:g}", "study_n_boot": str(p["n_boot"]),
            "study_dense_all": str(p["dense_all_up_to"]), "study_dense_stride": str(p["dense_stride"]),
            "study_budgets": _listed(p["budgets"]), "study_gradnorm_blocks": blocks["gradnorm"],
            "study_lisa_blocks": blocks["lisa"]}


SOLUTIONS_NOTE = {  # {{ solutions_note }} on the intro page, by edition (student: True)
    True: "This student edition leaves the solutions out; the instructor edition (`make book-instructor`) "
          "folds them out under each exercise.",
    False: "In this instructor edition the solutions fold out under each exercise.",
}
SOURCE_ENV = "FREEZELAB_BOOK_SOURCE"  # set by book/build.py: the folder its notebooks came from


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def runtime_substitutions(folder: Path | None = None) -> dict[str, str]:
    """``runtime_<stem>``: each chapter's and solution notebook's wall time when its stored outputs were made,
    from the first cell's start to the last cell's end in the cells' execution metadata (nbclient's timing).

    ``folder``: the notebooks (default: ``$FREEZELAB_BOOK_SOURCE``, else the repository's ``notebooks/``).
    """
    from datetime import datetime

    folder = folder or Path(os.environ.get(SOURCE_ENV) or Path(__file__).resolve().parents[2] / "notebooks")
    values = {}
    for path in sorted([*folder.glob("*.ipynb"), *folder.glob("assignments/solutions/*.ipynb")]):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        timing = [c["metadata"]["execution"] for c in cells if "execution" in c.get("metadata", {})]
        if not timing:
            raise RuntimeError(f"{path} stores no execution times: regenerate it with make notebooks")
        start, end = (datetime.fromisoformat(timing[0]["iopub.execute_input"].replace("Z", "+00:00")),
                      datetime.fromisoformat(timing[-1]["iopub.status.idle"].replace("Z", "+00:00")))
        values[f"runtime_{path.stem}"] = _duration((end - start).total_seconds())
    return values


def _configure(app, config) -> None:
    # MathJax 2 (what the package ships) reads its settings from MathJax.Hub.Config, not from the
    # MathJax 3 object that myst-parser would add; Sphinx writes math as \( \) and \[ \].
    config.mathjax_path = MATHJAX_PATH
    config.myst_update_mathjax = False
    config.mathjax3_config = None
    # The package ships only the STIX-Web fonts (not MathJax's default TeX fonts): without this, MathJax asks for
    # the missing TeX font data and sets the equations in local fallback fonts, misplaced.
    config.mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
                              "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": MATHJAX_FONT,
                                           "imageFont": None},
                              "SVG": {"font": MATHJAX_FONT}}
    _widgets_dir()  # fail before reading a page when the scripts are missing
    # under _static/, no CDN; myst-nb adds them, in this order, to the pages with widgets
    config.nb_ipywidgets_js = {f"widgets/{name}": {} for name in (REQUIRE_JS, WIDGET_PATHS.name, EMBED_JS)}
    # book/build.py --edition: the student edition (default) leaves every {solution} out of the pages, and
    # out of the copied sources (_sources/) and the download buttons that would serve them
    student = not _instructor()
    config.hide_solutions = student
    if student:
        config.html_copy_source = False
        config.html_theme_options = {**config.html_theme_options, "use_download_button": False}
    config.myst_substitutions = {**reference_substitutions(), **study_substitutions(), **runtime_substitutions(),
                                 "solutions_note": SOLUTIONS_NOTE[student], **(config.myst_substitutions or {})}


def _copy_scripts(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        shutil.copytree(_mathjax_dir(), static / "mathjax", dirs_exist_ok=True)
        shutil.copytree(_widgets_dir(), static / "widgets", dirs_exist_ok=True)
        shutil.copy2(WIDGET_PATHS, static / "widgets")  # not in book/_static: jupyter-book adds those to every page


def colab_edition(path: str, instructor: bool = False) -> str:
    """The Colab edition of a repository notebook: ``notebooks/X.ipynb`` -> ``notebooks/colab/X.ipynb``
    (``colab/instructor/X.ipynb`` with ``instructor``), ``notebooks/assignments/X.ipynb`` ->
    ``notebooks/colab/assignments/X.ipynb``, ``notebooks/assignments/solutions/X.ipynb`` ->
    ``notebooks/colab/instructor/assignments/X.ipynb``; any other path as it is."""
    rest = path.removeprefix(NOTEBOOK_DIR)
    if rest == path or rest.startswith("colab/"):
        return path
    if rest.startswith("assignments/solutions/"):
        return f"{NOTEBOOK_DIR}colab/instructor/assignments/{rest.removeprefix('assignments/solutions/')}"
    if rest.startswith("assignments/"):
        return f"{NOTEBOOK_DIR}colab/{rest}"
    return f"{NOTEBOOK_DIR}colab/{'instructor/' if instructor else ''}{rest}"


def _instructor() -> bool:
    return os.environ.get("FREEZELAB_BOOK_EDITION", "student") == "instructor"


def _colab_badges(app, doctree, docname: str) -> None:
    """Every Colab link opens the Colab edition; a badge image inside one becomes the inline SVG."""
    from docutils import nodes

    for ref in list(doctree.findall(nodes.reference)):
        uri = ref.get("refuri", "")
        if not uri.startswith(COLAB_GITHUB):
            continue
        ref["refuri"] = COLAB_GITHUB + colab_edition(uri.removeprefix(COLAB_GITHUB), _instructor())
        for image in list(ref.findall(nodes.image)):
            image.replace_self(nodes.raw("", BADGE_SVG, format="html"))


def _fix_launch_links(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    if not pagename.startswith(NOTEBOOK_DIR):
        return
    book_rel = app.config.html_theme_options.get("path_to_docs", "").strip("/")
    if not book_rel:
        return
    wrong = f"/{book_rel}/{pagename}.ipynb"
    right = "/" + colab_edition(f"{pagename}.ipynb", _instructor())
    for button in context.get("header_buttons", []):
        for item in [button, *button.get("buttons", [])]:
            url = item.get("url")
            if isinstance(url, str) and wrong in url and item.get("text") != "Download":
                item["url"] = url.replace(wrong, right)


def _each_script_once(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    """Drop repeated scripts: sphinx-thebe's and sphinx-togglebutton's inline scripts were added twice (file name
    None, then ""), and a page that declares ``const THEBE_JS_URL`` twice logs a SyntaxError in the console."""
    kept: dict = {}
    for js in sorted(context.get("script_files") or [], key=lambda js: getattr(js, "priority", 500)):
        # an inline script comes once with the file name None and once with "": the same script
        key = (js.filename or "", tuple(sorted(js.attributes.items()))) if hasattr(js, "attributes") else js
        kept.setdefault(key, js)
    if kept:
        context["script_files"] = list(kept.values())


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", _fix_launch_links, priority=900)
    app.connect("html-page-context", _each_script_once, priority=950)
    app.connect("doctree-resolved", _colab_badges)
    app.connect("config-inited", _configure)
    app.connect("build-finished", _copy_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}
