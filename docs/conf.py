"""Sphinx configuration."""

from __future__ import annotations

project = "flask-session-orm"
copyright = "2026, the flask-session-orm developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "pallets_sphinx_themes",
]
# CI has no internet: the docs issue replaces this with local inventories.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
html_theme = "flask"
html_title = "flask-session-orm"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
