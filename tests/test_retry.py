"""Retry on serialization failures and deadlocks: @db.retry, @db.transaction,
db.retryable, db.attempt and the request_retried signal, on real databases.

The conflicts are the databases' own errors: PostgreSQL raises SQLSTATE 40001
from a ``DO`` block, MariaDB error 1213 from ``SIGNAL``, and SQLite reports a
busy database to a second connection that writes while the session holds the
write lock.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import typing as t

import flask
import flask.views
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM
from flask_session_orm import signals
from flask_session_orm._config import read_config
from flask_session_orm._retry import is_retryable

from .conftest import Base
from .conftest import Item
from .conftest import checked_out

if sys.version_info < (3, 11):
    # sqlite3 names SQLite's error codes from Python 3.11 on; before, a busy
    # database cannot be told apart from other errors.
    SQLITE_CLASSIFIED = False
else:
    SQLITE_CLASSIFIED = True


@pytest.fixture
def retry_config() -> dict[str, t.Any]:
    """Extra config for the test's app; tests parametrize it."""
    return {}


@pytest.fixture
def db(
    app: flask.Flask, backend: str, retry_config: dict[str, t.Any]
) -> t.Iterator[SessionORM]:
    if backend == "sqlite" and not SQLITE_CLASSIFIED:
        pytest.skip("sqlite3 has no error codes before Python 3.11")
    app.config.update(
        SESSION_ORM_RETRY_BACKOFF=0.001,
        SESSION_ORM_RETRY_BACKOFF_MAX=0.005,
    )
    if backend == "sqlite":
        # Fail at once on a locked database instead of waiting 5 seconds.
        app.config["SESSION_ORM_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 0}}
    app.config.update(retry_config)
    db = SessionORM(app)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    yield db
    if flask.has_request_context():
        db.session.close()
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


def conflict(db: SessionORM) -> None:
    """Make the database raise a retryable error in the current request."""
    backend = db.engine.url.get_backend_name()
    if backend == "postgresql":
        db.session.execute(
            sa.text(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict (test)'"
                " USING ERRCODE = 'serialization_failure'; END $$"
            )
        )
    elif backend in ("mysql", "mariadb"):
        db.session.execute(
            sa.text(
                "SIGNAL SQLSTATE '40001'"
                " SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'deadlock (test)'"
            )
        )
    else:
        # The session takes the database's write lock (if it does not hold it
        # yet); a second connection that writes then finds the database locked.
        db.session.execute(sa.insert(Item).values(name="holds the lock"))
        with db.engine.connect() as other:
            other.execute(sa.insert(Item).values(name="blocked"))
    raise AssertionError("The database did not raise.")


def stored(db: SessionORM, app: flask.Flask) -> set[str]:
    """The names of the stored items, read through a fresh connection."""
    with app.app_context(), db.engine.connect() as connection:
        return set(connection.scalars(sa.select(Item.name)))


class Retries:
    """The request_retried signals the app sent."""

    def __init__(self, app: flask.Flask) -> None:
        self.seen: list[tuple[int, BaseException]] = []
        signals.request_retried.connect(self.receive, app, weak=False)
        self.app = app

    def receive(self, sender: flask.Flask, **extra: t.Any) -> None:
        self.seen.append((extra["attempt"], extra["exception"]))

    @property
    def attempts(self) -> list[int]:
        return [attempt for attempt, _ in self.seen]

    def disconnect(self) -> None:
        signals.request_retried.disconnect(self.receive, self.app)


@pytest.fixture
def retries(app: flask.Flask) -> t.Iterator[Retries]:
    recorder = Retries(app)
    yield recorder
    recorder.disconnect()


# -- retrying the view -------------------------------------------------------------


def test_conflict_in_the_view_runs_it_again(
    app: flask.Flask,
    db: SessionORM,
    client: flask.testing.FlaskClient,
    retries: Retries,
) -> None:
    """A retryable error in the view rolls the attempt back and runs the view
    again with a clean g; only the committing attempt's on_commit runs.
    """
    callbacks: list[int] = []
    seen_in_g: list[bool] = []

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        seen_in_g.append("attempt" in flask.g)
        flask.g.attempt = db.attempt
        db.session.add(Item(name=f"attempt-{db.attempt}"))
        db.session.flush()
        db.on_commit(callbacks.append, db.attempt)
        if db.attempt == 1:
            conflict(db)
        return str(db.attempt)

    response = client.post("/")
    assert response.status_code == 200
    assert response.data == b"2"
    assert stored(db, app) == {"attempt-2"}
    assert callbacks == [2]
    assert seen_in_g == [False, False]
    assert retries.attempts == [2]
    assert isinstance(retries.seen[0][1], sa.exc.OperationalError)
    assert checked_out(db, app) == 0


def test_session_committed_only_for_the_committing_attempt(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """session_committed is sent once, and session_rolled_back for the failed
    attempt; each attempt gets a session of its own.
    """
    committed: list[object] = []
    sessions: list[object] = []

    def on_committed(sender: flask.Flask, session: object, **extra: t.Any) -> None:
        committed.append(session)

    @app.post("/")
    @db.retry(attempts=2)
    def view() -> str:
        sessions.append(db.session)
        db.session.add(Item(name=f"attempt-{db.attempt}"))
        if db.attempt == 1:
            db.session.flush()
            conflict(db)
        return "ok"

    with signals.session_committed.connected_to(on_committed, app):
        assert client.post("/").status_code == 200
    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]
    assert committed == [sessions[1]]


def test_attempts_are_bounded_and_the_error_handler_answers(
    app: flask.Flask,
    db: SessionORM,
    client: flask.testing.FlaskClient,
    retries: Retries,
) -> None:
    """A view that always conflicts runs the configured number of times, then
    the app's error handler answers the last error.
    """
    calls: list[int] = []

    @app.errorhandler(sa.exc.OperationalError)
    def busy(error: Exception) -> tuple[str, int]:
        return "busy, try later", 503

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        calls.append(db.attempt)
        conflict(db)
        return "never"

    response = client.post("/")
    assert response.status_code == 503
    assert response.data == b"busy, try later"
    assert calls == [1, 2, 3]
    assert retries.attempts == [2, 3]
    assert checked_out(db, app) == 0


def test_last_attempt_without_handler_is_a_500(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Without an error handler, the last attempt's error becomes a 500 and
    nothing of any attempt is stored.
    """
    app.config["TESTING"] = False
    calls: list[int] = []

    @app.post("/")
    @db.retry(attempts=2)
    def view() -> str:
        calls.append(db.attempt)
        db.session.add(Item(name=f"attempt-{db.attempt}"))
        db.session.flush()
        conflict(db)
        return "never"

    assert client.post("/").status_code == 500
    assert calls == [1, 2]
    assert stored(db, app) == set()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_other_errors_are_not_retried(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """An error that is not a conflict (a unique violation, a bug) runs once
    and goes to the app's error handling.
    """
    calls: list[int] = []

    @app.errorhandler(sa.exc.IntegrityError)
    def duplicate(error: Exception) -> tuple[str, int]:
        return "duplicate", 409

    @app.post("/duplicate")
    @db.retry(attempts=3)
    def duplicate_view() -> str:
        calls.append(db.attempt)
        db.session.add_all([Item(name="same"), Item(name="same")])
        db.session.flush()
        return "never"

    @app.post("/bug")
    @db.retry(attempts=3)
    def bug() -> str:
        calls.append(db.attempt)
        raise ZeroDivisionError("bug")

    assert client.post("/duplicate").status_code == 409
    with pytest.raises(ZeroDivisionError, match="bug"):
        client.post("/bug")
    assert calls == [1, 1]


def test_no_retry_after_the_view_committed(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Once the view committed, a conflict is not retried: running the request
    again would store the committed part twice.
    """
    calls: list[int] = []

    @app.errorhandler(sa.exc.OperationalError)
    def busy(error: Exception) -> tuple[str, int]:
        return "busy", 503

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        calls.append(db.attempt)
        db.session.add(Item(name="committed"))
        db.session.commit()
        conflict(db)
        return "never"

    assert client.post("/").status_code == 503
    assert calls == [1]
    assert stored(db, app) == {"committed"}


def test_views_without_retry_run_once(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """By default (SESSION_ORM_RETRY_ATTEMPTS 1) a conflict is not retried, and
    db.attempt is 1 in the view and outside requests.
    """
    calls: list[int] = []

    @app.errorhandler(sa.exc.OperationalError)
    def busy(error: Exception) -> tuple[str, int]:
        return "busy", 503

    @app.post("/")
    def view() -> str:
        calls.append(db.attempt)
        conflict(db)
        return "never"

    assert client.post("/").status_code == 503
    assert calls == [1]
    assert db.attempt == 1


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("retry_config", [{"SESSION_ORM_RETRY_ATTEMPTS": 3}])
def test_config_retries_every_view_and_a_view_opts_out(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """SESSION_ORM_RETRY_ATTEMPTS retries every view; @db.retry(attempts=1)
    turns it off for one view.
    """
    calls: dict[str, list[int]] = {"all": [], "off": []}

    @app.errorhandler(sa.exc.OperationalError)
    def busy(error: Exception) -> tuple[str, int]:
        return "busy", 503

    @app.post("/all")
    def every() -> str:
        calls["all"].append(db.attempt)
        conflict(db)
        return "never"

    @app.post("/off")
    @db.retry(attempts=1)
    def off() -> str:
        calls["off"].append(db.attempt)
        conflict(db)
        return "never"

    assert client.post("/all").status_code == 503
    assert client.post("/off").status_code == 503
    assert calls == {"all": [1, 2, 3], "off": [1]}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_retry_on_blueprints_class_views_and_above_route(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """@db.retry works above @route, without arguments, on a blueprint, on a
    MethodView class and in a class's decorators list.
    """
    calls: list[str] = []

    def conflict_once(name: str) -> str:
        calls.append(f"{name}{db.attempt}")
        if db.attempt == 1:
            conflict(db)
        return name

    @db.retry
    @app.post("/above")
    def above() -> str:
        return conflict_once("above")

    blueprint = flask.Blueprint("bp", __name__)

    @blueprint.post("/bp")
    @db.retry(attempts=2)
    def in_blueprint() -> str:
        return conflict_once("bp")

    @db.retry(attempts=2)
    class Marked(flask.views.MethodView):
        def post(self) -> str:
            return conflict_once("class")

    class Listed(flask.views.MethodView):
        decorators = [db.retry(attempts=2)]

        def post(self) -> str:
            return conflict_once("listed")

    app.register_blueprint(blueprint)
    app.add_url_rule("/class", view_func=Marked.as_view("marked"))
    app.add_url_rule("/listed", view_func=Listed.as_view("listed"))
    for path in ("/above", "/bp", "/class", "/listed"):
        assert client.post(path).status_code == 200
    assert calls == [
        "above1",
        "above2",
        "bp1",
        "bp2",
        "class1",
        "class2",
        "listed1",
        "listed2",
    ]


# -- what the next attempt sees ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_body_form_files_and_json_are_read_again(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Each attempt reads the same form, uploaded file, raw body and JSON, even
    when the previous one consumed or changed them.
    """
    seen: list[tuple[t.Any, ...]] = []

    @app.post("/form")
    @db.retry(attempts=2)
    def form() -> str:
        upload = flask.request.files["upload"]
        seen.append((flask.request.form["name"], upload.read()))
        if db.attempt == 1:
            conflict(db)
        return "ok"

    @app.post("/json")
    @db.retry(attempts=2)
    def json() -> str:
        data = flask.request.get_json()
        seen.append((dict(data), flask.request.get_data()))
        data["changed"] = True
        if db.attempt == 1:
            conflict(db)
        return "ok"

    response = client.post(
        "/form",
        data={"name": "Ada", "upload": (io.BytesIO(b"file body"), "a.txt")},
    )
    assert response.status_code == 200
    assert client.post("/json", json={"n": 1}).status_code == 200
    assert seen == [
        ("Ada", b"file body"),
        ("Ada", b"file body"),
        ({"n": 1}, b'{"n": 1}'),
        ({"n": 1}, b'{"n": 1}'),
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_before_and_after_request_functions_per_attempt(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """before_request runs for every attempt, after_this_request functions of
    a failed attempt are dropped, and a conflict in an after_request function
    is retried too.
    """
    events: list[str] = []

    @app.before_request
    def before() -> None:
        events.append(f"before{db.attempt}")

    @app.after_request
    def after(response: flask.Response) -> flask.Response:
        events.append(f"after{db.attempt}")
        if flask.request.path == "/late" and db.attempt == 1:
            conflict(db)
        return response

    @app.post("/early")
    @db.retry(attempts=2)
    def early() -> str:
        attempt = db.attempt

        @flask.after_this_request
        def note(response: flask.Response) -> flask.Response:
            events.append(f"this{attempt}")
            return response

        if attempt == 1:
            conflict(db)
        return "ok"

    @app.post("/late")
    @db.retry(attempts=2)
    def late() -> str:
        return str(db.attempt)

    assert client.post("/early").status_code == 200
    assert events == ["before1", "before2", "this2", "after2"]
    events.clear()
    assert client.post("/late").data == b"2"
    assert events == ["before1", "after1", "before2", "after2"]


def test_conflict_at_the_commit_is_retried(
    app: flask.Flask,
    db: SessionORM,
    backend: str,
    client: flask.testing.FlaskClient,
    retries: Retries,
) -> None:
    """A serialization failure raised by COMMIT itself (a deferred PostgreSQL
    trigger) rolls back and runs the request again.
    """
    if backend != "postgresql":
        pytest.skip("needs PostgreSQL's deferred constraint triggers")
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE FUNCTION orm_test_fail_first() RETURNS trigger AS $$"
                " BEGIN IF NEW.name = 'attempt-1' THEN RAISE EXCEPTION"
                " 'conflict at commit' USING ERRCODE = 'serialization_failure';"
                " END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        connection.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER orm_test_at_commit AFTER INSERT ON"
                " orm_test_item DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                " EXECUTE FUNCTION orm_test_fail_first()"
            )
        )
    callbacks: list[int] = []
    try:

        @app.post("/")
        @db.retry(attempts=2)
        def view() -> str:
            db.session.add(Item(name=f"attempt-{db.attempt}"))
            db.on_commit(callbacks.append, db.attempt)
            return "ok"

        assert client.post("/").status_code == 200
        assert stored(db, app) == {"attempt-2"}
        assert callbacks == [2]
        assert retries.attempts == [2]
        assert "conflict at commit" in str(retries.seen[0][1])
    finally:
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE orm_test_item"))
            connection.execute(sa.text("DROP FUNCTION orm_test_fail_first()"))


# -- isolation levels ----------------------------------------------------------------


LEVEL_QUERIES = {
    "postgresql": "SHOW transaction_isolation",
    # MariaDB before 11.1 has only tx_isolation, MySQL 8 only
    # transaction_isolation; the first row is one of them.
    "mysql": "SHOW SESSION VARIABLES WHERE Variable_name IN"
    " ('tx_isolation', 'transaction_isolation')",
    "sqlite": "PRAGMA read_uncommitted",
}


@pytest.mark.parametrize(
    "retry_config",
    [{"SESSION_ORM_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0}}],
)
def test_isolation_level_applies_to_the_view_only(
    app: flask.Flask, db: SessionORM, backend: str, client: flask.testing.FlaskClient
) -> None:
    """@db.transaction sets the level on the request's connection before its
    first statement, and the pooled connection is back at the engine's level
    for the next request.
    """
    level = "READ UNCOMMITTED" if backend == "sqlite" else "SERIALIZABLE"
    query = sa.text(LEVEL_QUERIES[backend])

    def read_level() -> str:
        row = db.session.execute(query).first()
        assert row is not None
        return str(row[-1])

    @app.get("/strict")
    @db.transaction(isolation_level=level.lower().replace(" ", "_"))
    def strict() -> str:
        return read_level()

    @app.get("/plain")
    def plain() -> str:
        return read_level()

    default = client.get("/plain").data
    strict_level = client.get("/strict").data
    assert client.get("/plain").data == default
    expected = {
        "postgresql": b"serializable",
        "mysql": b"SERIALIZABLE",
        "sqlite": b"1",
    }[backend]
    assert strict_level == expected
    assert default != expected


# -- deadlocks -----------------------------------------------------------------------


def test_deadlock_between_two_requests_is_retried(
    app: flask.Flask, db: SessionORM, backend: str, retries: Retries
) -> None:
    """Two requests locking two rows in opposite order deadlock; the database
    aborts one, which runs again and succeeds.
    """
    if backend == "sqlite":
        pytest.skip("SQLite locks the whole database: no row-level deadlock")
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(sa.insert(Item), [{"name": "a"}, {"name": "b"}])
    both_locked = threading.Barrier(2, timeout=10)

    def lock(name: str) -> None:
        db.session.execute(
            sa.update(Item).where(Item.name == name).values(name=Item.name)
        )

    @app.post("/<first>/<second>")
    @db.retry(attempts=3)
    def cross(first: str, second: str) -> str:
        lock(first)
        if db.attempt == 1:
            both_locked.wait()
        lock(second)
        return str(db.attempt)

    results: dict[str, bytes] = {}

    def post(path: str) -> None:
        response = app.test_client().post(path)
        results[path] = response.data if response.status_code == 200 else b"fail"

    threads = [threading.Thread(target=post, args=(path,)) for path in ("/a/b", "/b/a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [b"1", b"2"]
    assert retries.attempts == [2]
    error = retries.seen[0][1]
    assert isinstance(error, sa.exc.DBAPIError)
    if backend == "postgresql":
        assert error.orig.sqlstate == "40P01"
    else:
        assert error.orig.args[0] == 1213
    assert checked_out(db, app) == 0


# -- the hook and the classification --------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_retryable_hook_marks_other_exceptions(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """An exception accepted by a db.retryable predicate is retried, also when
    it is the cause of the exception raised.
    """

    class Busy(Exception):
        pass

    @db.retryable
    def busy(error: BaseException) -> bool:
        return isinstance(error, Busy)

    calls: list[int] = []

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        calls.append(db.attempt)
        if db.attempt < 3:
            try:
                raise Busy("upstream is busy")
            except Busy as e:
                raise RuntimeError("wrapped") from e
        return "ok"

    assert client.post("/").status_code == 200
    assert calls == [1, 2, 3]


def test_classification_by_code_not_by_message() -> None:
    """Errors are classified by the drivers' codes; a lost connection and a
    message that only mentions a deadlock are not retryable.
    """
    import psycopg.errors
    import pymysql.err

    def wrap(orig: BaseException, invalidated: bool = False) -> sa.exc.DBAPIError:
        return sa.exc.OperationalError(
            "SELECT 1", {}, orig, connection_invalidated=invalidated
        )

    assert is_retryable(wrap(psycopg.errors.SerializationFailure("x")))
    assert is_retryable(wrap(psycopg.errors.DeadlockDetected("x")))
    assert not is_retryable(wrap(psycopg.errors.UniqueViolation("deadlock")))
    assert is_retryable(wrap(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert is_retryable(
        wrap(pymysql.err.OperationalError(1205, "Lock wait", sqlstate="HY000"))
    )
    assert is_retryable(wrap(pymysql.err.OperationalError(1020, "Record has changed")))
    assert not is_retryable(wrap(pymysql.err.OperationalError(2013, "deadlock")))
    assert not is_retryable(
        wrap(pymysql.err.OperationalError(1213, "Deadlock"), invalidated=True)
    )
    assert not is_retryable(RuntimeError("serialization failure 40001"))


# -- configuration and arguments -------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({"SESSION_ORM_RETRY_ATTEMPTS": 0}, ValueError, "'SESSION_ORM_RETRY_ATTEMPTS'"),
        ({"SESSION_ORM_RETRY_ATTEMPTS": "3"}, TypeError, "must be an integer, got '3'"),
        ({"SESSION_ORM_RETRY_ATTEMPTS": True}, TypeError, "got True"),
        ({"SESSION_ORM_RETRY_BACKOFF": -1}, ValueError, "'SESSION_ORM_RETRY_BACKOFF'"),
        ({"SESSION_ORM_RETRY_BACKOFF": "1s"}, TypeError, "number of seconds"),
        (
            {"SESSION_ORM_RETRY_BACKOFF": 0.5, "SESSION_ORM_RETRY_BACKOFF_MAX": 0.1},
            ValueError,
            "'SESSION_ORM_RETRY_BACKOFF_MAX' must not be less",
        ),
    ],
)
def test_retry_config_is_validated(
    config: dict[str, t.Any], error: type[Exception], message: str, tmp_path: t.Any
) -> None:
    """Bad retry settings are errors that name the key and the value."""
    with pytest.raises(error, match=message):
        read_config(
            {"SESSION_ORM_DATABASE_URL": "sqlite://", **config},
            instance_path=str(tmp_path),
        )


def test_decorator_arguments_are_validated() -> None:
    """db.retry and db.transaction name the bad argument and its value."""
    db = SessionORM()
    with pytest.raises(ValueError, match=r"'attempts' must be at least 1 .*, got 0"):
        db.retry(attempts=0)
    with pytest.raises(TypeError, match="'attempts' must be an integer, got '2'"):
        db.retry(attempts="2")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="'isolation_level' is 'AUTOCOMMIT'"):
        db.transaction(isolation_level="AUTOCOMMIT")
    with pytest.raises(TypeError, match="'isolation_level' must be a string"):
        db.transaction(isolation_level=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a function of an exception"):
        db.retryable(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("errcode", ["serialization_failure", "deadlock_detected"])
def test_psycopg2_errors_are_retried(errcode: str, tmp_path: t.Any) -> None:
    """With psycopg2 (SQLSTATE in 'pgcode'), PostgreSQL's serialization
    failures and deadlocks are retried too.
    """
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SESSION_ORM_DATABASE_URL=sa.make_url(url).set(drivername="postgresql+psycopg2"),
        SESSION_ORM_RETRY_BACKOFF=0.001,
    )
    db = SessionORM(app)
    calls: list[int] = []

    @app.get("/")
    @db.retry(attempts=2)
    def view() -> str:
        calls.append(db.attempt)
        if db.attempt == 1:
            db.session.execute(
                sa.text(
                    f"DO $$ BEGIN RAISE EXCEPTION 'conflict (test)'"
                    f" USING ERRCODE = '{errcode}'; END $$"
                )
            )
        return "ok"

    try:
        assert app.test_client().get("/").status_code == 200
        assert calls == [1, 2]
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_streamed_response_of_a_retried_view(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view that retries may stream: the committing attempt's session stays
    usable in the generator, an error while streaming is not retried, and no
    connection stays checked out.
    """
    calls: list[int] = []

    @app.get("/")
    @db.retry(attempts=2)
    def stream() -> flask.Response:
        calls.append(db.attempt)
        fail = flask.request.args.get("fail")
        db.session.add(Item(name=f"{'fail' if fail else 'ok'}-{db.attempt}"))
        if db.attempt == 1:
            db.session.flush()
            conflict(db)

        @flask.stream_with_context
        def rows() -> t.Iterator[str]:
            yield ",".join(db.session.scalars(sa.select(Item.name).order_by(Item.id)))
            if fail:
                conflict(db)

        return flask.Response(rows())

    assert client.get("/").data == b"ok-2"
    assert calls == [1, 2]
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        client.get("/?fail=1").get_data()
    assert calls == [1, 2, 1, 2]
    assert stored(db, app) == {"ok-2", "fail-2"}
    assert checked_out(db, app) == 0


def test_lost_connection_is_not_retried(
    app: flask.Flask, db: SessionORM, backend: str, client: flask.testing.FlaskClient
) -> None:
    """A connection killed during the attempt is not retried: whether its work
    happened is unknown.
    """
    if backend != "postgresql":
        pytest.skip("kills its own PostgreSQL backend")
    calls: list[int] = []

    @app.errorhandler(sa.exc.OperationalError)
    def lost(error: Exception) -> tuple[str, int]:
        return "lost", 503

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        calls.append(db.attempt)
        db.session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return "never"

    assert client.post("/").status_code == 503
    assert calls == [1]
    assert checked_out(db, app) == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_failed_commit_across_databases_is_not_retried(
    tmp_path: t.Any, retries: Retries, app: flask.Flask
) -> None:
    """When the commit fails on the second of two databases, the first one is
    committed already: the request is not run again.
    """
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    app.config.update(
        SESSION_ORM_DATABASE_URL=None,
        SESSION_ORM_ENGINES={"first": f"sqlite:///{tmp_path}/first.db", "second": url},
    )
    db = SessionORM(app)
    with app.app_context():
        first, second = db.get_engine("first"), db.get_engine("second")
        with first.begin() as connection:
            connection.execute(sa.text("CREATE TABLE orm_test_first (x INTEGER)"))
        with second.begin() as connection:
            connection.execute(sa.text("CREATE TABLE orm_test_second (x INTEGER)"))
            connection.execute(
                sa.text(
                    "CREATE FUNCTION orm_test_fail() RETURNS trigger AS $$ BEGIN"
                    " RAISE EXCEPTION 'conflict at commit' USING ERRCODE ="
                    " 'serialization_failure'; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                sa.text(
                    "CREATE CONSTRAINT TRIGGER orm_test_at_commit AFTER INSERT ON"
                    " orm_test_second DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                    " EXECUTE FUNCTION orm_test_fail()"
                )
            )
    calls: list[int] = []

    @app.errorhandler(sa.exc.OperationalError)
    def busy(error: Exception) -> tuple[str, int]:
        return "busy", 503

    @app.post("/")
    @db.retry(attempts=3)
    def view() -> str:
        calls.append(db.attempt)
        for engine, table in ((first, "orm_test_first"), (second, "orm_test_second")):
            db.session.execute(
                sa.text(f"INSERT INTO {table} VALUES (1)"),
                bind_arguments={"bind": engine},
            )
        return "ok"

    try:
        assert app.test_client().post("/").status_code == 503
        assert calls == [1]
        assert retries.attempts == []
        with app.app_context(), first.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM orm_test_first"))
    finally:
        with app.app_context():
            with second.begin() as connection:
                connection.execute(sa.text("DROP TABLE orm_test_second"))
                connection.execute(sa.text("DROP FUNCTION orm_test_fail()"))
            first.dispose()
            second.dispose()


def test_isolation_level_inside_test_isolation(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Inside db.isolation() a view with an isolation level runs in the test's
    transaction, and a retry rolls back only the attempt's savepoint.
    """

    @app.post("/")
    @db.retry(attempts=2)
    @db.transaction(isolation_level="SERIALIZABLE")
    def view() -> str:
        db.session.add(Item(name=f"attempt-{db.attempt}"))
        db.session.flush()
        if db.attempt == 1:
            conflict(db)
        return str(db.attempt)

    with db.isolation():
        assert client.post("/").data == b"2"
        with app.app_context():
            assert set(db.session.scalars(sa.select(Item.name))) == {"attempt-2"}
    assert stored(db, app) == set()
