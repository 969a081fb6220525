"""Seeing the queries: recorded queries, N+1 warnings, Server-Timing, slow query
log, and nothing attached when all of it is off.
"""

from __future__ import annotations

import importlib
import logging
import pathlib
import shutil
import sys
import types
import typing as t

import flask
import flask.testing
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import NPlusOneWarning
from flask_session_orm import RecordedQuery
from flask_session_orm import SessionORM
from flask_session_orm import _recording
from flask_session_orm._config import read_config

from .queries_support import Author
from .queries_support import Book
from .queries_support import Make
from .queries_support import databases

pytest_plugins = ["pytester"]

HERE = __file__
DOCS_EXAMPLES = pathlib.Path(__file__).parent.parent / "docs" / "examples"


@pytest.fixture
def make_db(app: flask.Flask) -> t.Iterator[Make]:
    """Init the extension with extra config, on tables with 8 authors of 2
    books each.
    """
    yield from databases(app)


def lines_of(marker: str) -> int:
    """The line number of this file that ends with the comment ``marker``."""
    for number, line in enumerate(pathlib.Path(HERE).read_text().splitlines(), 1):
        if line.endswith(f"# {marker}"):
            return number
    raise LookupError(marker)


# -- configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, False),
        ({"TESTING": True}, True),
        ({"DEBUG": True}, True),
        ({"TESTING": True, "SESSION_ORM_RECORD_QUERIES": False}, False),
        ({"SESSION_ORM_RECORD_QUERIES": True}, True),
    ],
)
def test_record_queries_default(config: dict[str, t.Any], expected: bool) -> None:
    """Recording is on by default in debug and testing mode only; the key wins."""
    config = {"SESSION_ORM_DATABASE_URL": "sqlite://", **config}
    recording = read_config(config, instance_path="/nowhere").recording
    assert recording.record is expected
    # The N+1 warning goes with recording.
    assert recording.nplusone_threshold == (5 if expected else None)
    assert not recording.server_timing
    assert recording.slow_query_seconds is None


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("SESSION_ORM_RECORD_QUERIES", "yes", TypeError, "True, False or None"),
        ("SESSION_ORM_NPLUSONE_THRESHOLD", 0, ValueError, "1 or more"),
        ("SESSION_ORM_NPLUSONE_THRESHOLD", True, ValueError, "whole number"),
        ("SESSION_ORM_NPLUSONE_THRESHOLD", 2.5, ValueError, "whole number"),
        ("SESSION_ORM_SERVER_TIMING", 1, TypeError, "True or False"),
        ("SESSION_ORM_SLOW_QUERY_SECONDS", -1, ValueError, "0 or more"),
        ("SESSION_ORM_SLOW_QUERY_SECONDS", "1s", ValueError, "number of seconds"),
        ("SESSION_ORM_LOG_QUERY_PARAMETERS", "no", TypeError, "True or False"),
    ],
)
def test_recording_config_errors(
    key: str, value: t.Any, error: type[Exception], message: str
) -> None:
    """A bad value of a recording key is an error naming the key and the value."""
    config = {"SESSION_ORM_DATABASE_URL": "sqlite://", key: value}
    with pytest.raises(error, match=rf"'{key}' .*{message}.*{value!r}"):
        read_config(config, instance_path="/nowhere")


def test_all_off_attaches_nothing(make_db: Make, app: flask.Flask) -> None:
    """With every feature off no listener is attached to the engine or the
    sessions and no after_request function is registered.
    """
    before = list(app.after_request_funcs.get(None, []))
    db = make_db(SESSION_ORM_RECORD_QUERIES=False)
    with app.app_context():
        engine = db.engine
        assert len(engine.dispatch.before_cursor_execute) == 0
        assert len(engine.dispatch.after_cursor_execute) == 0
        session = db.sessionmaker()
        assert len(session.dispatch.do_orm_execute) == 0
        session.close()
        with pytest.raises(RuntimeError, match="'SESSION_ORM_RECORD_QUERIES = True'"):
            db.recorded_queries()
    assert app.after_request_funcs.get(None, []) == before


def test_features_attach_what_they_need(make_db: Make, app: flask.Flask) -> None:
    """Server-Timing alone times statements and registers its after_request
    function, but records nothing and watches no lazy load.
    """
    db = make_db(SESSION_ORM_RECORD_QUERIES=False, SESSION_ORM_SERVER_TIMING=True)
    assert _recording._add_server_timing in app.after_request_funcs[None]
    with app.app_context():
        assert len(db.engine.dispatch.after_cursor_execute) == 1
        session = db.sessionmaker()
        assert len(session.dispatch.do_orm_execute) == 0
        session.close()


