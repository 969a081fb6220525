"""db.on_commit: callbacks run after a commit, in order, and never after a rollback."""

from __future__ import annotations

import logging
import typing as t

import flask
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM

from .conftest import Item
from .conftest import count_items

# The test bodies run outside any request, as a CLI command or a job does.
pytestmark = pytest.mark.usefixtures("outside_requests")


@pytest.fixture
def calls() -> list[t.Any]:
    return []


def test_callbacks_run_in_order_after_commit(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """A request's callbacks run once each, in registration order, with their
    arguments, after its data is committed and before the response is returned.
    """

    def record(label: str, *, flag: bool = False) -> None:
        # Read through another connection: the commit has happened already.
        calls.append((label, flag, count_items(db, app)))

    @app.get("/")
    def view() -> str:
        db.on_commit(record, "first")
        db.session.add(Item(name="a"))
        db.on_commit(record, "second", flag=True)
        db.on_commit(record, label="third")
        assert calls == []
        return "ok"

    @app.after_request
    def after(response: flask.Response) -> flask.Response:
        calls.append("after_request")
        return response

    assert app.test_client().get("/").data == b"ok"
    # The commit comes after every after_request function.
    assert calls == [
        "after_request",
        ("first", False, 1),
        ("second", True, 1),
        ("third", False, 1),
    ]


@pytest.mark.parametrize(
    "ending", ["status", "raise", "mark", "rollback", "failed-commit", "invalidate"]
)
def test_callbacks_never_run_when_request_does_not_commit(
    app: flask.Flask, db: SessionORM, calls: list[t.Any], ending: str
) -> None:
    """A request that ends in an error status or an exception, is marked for
    rollback, rolls back itself, fails to commit, or is invalidated, runs none of
    the callbacks registered in the transaction that was not committed.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.app_context():
        db.session.add(Item(name="taken"))
        db.session.commit()

    @app.get("/")
    def view() -> t.Any:
        db.session.add(Item(name="taken" if ending == "failed-commit" else "a"))
        db.on_commit(calls.append, "callback")
        if ending == "status":
            return "bad", 400
        if ending == "raise":
            raise RuntimeError("view failed")
        if ending == "mark":
            db.mark_for_rollback()
        elif ending == "rollback":
            db.session.rollback()
        elif ending == "invalidate":
            db.invalidate()
            # The new session's commit is not the one the callback waited for.
            db.session.add(Item(name="b"))
            db.session.commit()
        return "ok"

    response = app.test_client().get("/")
    expected = {"status": 400, "raise": 500, "failed-commit": 500}.get(ending, 200)
    assert response.status_code == expected
    assert calls == []
    assert count_items(db, app) == (2 if ending == "invalidate" else 1)


def test_callbacks_belong_to_their_transaction(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """A callback runs after the commit of the transaction it was registered in,
    once: not again after a later commit, and not for a later rollback.
    """

    @app.get("/")
    def view() -> str:
        db.on_commit(calls.append, "first")
        db.session.add(Item(name="a"))
        db.session.commit()
        assert calls == ["first"]
        db.on_commit(calls.append, "dropped")
        db.session.add(Item(name="b"))
        db.session.flush()
        db.session.rollback()
        db.on_commit(calls.append, "last")
        db.session.add(Item(name="c"))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert calls == ["first", "last"]
    assert count_items(db, app) == 2


def test_callback_registered_after_the_last_commit(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """A callback registered when the view has committed and begins nothing more
    runs at the end of the successful request, once.
    """

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.commit()
        db.on_commit(calls.append, "late")
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert calls == ["late"]


def test_savepoint_rollback_drops_only_its_callbacks(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """Callbacks registered inside a savepoint that is rolled back (and in the
    savepoints nested in it) are dropped; those of released savepoints and of the
    outer transaction run, in registration order.
    """

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.session.flush()
        db.on_commit(calls.append, "outer-1")
        nested = db.session.begin_nested()
        db.on_commit(calls.append, "dropped-1")
        with db.session.begin_nested():
            db.on_commit(calls.append, "dropped-2")
        nested.rollback()
        db.on_commit(calls.append, "outer-2")
        with db.session.begin_nested():
            db.on_commit(calls.append, "released")
            inner = db.session.begin_nested()
            db.on_commit(calls.append, "dropped-3")
            inner.rollback()
            db.on_commit(calls.append, "released-after-inner")
        try:
            with db.session.begin_nested():
                db.on_commit(calls.append, "dropped-4")
                raise KeyError("undo the savepoint")
        except KeyError:
            pass
        assert calls == []
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert calls == ["outer-1", "outer-2", "released", "released-after-inner"]


def test_failing_callback_is_logged_and_changes_nothing_else(
    app: flask.Flask,
    db: SessionORM,
    calls: list[t.Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in a callback is logged with its traceback; the callbacks
    after it still run, the data stays committed and the response is unchanged.
    """

    def broken() -> None:
        raise LookupError("callback failed")

    @app.get("/")
    def view() -> tuple[str, int, dict[str, str]]:
        db.session.add(Item(name="a"))
        db.on_commit(calls.append, "before")
        db.on_commit(broken)
        db.on_commit(calls.append, "after")
        return "created", 201, {"X-View": "yes"}

    with caplog.at_level(logging.ERROR, logger="flask_session_orm"):
        response = app.test_client().get("/")
    assert (response.status_code, response.data) == (201, b"created")
    assert response.headers["X-View"] == "yes"
    assert calls == ["before", "after"]
    assert count_items(db, app) == 1
    [record] = [r for r in caplog.records if r.name == "flask_session_orm"]
    assert record.levelno == logging.ERROR
    assert "broken" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], LookupError)
    assert "callback failed" in caplog.text


