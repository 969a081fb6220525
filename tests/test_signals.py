"""The four lifecycle signals: each sent once where it should be, never otherwise."""

from __future__ import annotations

import typing as t

import blinker
import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM
from flask_session_orm import signals

from .conftest import Item
from .conftest import checked_out
from .conftest import count_items

SIGNALS = {
    "created": signals.session_created,
    "committed": signals.session_committed,
    "rolled_back": signals.session_rolled_back,
    "invalidated": signals.session_invalidated,
}


class Recorder:
    """Every signal sent, by any sender, as (name, sender, session)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object, orm.Session]] = []
        self._receivers: list[tuple[blinker.NamedSignal, t.Callable[..., None]]] = []
        for name, signal in SIGNALS.items():

            def receive(
                sender: object, *, session: orm.Session, _name: str = name
            ) -> None:
                self.sent.append((_name, sender, session))

            signal.connect(receive, weak=False)
            self._receivers.append((signal, receive))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]

    def disconnect(self) -> None:
        for signal, receive in self._receivers:
            signal.disconnect(receive)


@pytest.fixture
def recorder() -> t.Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.disconnect()


# The test bodies run outside any request, as a CLI command or a job does.
pytestmark = pytest.mark.usefixtures("outside_requests")


def only(recorder: Recorder, app: flask.Flask, session: object) -> list[str]:
    """The names sent, after checking each was sent by ``app`` for ``session``."""
    for name, sender, sent_for in recorder.sent:
        assert sender is app, name
        assert sent_for is session, name
    return recorder.names()


# -- requests ------------------------------------------------------------------------


def test_request_without_session_sends_nothing(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """A request that never uses db.session sends no signal at all."""
    app.add_url_rule("/", "index", lambda: "ok")
    assert app.test_client().get("/").status_code == 200
    assert recorder.sent == []


@pytest.mark.parametrize("work", ["write", "read", "none"])
def test_successful_request(
    app: flask.Flask, db: SessionORM, recorder: Recorder, work: str
) -> None:
    """A successful request that used its session sends created, then committed
    when a transaction was begun, for the request's session, with the app as sender.
    """
    sessions: list[orm.Session] = []

    @app.get("/")
    def view() -> str:
        sessions.append(db.session)
        if work == "write":
            db.session.add(Item(name="a"))
        elif work == "read":
            db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        assert recorder.names() == ["created"]
        return "ok"

    assert app.test_client().get("/").status_code == 200
    expected = ["created"] if work == "none" else ["created", "committed"]
    assert only(recorder, app, sessions[0]) == expected
    assert count_items(db, app) == (1 if work == "write" else 0)


def test_commit_signal_comes_after_after_request_functions(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """session_committed is sent after the after_request functions, before the
    response is returned to the server."""
    sent_when_finished: list[list[str]] = []

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        return "ok"

    @app.after_request
    def after(response: flask.Response) -> flask.Response:
        sent_when_finished.append(recorder.names())
        return response

    response = app.test_client().get("/")
    assert sent_when_finished == [["created"]]
    assert response.status_code == 200
    assert recorder.names() == ["created", "committed"]


def test_explicit_commit_in_view_sends_committed_once(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """A view that commits itself and then does nothing more sends committed once:
    the end of the request has nothing left to commit.
    """

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.commit()
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert recorder.names() == ["created", "committed"]
    assert count_items(db, app) == 1


def test_explicit_rollback_in_view_sends_rolled_back_only(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """A successful view that rolled back its session sends rolled_back once and
    no committed after it.
    """

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.flush()
        db.session.rollback()
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert recorder.names() == ["created", "rolled_back"]
    assert count_items(db, app) == 0


def test_several_transactions_in_one_request(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """Each root transaction of the request's session sends its own signal."""

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.commit()
        db.session.add(Item(name="b"))
        db.session.flush()
        db.session.rollback()
        db.session.add(Item(name="c"))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert recorder.names() == ["created", "committed", "rolled_back", "committed"]
    assert count_items(db, app) == 2