# -- recorded queries -------------------------------------------------------------


def test_recorded_queries_in_a_view(make_db: Make, app: flask.Flask) -> None:
    """A view sees its statements with parameters, engine, duration and the
    line of the view that ran them.
    """
    db = make_db()
    seen: list[RecordedQuery] = []

    @app.get("/author/<name>")
    def author(name: str) -> str:
        query = sa.select(Author).where(Author.name == name)
        found = db.session.scalars(query).one()  # view-select
        titles = [book.title for book in found.books]  # view-lazy
        seen.extend(db.recorded_queries())
        return ",".join(titles)

    assert app.test_client().get("/author/a3").text == "b3.0,b3.1"
    select, lazy = seen
    assert select.statement.startswith("SELECT")
    assert "orm_test_author" in select.statement
    assert "a3" in list(
        select.parameters.values()
        if isinstance(select.parameters, dict)
        else select.parameters
    )
    assert select.engine == "default"
    assert (select.filename, select.lineno, select.function) == (
        HERE,
        lines_of("view-select"),
        "author",
    )
    assert select.location == f"{HERE}:{lines_of('view-select')} (author)"
    assert select.relationship is None
    assert 0 <= select.duration < 5
    assert select.start_time <= select.end_time <= lazy.start_time
    assert lazy.relationship == "Author.books"
    assert lazy.lineno == lines_of("view-lazy")
    assert "orm_test_book" in lazy.statement


def test_text_and_dml_statements(make_db: Make, app: flask.Flask) -> None:
    """text(), ORM UPDATE and DELETE statements are recorded like the others
    (they have no loader options to look at for lazy loads).
    """
    db = make_db()
    db.session.execute(sa.text("SELECT 1"))
    db.session.execute(sa.update(Book).values(title="x"))
    db.session.execute(sa.delete(Book).where(Book.id == 1))
    db.session.rollback()
    statements = [q.statement.split()[0] for q in db.recorded_queries()]
    assert statements[-3:] == ["SELECT", "UPDATE", "DELETE"]


def test_requests_do_not_share_records(make_db: Make, app: flask.Flask) -> None:
    """Each test-client request sees only its own statements, even under the
    request context pytest-flask pushed for the test, and the test body's
    statements stay its own.
    """
    db = make_db()

    @app.get("/count/<int:n>")
    def count(n: int) -> dict[str, t.Any]:
        for i in range(n):
            db.session.execute(sa.select(sa.literal(i)))
        return {"statements": len(db.recorded_queries())}

    assert flask.has_request_context()  # pytest-flask's
    db.session.execute(sa.select(sa.literal("body")))
    client = app.test_client()
    assert client.get("/count/3").json == {"statements": 3}
    assert client.get("/count/1").json == {"statements": 1}
    body = db.recorded_queries()
    assert len(body) == 1
    assert body[0].function == "test_requests_do_not_share_records"


def test_recorded_queries_outside_requests(
    make_db: Make, app: flask.Flask, outside_requests: None
) -> None:
    """Outside requests the statements belong to the app context: a new
    context starts empty.
    """
    db = make_db()
    with app.app_context():
        db.session.scalars(sa.select(Author)).all()
        with db.engine.connect() as connection:
            connection.execute(sa.select(sa.literal(1)))
        first = db.recorded_queries()
        assert [q.function for q in first] == [
            "test_recorded_queries_outside_requests"
        ] * 2
    with app.app_context():
        assert db.recorded_queries() == []


def test_engine_names(make_db: Make, app: flask.Flask) -> None:
    """Each record names the engine its statement ran on."""
    db = make_db(SESSION_ORM_ENGINES={"other": "sqlite://"})

    @app.get("/both")
    def both() -> list[str]:
        db.session.execute(sa.select(sa.literal(1)))
        with db.get_engine("other").connect() as connection:
            connection.execute(sa.select(sa.literal(2)))
        return [q.engine for q in db.recorded_queries()]

    assert app.test_client().get("/both").json == ["default", "other"]


