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

# The docs are built without network access (CI has none), so intersphinx reads
# small inventories shipped in _inventories/ instead of downloading them. They list
# the objects these pages link to, with their addresses on the real sites; see
# _inventories/build.py to add one.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "flask": ("https://flask.palletsprojects.com/en/stable/", "_inventories/flask.inv"),
    "sqlalchemy": ("https://docs.sqlalchemy.org/en/20/", "_inventories/sqlalchemy.inv"),
}
# Objects outside the three inventories, for builds with -n (nitpicky).
nitpick_ignore = [("py:class", "blinker.Signal")]
exclude_patterns = ["_build", "_inventories", "examples"]

html_theme = "flask"
html_title = "flask-session-orm"
html_context = {"project_links": []}

autodoc_member_order = "bysource"
# In the signature: autodoc resolves the hints of __init__ there, but not when it
# moves them into a class's description.
autodoc_typehints = "signature"