@pytest.mark.parametrize("ending", ["status", "abort", "raise", "mark", "no-commit"])
def test_request_that_does_not_commit(
    app: flask.Flask, db: SessionORM, recorder: Recorder, ending: str
) -> None:
    """A request that ends in an error status, abort(), an exception, or that
    asked for a rollback or no commit, sends rolled_back once and never committed.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False
    sessions: list[orm.Session] = []

    @app.get("/")
    @db.no_autocommit
    def no_commit() -> str:
        sessions.append(db.session)
        db.session.add(Item(name="a"))
        db.session.flush()
        return "ok"

    @app.get("/<ending>")
    def view(ending: str) -> t.Any:
        sessions.append(db.session)
        db.session.add(Item(name="a"))
        db.session.flush()
        if ending == "status":
            return "bad", 400
        if ending == "abort":
            flask.abort(404)
        if ending == "raise":
            raise RuntimeError("view failed")
        db.mark_for_rollback()
        return "ok"

    response = app.test_client().get("/" if ending == "no-commit" else f"/{ending}")
    expected_status = {"status": 400, "abort": 404, "raise": 500}.get(ending, 200)
    assert response.status_code == expected_status
    assert only(recorder, app, sessions[0]) == ["created", "rolled_back"]
    assert count_items(db, app) == 0


def test_exception_propagated_by_testing_rolls_back(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """With TESTING's propagated exceptions, teardown sends rolled_back once."""

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.flush()
        raise RuntimeError("view failed")

    with pytest.raises(RuntimeError, match="view failed"):
        app.test_client().get("/")
    assert recorder.names() == ["created", "rolled_back"]