def test_app_context_inside_a_request(
    make_db: Make, app: flask.Flask, outside_requests: None
) -> None:
    """An app context pushed inside a request keeps its statements apart from
    the request's.
    """
    db = make_db()

    @app.get("/nested")
    def nested() -> dict[str, int]:
        db.session.execute(sa.select(sa.literal(1)))
        with app.app_context():
            with db.engine.connect() as connection:
                connection.execute(sa.select(sa.literal(2)))
                connection.execute(sa.select(sa.literal(3)))
            inner = len(db.recorded_queries())
        return {"request": len(db.recorded_queries()), "inner": inner}

    # With no context pushed around it, the request pushes its own app
    # context, as a server's requests do.
    assert app.test_client().get("/nested").json == {"request": 1, "inner": 2}


def test_commit_call_site_falls_back(make_db: Make, app: flask.Flask) -> None:
    """A statement run by the end of the request, with no app frame on the
    stack, is placed at the extension's own code.
    """
    db = make_db()
    recorded: list[RecordedQuery] = []

    @app.post("/author")
    def create() -> tuple[str, int]:
        db.session.add(Author(name="new"))
        return "created", 201

    @app.teardown_request
    def keep(exc: BaseException | None) -> None:
        recorded.extend(db.recorded_queries())

    assert app.test_client().post("/author").status_code == 201
    # The INSERT is flushed by the commit at the end of the request, which
    # runs from Flask and this extension only.
    (insert,) = [q for q in recorded if q.statement.startswith("INSERT")]
    assert "flask_session_orm" in insert.filename


# -- N+1 --------------------------------------------------------------------------


def add_loop_views(app: flask.Flask, db: SessionORM) -> None:
    @app.get("/loop")
    def loop() -> str:
        query = sa.select(Author).order_by(Author.id)
        if flask.request.args.get("fixed"):
            query = query.options(orm.selectinload(Author.books))
        authors = db.session.scalars(query).all()
        return str(sum(len(author.books) for author in authors))  # nplusone-line


def test_nplusone_warning(make_db: Make, app: flask.Flask) -> None:
    """Lazy loads of one relationship past the threshold give one warning per
    request, naming the view, the relationship, the line and selectinload.
    """
    db = make_db()
    add_loop_views(app, db)
    client = app.test_client()
    line = lines_of("nplusone-line")
    with pytest.warns(NPlusOneWarning) as record:
        assert client.get("/loop").text == "16"
    (warning,) = record
    message = str(warning.message)
    assert "Author.books was lazy-loaded more than 5 times" in message
    assert "in the view 'loop' (GET /loop)" in message
    assert f"test_queries.py:{line} (<genexpr>)" in message
    assert ".options(selectinload(Author.books))" in message
    assert (warning.filename, warning.lineno) == (HERE, line)
    # The next request is warned again.
    with pytest.warns(NPlusOneWarning):
        client.get("/loop")


def test_nplusone_fixed_by_selectinload(make_db: Make, app: flask.Flask) -> None:
    """The same page with selectinload runs two statements and warns nothing."""
    db = make_db()
    add_loop_views(app, db)

    @app.after_request
    def count(response: flask.Response) -> flask.Response:
        response.headers["X-Statements"] = str(len(db.recorded_queries()))
        return response

    response = app.test_client().get("/loop?fixed=1")
    assert response.text == "16"
    assert response.headers["X-Statements"] == "2"


def test_no_false_positive_for_gets(make_db: Make, app: flask.Flask) -> None:
    """A loop of session.get() on different primary keys, and many-to-one
    lazy loads answered by the identity map, are no N+1.
    """
    db = make_db(SESSION_ORM_NPLUSONE_THRESHOLD=1)

    @app.get("/gets")
    def gets() -> dict[str, t.Any]:
        ids = db.session.scalars(sa.select(Author.id)).all()
        authors = [db.session.get(Author, i) for i in ids]
        again = [db.session.get(Author, i) for i in ids]
        books = db.session.scalars(sa.select(Book)).all()
        # Every book's author is in the identity map already: no SQL.
        names = {book.author.name for book in books}
        return {
            "same": authors == again,
            "names": len(names),
            "statements": len(db.recorded_queries()),
        }

    # filterwarnings=error turns any NPlusOneWarning into a failed request.
    response = app.test_client().get("/gets")
    assert response.json == {"same": True, "names": 8, "statements": 1 + 8 + 1}


