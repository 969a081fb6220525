"""The Flask-DebugToolbar panel, rendered by the real toolbar in real requests."""

from __future__ import annotations

import html
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask_debugtoolbar import DebugToolbarExtension

from flask_session_orm import NPlusOneWarning
from flask_session_orm import SessionORM

from .queries_support import Author
from .queries_support import Make
from .queries_support import databases

PANEL = "flask_session_orm.debugtoolbar.QueriesPanel"
PAGE = "<!doctype html><html><body><p>{}</p></body></html>"


@pytest.fixture
def make_db(app: flask.Flask) -> t.Iterator[Make]:
    """Init the extension with extra config, on tables with 8 authors of 2
    books each.
    """
    yield from databases(app)


def toolbar(app: flask.Flask, make_db: Make, **config: t.Any) -> SessionORM:
    """The extension and the toolbar, with only our panel."""
    app.config.update(
        SECRET_KEY="test",
        DEBUG_TB_ENABLED=True,
        DEBUG_TB_PANELS=[PANEL],
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
    )
    db = make_db(**config)
    DebugToolbarExtension(app)
    return db


def panel_html(page: str) -> str:
    """The panel's content block of a page the toolbar was added to."""
    start = page.index('id="flDebugSessionORMQueriesPanel-content"')
    return page[start : page.index('id="flDebugWindow"', start)]


def test_panel_lists_the_queries(make_db: Make, app: flask.Flask) -> None:
    """The panel shows each statement with its engine, its call site, lazy
    loads with their relationship, and the request's N+1 warning.
    """
    db = toolbar(app, make_db, SESSION_ORM_NPLUSONE_THRESHOLD=2)

    @app.get("/")
    def index() -> str:
        authors = db.session.scalars(sa.select(Author).order_by(Author.id)).all()
        count = sum(len(author.books) for author in authors)  # panel-lazy
        return PAGE.format(count)

    with pytest.warns(NPlusOneWarning):
        response = app.test_client().get("/")
    assert response.status_code == 200
    page = response.text
    assert "<p>16</p>" in page
    # The toolbar's navigation entry: 1 + 8 statements, one N+1.
    assert "SQL queries" in page
    assert "9 statements in " in page
    assert "ms, 1 N+1</small>" in page
    content = panel_html(page)
    assert "SQL queries of this request" in content
    assert content.count('<td class="flDebugSyntax">') == 9
    assert "orm_test_author" in content
    assert "orm_test_book" in content
    assert content.count("lazy load of\n") == 8
    assert "<code>Author.books</code>" in content
    assert f"test_debugtoolbar.py:{lines_of_here('panel-lazy')}" in content
    assert "<td>default</td>" in content
    assert "N+1:</strong> N+1 queries: Author.books was lazy-loaded more than 2" in (
        html.unescape(content)
    )


def lines_of_here(marker: str) -> int:
    """The line number of this file ending with the comment ``marker``."""
    with open(__file__) as f:
        for number, line in enumerate(f, 1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise LookupError(marker)


def test_panel_escapes_statements(make_db: Make, app: flask.Flask) -> None:
    """Statements and parameters are shown escaped, never as markup."""
    db = toolbar(app, make_db)

    @app.get("/")
    def index() -> str:
        db.session.execute(sa.select(sa.literal("<script>x</script>")))
        return PAGE.format("ok")

    content = panel_html(app.test_client().get("/").text)
    assert "<script>x</script>" not in content
    assert "&lt;script&gt;x&lt;/script&gt;" in content


def test_panel_when_recording_is_off(make_db: Make, app: flask.Flask) -> None:
    """With recording off the panel says how to turn it on."""
    toolbar(app, make_db, SESSION_ORM_RECORD_QUERIES=False)

    @app.get("/")
    def index() -> str:
        return PAGE.format("ok")

    page = app.test_client().get("/").text
    assert "recording off</small>" in page
    assert "SESSION_ORM_RECORD_QUERIES = True" in panel_html(page)