@pytest.mark.parametrize("handled", [False, True], ids=["500", "handler"])
def test_failed_commit_sends_rolled_back(
    app: flask.Flask, db: SessionORM, recorder: Recorder, handled: bool
) -> None:
    """A request whose end-of-request commit fails sends rolled_back once, and
    neither committed nor invalidated, whether or not the app handles the error.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False
    if handled:
        app.register_error_handler(sa.exc.IntegrityError, lambda e: ("conflict", 409))

    @app.get("/<name>")
    def view(name: str) -> str:
        db.session.add(Item(name=name))
        return "ok"

    client = app.test_client()
    assert client.get("/a").status_code == 200
    recorder.sent.clear()
    response = client.get("/a")
    assert response.status_code == (409 if handled else 500)
    assert recorder.names() == ["created", "rolled_back"]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_failed_commit_at_commit_time_sends_rolled_back(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """A deferred constraint (PostgreSQL) that fails the COMMIT itself, not a
    flush, sends rolled_back once and never committed.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/")
    def view() -> str:
        db.session.execute(
            sa.text(
                "CREATE TEMPORARY TABLE h_signals_deferred"
                " (v integer UNIQUE DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        db.session.execute(sa.text("INSERT INTO h_signals_deferred VALUES (1), (1)"))
        return "ok"

    assert app.test_client().get("/").status_code == 500
    assert recorder.names() == ["created", "rolled_back"]


def test_savepoints_send_nothing(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """Releasing or rolling back a savepoint sends no signal; only the root
    transaction's commit does.
    """

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.flush()
        with db.session.begin_nested():
            db.session.add(Item(name="b"))
        nested = db.session.begin_nested()
        db.session.add(Item(name="c"))
        db.session.flush()
        nested.rollback()
        with db.session.begin_nested():
            with db.session.begin_nested():
                db.session.add(Item(name="d"))
        assert recorder.names() == ["created"]
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert recorder.names() == ["created", "committed"]
    assert count_items(db, app) == 3


def test_invalidate_sends_invalidated_only(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """db.invalidate() sends invalidated once for the session it discards, and
    neither committed nor rolled_back for it; a session used afterwards in the
    same request is a new one, rolled back at the end.
    """
    sessions: list[orm.Session] = []

    @app.get("/")
    def view() -> str:
        sessions.append(db.session)
        db.session.add(Item(name="a"))
        db.session.flush()
        db.invalidate()
        db.invalidate()
        sessions.append(db.session)
        db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    first, second = sessions
    assert recorder.sent == [
        ("created", app, first),
        ("invalidated", app, first),
        ("created", app, second),
        ("rolled_back", app, second),
    ]


# -- outside requests ----------------------------------------------------------------


def test_app_context_session(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """An app context's session sends created, committed on commit, and
    rolled_back when the context ends with a transaction open.
    """
    with app.app_context():
        session = db.session
        assert only(recorder, app, session) == ["created"]
        db.session.add(Item(name="a"))
        db.session.commit()
        assert only(recorder, app, session) == ["created", "committed"]
        db.session.add(Item(name="b"))
        db.session.flush()
    assert only(recorder, app, session) == ["created", "committed", "rolled_back"]
    with app.app_context():
        session = db.session
        db.session.add(Item(name="c"))
        db.session.commit()
    # No transaction open at the end: nothing more is sent.
    assert recorder.names()[3:] == ["created", "committed"]
    assert count_items(db, app) == 2


def test_sessionmaker_session(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """A sessionmaker session sends created, committed and rolled_back as it
    commits and rolls back; closing it (the end of its ``with`` block) discards an
    open transaction without sending anything.
    """
    with app.app_context(), db.sessionmaker() as session:
        session.add(Item(name="a"))
        session.commit()
        session.add(Item(name="b"))
        session.flush()
        session.rollback()
        session.add(Item(name="c"))
        session.flush()
    assert only(recorder, app, session) == ["created", "committed", "rolled_back"]
    assert count_items(db, app) == 1


def test_invalidating_a_sessionmaker_session_yourself_sends_nothing(
    app: flask.Flask, db: SessionORM, recorder: Recorder
) -> None:
    """Session.invalidate() called on a session directly sends neither
    invalidated nor rolled_back: only db.invalidate() and lost connections do.
    """
    with app.app_context(), db.sessionmaker() as session:
        session.execute(sa.text("SELECT 1"))
        session.invalidate()
    assert recorder.names() == ["created"]


def test_receivers_of_one_app_hear_only_that_app(
    app: flask.Flask, db: SessionORM, tmp_path: t.Any
) -> None:
    """The sender is the app the session belongs to, so connect_via(app) filters."""
    other = flask.Flask("other", instance_path=str(tmp_path / "other"))
    other.config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    other_db = SessionORM(other)
    heard: list[str] = []

    def receive(sender: flask.Flask, session: orm.Session) -> None:
        heard.append(sender.name)

    with signals.session_committed.connected_to(receive, sender=app):
        with other.app_context():
            other_db.session.execute(sa.text("SELECT 1"))
            other_db.session.commit()
        with app.app_context():
            db.session.execute(sa.text("SELECT 1"))
            db.session.commit()
    assert heard == [app.name]
    with other.app_context():
        other_db.engine.dispose()


# -- receivers that raise ------------------------------------------------------------


def test_raising_committed_receiver_changes_nothing_else(
    app: flask.Flask, db: SessionORM, caplog: pytest.LogCaptureFixture
) -> None:
    """A session_committed receiver that raises is logged with its traceback; the
    commit stands, the on_commit callbacks still run, the response is unchanged.
    """
    calls: list[str] = []

    def broken(sender: flask.Flask, session: orm.Session) -> None:
        raise LookupError("receiver failed")

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.on_commit(calls.append, "callback")
        return "ok"

    with signals.session_committed.connected_to(broken, sender=app):
        response = app.test_client().get("/")
    assert (response.status_code, response.data) == (200, b"ok")
    assert calls == ["callback"]
    assert count_items(db, app) == 1
    [record] = [r for r in caplog.records if r.name == "flask_session_orm"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], LookupError)
    assert "session_committed" in record.getMessage()


@pytest.mark.parametrize("name", ["rolled_back", "invalidated"])
def test_raising_rollback_receivers_change_nothing_else(
    app: flask.Flask,
    db: SessionORM,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    """A session_rolled_back or session_invalidated receiver that raises is logged;
    the request still ends with its own response, nothing is committed, and no
    connection is left checked out.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(sender: flask.Flask, session: orm.Session) -> None:
        raise LookupError("receiver failed")

    @app.get("/")
    def view() -> tuple[str, int]:
        db.session.add(Item(name="a"))
        db.session.flush()
        if name == "invalidated":
            db.invalidate()
            return "invalidated", 200
        return "rejected", 422

    with SIGNALS[name].connected_to(broken, sender=app):
        response = app.test_client().get("/")
    expected = (200, b"invalidated") if name == "invalidated" else (422, b"rejected")
    assert (response.status_code, response.data) == expected
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0
    [record] = [r for r in caplog.records if r.name == "flask_session_orm"]
    assert isinstance(t.cast(t.Any, record.exc_info)[1], LookupError)
    assert f"session_{name}" in record.getMessage()