def test_nplusone_threshold(make_db: Make, app: flask.Flask) -> None:
    """The warning comes on the first lazy load past the threshold."""
    db = make_db(SESSION_ORM_NPLUSONE_THRESHOLD=2)

    @app.get("/some/<int:n>")
    def some(n: int) -> str:
        authors = db.session.scalars(sa.select(Author).order_by(Author.id)).all()
        return str(sum(len(author.books) for author in authors[:n]))

    client = app.test_client()
    assert client.get("/some/2").text == "4"
    with pytest.warns(NPlusOneWarning, match="more than 2 times"):
        client.get("/some/3")


def test_nplusone_off(make_db: Make, app: flask.Flask) -> None:
    """A threshold of None records lazy loads but never warns."""
    db = make_db(SESSION_ORM_NPLUSONE_THRESHOLD=None)
    add_loop_views(app, db)
    assert app.test_client().get("/loop").text == "16"


def test_nplusone_in_a_template(make_db: Make, app: flask.Flask) -> None:
    """Lazy loads in a template are placed at the template's own line."""
    db = make_db()
    template = (
        "<ul>\n{% for a in authors %}\n<li>{{ a.books|length }}</li>\n{% endfor %}"
    )

    @app.get("/page")
    def page() -> str:
        authors = db.session.scalars(sa.select(Author)).all()
        return flask.render_template_string(template, authors=authors)

    with pytest.warns(NPlusOneWarning, match=r"last at <template>:3 ") as record:
        app.test_client().get("/page")
    assert record[0].lineno == 3


def test_nplusone_outside_requests(
    make_db: Make, app: flask.Flask, outside_requests: None
) -> None:
    """In an app context the warning says it is outside requests."""
    db = make_db()
    with app.app_context():
        authors = db.session.scalars(sa.select(Author)).all()
        with pytest.warns(NPlusOneWarning, match="app context of .*outside requests"):
            for author in authors:
                author.books  # noqa: B018
        found = _recording.nplusone_found()
        assert [f.relationship for f in found] == ["Author.books"]


# -- Server-Timing and slow queries -----------------------------------------------


def test_server_timing(make_db: Make, app: flask.Flask) -> None:
    """The header gives the request's statement count and database time."""
    db = make_db(SESSION_ORM_SERVER_TIMING=True, SESSION_ORM_RECORD_QUERIES=False)

    @app.get("/n/<int:n>")
    def n(n: int) -> str:
        for i in range(n):
            db.session.execute(sa.select(sa.literal(i)))
        return "ok"

    client = app.test_client()
    (header,) = client.get("/n/3").headers.get_all("Server-Timing")
    name, duration, description = header.split(";")
    assert name == "db"
    assert float(duration.removeprefix("dur=")) > 0
    assert description == 'desc="3 SQL statements"'
    assert (
        client.get("/n/0").headers["Server-Timing"]
        == 'db;dur=0.000;desc="0 SQL statements"'
    )


def test_no_server_timing_by_default(make_db: Make, app: flask.Flask) -> None:
    """Without the key no response gets the header."""
    make_db()

    @app.get("/")
    def index() -> str:
        return "ok"

    assert "Server-Timing" not in app.test_client().get("/").headers