def test_callback_can_use_the_session(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """A callback may use db.session: it starts a new transaction, which it commits."""

    def audit() -> None:
        db.session.add(Item(name="audit"))
        db.session.commit()

    @app.get("/")
    def view() -> str:
        db.session.add(Item(name="a"))
        db.on_commit(audit)
        return "ok"

    assert app.test_client().get("/").status_code == 200
    with app.app_context():
        names = set(db.session.scalars(sa.select(Item.name)))
    assert names == {"a", "audit"}


def test_no_autocommit_view_that_commits_runs_callbacks(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """In a view without automatic commit, the view's own commit runs the callbacks."""

    @app.get("/")
    @db.no_autocommit
    def view() -> str:
        db.on_commit(calls.append, "committed")
        db.session.add(Item(name="a"))
        db.session.commit()
        db.on_commit(calls.append, "never committed")
        db.session.add(Item(name="b"))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert calls == ["committed"]
    assert count_items(db, app) == 1


def test_app_context_callbacks(
    app: flask.Flask,
    db: SessionORM,
    calls: list[t.Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside requests callbacks run after an explicit commit and are dropped by a
    rollback or by the end of the app context; a failing one is logged and the
    commit returns normally.
    """

    def broken() -> None:
        raise LookupError("callback failed")

    with app.app_context():
        db.on_commit(calls.append, "committed")
        db.on_commit(broken)
        db.session.add(Item(name="a"))
        with caplog.at_level(logging.ERROR, logger="flask_session_orm"):
            db.session.commit()
        assert calls == ["committed"]
        assert "callback failed" in caplog.text
        db.on_commit(calls.append, "rolled back")
        db.session.rollback()
        db.on_commit(calls.append, "never committed")
        db.session.add(Item(name="b"))
    with app.app_context():
        db.on_commit(calls.append, "nothing to commit")
        db.session.commit()
    assert calls == ["committed", "nothing to commit"]
    assert count_items(db, app) == 1


@pytest.mark.parametrize("backend", ["postgresql"])
def test_commit_failing_at_commit_time_runs_no_callback(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """A deferred constraint that fails the COMMIT itself (not a flush) runs no
    callback.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/")
    def view() -> str:
        db.session.execute(
            sa.text(
                "CREATE TEMPORARY TABLE h_on_commit_deferred"
                " (v integer UNIQUE DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        db.session.execute(sa.text("INSERT INTO h_on_commit_deferred VALUES (1), (1)"))
        db.on_commit(calls.append, "callback")
        return "ok"

    assert app.test_client().get("/").status_code == 500
    assert calls == []


def test_callbacks_inside_isolation(
    app: flask.Flask, db: SessionORM, calls: list[t.Any]
) -> None:
    """Inside db.isolation() a request's commit (a savepoint release underneath)
    runs its callbacks and a failed request's are dropped, as without isolation.
    """

    @app.get("/<int:status>")
    def view(status: int) -> tuple[str, int]:
        db.session.add(Item(name=f"item-{status}"))
        db.on_commit(calls.append, status)
        return "done", status

    with db.isolation(app):
        client = app.test_client()
        assert client.get("/200").status_code == 200
        assert client.get("/400").status_code == 400
        assert calls == [200]
    assert count_items(db, app) == 0
