"""Local Sphinx extension for the freezelab book.

The chapters are the notebooks of the repository's top-level ``notebooks/`` folder;
``book/build.py`` copies them into ``book/notebooks/`` (git-ignored) before building.
sphinx-book-theme builds launch links as ``<repo>/blob/<branch>/<path_to_book>/<page>.ipynb``,
which would point at the git-ignored copy.  This extension rewrites launch links of
pages under ``notebooks/`` so that Colab opens ``notebooks/<name>.ipynb`` at the
repository root, the file that is actually committed.
"""

from __future__ import annotations

from typing import Any

NOTEBOOK_DIR = "notebooks/"


def _fix_launch_links(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    if not pagename.startswith(NOTEBOOK_DIR):
        return
    book_rel = app.config.html_theme_options.get("path_to_docs", "").strip("/")
    if not book_rel:
        return
    wrong = f"/{book_rel}/{pagename}"
    right = f"/{pagename}"
    for button in context.get("header_buttons", []):
        for item in [button, *button.get("buttons", [])]:
            url = item.get("url")
            if isinstance(url, str) and wrong in url and item.get("text") != "Download":
                item["url"] = url.replace(wrong, right)


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", _fix_launch_links, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}