def test_slow_query_log(
    make_db: Make, app: flask.Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement slower than the threshold is logged once, with the view and
    the call site, without its parameters unless configured.
    """
    db = make_db(SESSION_ORM_SLOW_QUERY_SECONDS=0, SESSION_ORM_RECORD_QUERIES=False)

    @app.get("/secret/<word>")
    def secret(word: str) -> str:
        db.session.execute(sa.select(sa.literal(word)))  # slow-line
        return "ok"

    caplog.set_level(logging.WARNING, logger="flask_session_orm.queries")
    caplog.clear()  # what make_db logged
    app.test_client().get("/secret/hunter2")
    (record,) = caplog.records
    message = record.getMessage()
    assert "Slow query" in message
    assert (
        "on the engine 'default' in the view 'secret' (GET /secret/hunter2)" in message
    )
    assert f"test_queries.py:{lines_of('slow-line')} (secret)" in message
    assert "SELECT" in message
    assert "hunter2" not in message.split("\n", 1)[1]
    assert record.session_orm_engine == "default"  # type: ignore[attr-defined]


def test_slow_query_log_parameters(
    make_db: Make, app: flask.Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """SESSION_ORM_LOG_QUERY_PARAMETERS adds the parameters; faster statements
    than the threshold are not logged.
    """
    db = make_db(
        SESSION_ORM_SLOW_QUERY_SECONDS=0,
        SESSION_ORM_LOG_QUERY_PARAMETERS=True,
    )

    @app.get("/secret/<word>")
    def secret(word: str) -> str:
        db.session.execute(sa.select(sa.literal(word)))
        return "ok"

    caplog.set_level(logging.WARNING, logger="flask_session_orm.queries")
    caplog.clear()  # what make_db logged
    app.test_client().get("/secret/hunter2")
    (record,) = caplog.records
    assert "Parameters: " in record.getMessage()
    assert "hunter2" in record.getMessage().split("\n", 1)[1]


def test_fast_queries_not_logged(
    make_db: Make, app: flask.Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Statements faster than the threshold are not logged."""
    db = make_db(SESSION_ORM_SLOW_QUERY_SECONDS=60)
    caplog.set_level(logging.DEBUG, logger="flask_session_orm.queries")
    caplog.clear()
    db.session.execute(sa.select(sa.literal(1)))
    assert caplog.records == []


# -- the docs page's example ------------------------------------------------------


@pytest.fixture
def library(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> t.Iterator[types.ModuleType]:
    """docs/examples/queries.py, imported from a copy, in debug mode (as with
    ``flask run --debug``), its tables created and seeded by its CLI command.
    """
    shutil.copy(DOCS_EXAMPLES / "queries.py", tmp_path / "queries.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLASK_DEBUG", "1")
    sys.modules.pop("queries", None)
    module = importlib.import_module("queries")
    try:
        result = module.app.test_cli_runner().invoke(args=["seed"])
        assert result.exit_code == 0, result.output
        yield module
    finally:
        sys.modules.pop("queries", None)
        with module.app.app_context():
            module.db.engine.dispose()


def test_docs_example(library: types.ModuleType) -> None:
    """The docs page's app warns about its N+1 page, not about the fixed one,
    shows the panel in debug mode and lists the recorded queries.
    """
    client = library.app.test_client()
    with pytest.warns(NPlusOneWarning, match="Author.books .* in the view 'authors'"):
        page = client.get("/").text
    assert "Author 1: Volume 1.1, Volume 1.2" in page
    assert 'id="flDebugSessionORMQueriesPanel-content"' in page
    assert "9 statements in " in page
    fixed = client.get("/fixed").text
    assert "Author 8: Volume 8.1, Volume 8.2" in fixed
    assert "2 statements in " in fixed
    (query,) = client.get("/debug/queries").json
    assert query["sql"].startswith("SELECT")
    assert query["engine"] == "default"
    source = (DOCS_EXAMPLES / "queries.py").read_text().splitlines()
    line = source.index("    db.session.scalars(sa.select(Author)).all()") + 1
    assert query["at"].endswith(f"queries.py:{line} (queries)")


# -- the pytest option --------------------------------------------------------------

INNER_TESTS = """
import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "parent"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    children: orm.Mapped[list["Child"]] = orm.relationship()


class Child(Base):
    __tablename__ = "child"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    parent_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("parent.id"))


@pytest.fixture
def app(tmp_path):
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(TESTING=True, SESSION_ORM_DATABASE_URL="sqlite://")
    db = SessionORM(app)
    with app.app_context():
        db.create_all(Base)
        db.session.add_all([Parent(children=[Child()]) for _ in range(6)])
        db.session.commit()

    @app.get("/")
    def index():
        parents = db.session.scalars(sa.select(Parent)).all()
        return str(sum(len(parent.children) for parent in parents))

    return app


def test_page(app):
    assert app.test_client().get("/").text == "6"
"""


@pytest.mark.parametrize(
    ("args", "ini", "failed"),
    [
        ([], "", False),
        (["--orm-fail-on-nplusone"], "", True),
        ([], "orm_fail_on_nplusone = true", True),
    ],
)
def test_pytest_option(
    pytester: pytest.Pytester, args: list[str], ini: str, failed: bool
) -> None:
    """The plugin's option (or ini setting) makes a test with an N+1 fail;
    without it the warning is only reported.
    """
    pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini}\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess(*args)
    if failed:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*NPlusOneWarning: N+1 queries: Parent.children*"])
    else:
        result.assert_outcomes(passed=1, warnings=1)
        result.stdout.fnmatch_lines(["*NPlusOneWarning: N+1 queries: Parent.children*"])
