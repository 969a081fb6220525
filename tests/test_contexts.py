"""The promise holds wherever Flask puts a context: copied request contexts, app
contexts pushed inside a view, several apps, after_request functions, teardown,
and work done after the commit decision.
"""

from __future__ import annotations

import gc
import logging
import threading
import typing as t

import flask
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM
from flask_session_orm import signals

from .conftest import Base
from .conftest import Item
from .conftest import checked_out
from .conftest import count_items


def stored(db: SessionORM, app: flask.Flask) -> set[str]:
    """The item names stored in ``app``'s database, read through a new connection."""
    with app.app_context(), db.engine.connect() as connection:
        return set(connection.scalars(sa.select(Item.name)))


@pytest.fixture
def no_gc() -> t.Iterator[None]:
    """Disable the garbage collector, so that nothing is closed behind the test's
    back by collecting a forgotten session."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def small_pool(database_url: str, tmp_path: t.Any) -> flask.Flask:
    """An app whose pool holds one connection and waits one second at most: a
    leaked connection makes the next request fail."""
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_DATABASE_URL=database_url,
        SESSION_ORM_ENGINE_OPTIONS={
            "poolclass": sa.QueuePool,
            "pool_size": 1,
            "max_overflow": 0,
            "pool_timeout": 1,
        },
    )
    return app


@pytest.fixture
def small_db(small_pool: flask.Flask) -> t.Iterator[SessionORM]:
    db = SessionORM(small_pool)
    with small_pool.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    yield db
    with small_pool.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


# -- 1. copy_current_request_context -------------------------------------------


def test_copied_context_inline_keeps_the_request_work(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """A helper run inline in a copied request context does not end the view's
    session: the view's row is committed."""

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))

        @flask.copy_current_request_context
        def helper() -> str:
            return flask.request.path

        assert helper() == f"/items/{name}"
        return "created", 201

    client = app.test_client()
    for name in ["a", "b", "c"]:
        assert client.post(f"/items/{name}").status_code == 201
    assert stored(db, app) == {"a", "b", "c"}
    assert checked_out(db, app) == 0


def test_copied_context_inline_has_its_own_session(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """db.session in a copied context is not the view's, and what it leaves
    uncommitted is rolled back with a warning while the view's work is committed."""
    sessions: list[object] = []

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        sessions.append(db.session)
        db.session.add(Item(name=name))

        @flask.copy_current_request_context
        def helper() -> None:
            sessions.append(db.session)
            db.session.add(Item(name=f"{name}-helper"))
            db.session.flush()
            db.session.rollback()
            db.session.add(Item(name=f"{name}-lost"))

        helper()
        return "created", 201

    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        assert app.test_client().post("/items/a").status_code == 201
    assert sessions[0] is not sessions[1]
    assert stored(db, app) == {"a"}
    assert "Rolled back 1 new" in caplog.text
    assert checked_out(db, app) == 0


def test_copied_context_in_thread(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A copied context in another thread gets its own session with the outside
    request rules: committed only explicitly, discarded work warned about."""
    sessions: list[object] = []

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        sessions.append(db.session)
        db.session.add(Item(name=name))

        @flask.copy_current_request_context
        def job(commit: bool) -> None:
            sessions.append(db.session)
            db.session.add(Item(name=f"{name}-{'kept' if commit else 'lost'}"))
            if commit:
                db.session.commit()

        threads = [threading.Thread(target=job, args=(c,)) for c in (True, False)]
        for thread in threads:
            thread.start()
            thread.join()
        return "created", 201

    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        assert app.test_client().post("/items/a").status_code == 201
    assert len({id(s) for s in sessions}) == 3
    assert stored(db, app) == {"a", "a-kept"}
    assert "Rolled back 1 new" in caplog.text
    assert checked_out(db, app) == 0


# -- 2. app contexts pushed inside a request -----------------------------------


def test_app_context_in_view_has_its_own_session(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job run inline in 'with app.app_context():' gets its own session: its
    rollback does not discard the view's pending row, its commit is its own, and
    what it leaves uncommitted is rolled back with a warning."""

    def job(name: str, commit: bool) -> None:
        with app.app_context():
            db.session.rollback()
            db.session.add(Item(name=name))
            if commit:
                db.session.commit()

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        session = db.session
        session.add(Item(name=name))
        job(f"{name}-job", commit=True)
        job(f"{name}-lost", commit=False)
        assert db.session is session
        assert session.new
        return "created", 201

    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        assert app.test_client().post("/items/a").status_code == 201
    assert stored(db, app) == {"a", "a-job"}
    assert "at the end of the app context" in caplog.text
    assert checked_out(db, app) == 0


def test_app_context_in_failed_view_keeps_its_commit(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """What a job commits in its own app context stays when the view then fails."""

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        with app.app_context():
            db.session.add(Item(name=f"{name}-job"))
            db.session.commit()
        return "failed", 500

    assert app.test_client().post("/items/a").status_code == 500
    assert stored(db, app) == {"a-job"}


# -- 3. one SessionORM, two apps -------------------------------------------------


@pytest.fixture
def app_b(tmp_path: t.Any) -> t.Iterator[flask.Flask]:
    app_b = flask.Flask("app_b", instance_path=str(tmp_path / "instance_b"))
    app_b.config["SESSION_ORM_DATABASE_URL"] = f"sqlite:///{tmp_path}/b.db"
    yield app_b


def test_other_app_context_inside_request_uses_its_database(
    app: flask.Flask, db: SessionORM, app_b: flask.Flask, outside_requests: None
) -> None:
    """Inside app A's request, app B's context has B's session and engines,
    whichever is used first, and A's rows stay in A's database."""
    db.init_app(app_b)
    with app_b.app_context():
        db.create_all(Base)

    @app.post("/items/<name>/<first>")
    def create(name: str, first: str) -> tuple[str, int]:
        if first == "a":
            db.session.add(Item(name=name))
        with app_b.app_context():
            assert db.engine.url.database.endswith("b.db")  # type: ignore[union-attr]
            db.session.add(Item(name=f"{name}-b"))
            db.session.commit()
        if first == "b":
            db.session.add(Item(name=name))
        return "created", 201

    client = app.test_client()
    assert client.post("/items/x/a").status_code == 201
    assert client.post("/items/y/b").status_code == 201
    assert stored(db, app) == {"x", "y"}
    assert stored(db, app_b) == {"x-b", "y-b"}
    assert checked_out(db, app) == 0
    assert checked_out(db, app_b) == 0
    with app_b.app_context():
        db.engine.dispose()


# -- 4. the commit comes after every after_request function ---------------------


@pytest.mark.parametrize("where", ["app", "blueprint", "after_this_request"])
@pytest.mark.parametrize("how", ["raise", "abort", "status"])
def test_after_request_failure_rolls_back(
    app: flask.Flask, db: SessionORM, outside_requests: None, where: str, how: str
) -> None:
    """An after_request function (app, blueprint, or after_this_request
    registered after the session's first use) that raises, aborts or sets an
    error status makes the request roll back: no error response for stored data."""

    def spoil(response: flask.Response) -> flask.Response:
        if how == "raise":
            raise RuntimeError("after_request failed")
        if how == "abort":
            flask.abort(503)
        response.status_code = 422
        return response

    blueprint = flask.Blueprint("bp", __name__)

    @blueprint.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.flush()
        if where == "after_this_request":
            flask.after_this_request(spoil)
        return "created", 201

    if where == "app":
        app.after_request(spoil)
    elif where == "blueprint":
        blueprint.after_request(spoil)
    app.register_blueprint(blueprint)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().post("/items/a")
    assert response.status_code >= 400
    assert stored(db, app) == set()
    assert checked_out(db, app) == 0


def test_after_request_database_work_is_part_of_the_request(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """What an after_request function writes is committed with the view's work,
    and rolled back with it."""

    @app.post("/items/<name>/<int:status>")
    def create(name: str, status: int) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "done", status

    @app.after_request
    def audit(response: flask.Response) -> flask.Response:
        if flask.request.view_args:
            db.session.add(Item(name=f"{flask.request.view_args['name']}-audit"))
        return response

    client = app.test_client()
    assert client.post("/items/a/201").status_code == 201
    assert client.post("/items/b/409").status_code == 409
    assert stored(db, app) == {"a", "a-audit"}


def test_commit_failure_response_passes_after_request_functions(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """A failed commit's error response goes through the app's handler and the
    after_request functions, like any error response."""
    seen: list[int] = []

    @app.errorhandler(sa.exc.IntegrityError)
    def conflict(e: Exception) -> tuple[str, int]:
        return "conflict", 409

    @app.after_request
    def record(response: flask.Response) -> flask.Response:
        seen.append(response.status_code)
        response.headers["X-Seen"] = "yes"
        return response

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "created", 201

    client = app.test_client()
    assert client.post("/items/a").status_code == 201
    response = client.post("/items/a")
    assert response.status_code == 409
    assert response.headers["X-Seen"] == "yes"
    assert seen == [201, 201, 409]
    assert stored(db, app) == {"a"}
    assert checked_out(db, app) == 0


# -- 5. no connection left checked out ------------------------------------------


def test_teardown_after_the_extension_using_the_session(
    small_pool: flask.Flask, no_gc: None, outside_requests: None
) -> None:
    """A teardown_request function registered before init_app (so run after the
    extension's work in the old order) that uses db.session leaves no connection
    checked out, and what it wrote is not committed."""
    app = small_pool
    db = SessionORM()

    @app.teardown_request
    def log_request(exc: BaseException | None) -> None:
        db.session.add(
            Item(name=f"log-{len(db.session.scalars(sa.select(Item)).all())}")
        )

    db.init_app(app)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)

    @app.post("/items/<name>")
    def create(name: str) -> str:
        db.session.add(Item(name=name))
        return "ok"

    client = app.test_client()
    try:
        for name in ["a", "b", "c"]:
            assert client.post(f"/items/{name}").status_code == 200
            assert checked_out(db, app) == 0
        assert stored(db, app) == {"a", "b", "c"}
    finally:
        with app.app_context():
            db.drop_all(Base)
            db.engine.dispose()


@pytest.mark.parametrize("hook", ["teardown_request", "teardown_appcontext"])
def test_raising_teardown_of_another_extension(
    small_pool: flask.Flask,
    small_db: SessionORM,
    no_gc: None,
    outside_requests: None,
    hook: str,
) -> None:
    """Another extension's teardown function that raises does not keep the
    request's connection checked out."""
    app, db = small_pool, small_db

    def broken(exc: BaseException | None) -> None:
        # Only in the requests' contexts, not in the test's own.
        if "failing" in flask.g:
            raise RuntimeError("another extension failed")

    getattr(app, hook)(broken)
    # Requests kept alive after they end (as error reporters and debug tools
    # do): nothing may rely on the request object going away to close anything.
    kept: list[flask.Request] = []

    @app.post("/items/<name>")
    def create(name: str) -> str:
        kept.append(flask.request._get_current_object())  # type: ignore[attr-defined]
        flask.g.failing = True
        db.session.add(Item(name=name))
        db.session.flush()
        return "ok"

    @app.after_request
    def count(response: flask.Response) -> flask.Response:
        response.headers["X-Count"] = str(
            db.session.scalar(sa.select(sa.func.count(Item.id)))
        )
        return response

    client = app.test_client()
    for name in ["a", "b"]:
        with pytest.raises(RuntimeError, match="another extension failed"):
            client.post(f"/items/{name}")
        assert checked_out(db, app) == 0
    assert stored(db, app) == {"a", "b"}


def test_stream_replaced_by_after_request(
    small_pool: flask.Flask, small_db: SessionORM, no_gc: None, outside_requests: None
) -> None:
    """A streamed response that an after_request function replaces, after the
    view read the database, leaves no connection checked out."""
    app, db = small_pool, small_db
    kept: list[flask.Request] = []

    @app.get("/stream")
    def stream() -> flask.Response:
        kept.append(flask.request._get_current_object())  # type: ignore[attr-defined]
        count = len(db.session.scalars(sa.select(Item)).all())

        def body() -> t.Iterator[str]:
            yield str(count)

        return flask.Response(flask.stream_with_context(body()))

    @app.after_request
    def replace(response: flask.Response) -> flask.Response:
        count = len(db.session.scalars(sa.select(Item)).all())
        return flask.Response(f"replaced {count}")

    client = app.test_client()
    for _ in range(3):
        assert client.get("/stream").text == "replaced 0"
        assert checked_out(db, app) == 0


def test_requests_under_pushed_context_return_connections(
    small_pool: flask.Flask, small_db: SessionORM, no_gc: None
) -> None:
    """Under a pushed request context (pytest-flask), every request still gives
    its connection back when it ends, whatever it ended with."""
    app, db = small_pool, small_db

    @app.post("/items/<name>/<int:status>")
    def create(name: str, status: int) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.flush()
        return "done", status

    @app.teardown_request
    def read(exc: BaseException | None) -> None:
        db.session.scalars(sa.select(Item)).all()

    with app.test_request_context():
        client = app.test_client()
        for name, status in [("a", 200), ("b", 400), ("c", 201)]:
            assert client.post(f"/items/{name}/{status}").status_code == status
            assert checked_out(db, app) == 0
    assert stored(db, app) == {"a", "c"}


# -- 6. mark_for_rollback() where it can and cannot take effect ------------------


def test_mark_for_rollback_in_after_request(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """db.mark_for_rollback() in an after_request function still rolls back."""

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "created", 201

    @app.after_request
    def veto(response: flask.Response) -> flask.Response:
        if flask.request.headers.get("X-Veto"):
            db.mark_for_rollback()
        return response

    client = app.test_client()
    assert client.post("/items/a", headers={"X-Veto": "1"}).status_code == 201
    assert client.post("/items/b").status_code == 201
    assert stored(db, app) == {"b"}


def test_mark_for_rollback_after_the_decision_raises(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """db.mark_for_rollback() in a streamed body or a teardown function, after
    the commit decision, raises a clear error instead of doing nothing."""
    errors: dict[str, str] = {}

    def attempt(where: str) -> None:
        try:
            db.mark_for_rollback()
        except RuntimeError as e:
            errors[where] = str(e)

    @app.get("/stream")
    def stream() -> flask.Response:
        db.session.add(Item(name="streamed"))

        def body() -> t.Iterator[str]:
            attempt("stream")
            yield "done"

        return flask.Response(flask.stream_with_context(body()))

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        attempt("teardown")

    assert app.test_client().get("/stream").text == "done"
    assert set(errors) == {"stream", "teardown"}
    assert all("after the request's commit decision" in e for e in errors.values())
    assert stored(db, app) == {"streamed"}


def test_mark_for_rollback_in_pushed_app_context_raises(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """db.mark_for_rollback() in an app context pushed inside a view is refused:
    that context is not the request."""

    @app.get("/")
    def index() -> str:
        with app.app_context(), pytest.raises(RuntimeError, match="inside a request"):
            db.mark_for_rollback()
        return "ok"

    assert app.test_client().get("/").status_code == 200


# -- 7. a raising session_created receiver --------------------------------------


def test_raising_session_created_receiver_is_logged(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session_created receiver that raises is logged; the request succeeds."""

    def receiver(sender: flask.Flask, session: object) -> None:
        raise RuntimeError("receiver failed")

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "created", 201

    with (
        signals.session_created.connected_to(receiver, sender=app),
        caplog.at_level(logging.ERROR, logger="flask_session_orm"),
    ):
        assert app.test_client().post("/items/a").status_code == 201
    assert stored(db, app) == {"a"}
    assert "session_created raised" in caplog.text


# -- 10. work after the decision or in test contexts is warned about --------------


def test_test_request_context_in_view_warns(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Writes made in app.test_request_context() inside a view are not the
    request's: rolled back with the same warning as an app context's."""

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        with app.test_request_context():
            db.session.add(Item(name=f"{name}-test"))
        return "created", 201

    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        assert app.test_client().post("/items/a").status_code == 201
    assert stored(db, app) == {"a"}
    assert "Rolled back 1 new" in caplog.text


def test_preserved_context_writes_warn(
    app: flask.Flask,
    db: SessionORM,
    outside_requests: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test code writing in the context that 'with client:' preserved after a
    request is told that the request's commit decision was taken already."""

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "created", 201

    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        with app.test_client() as client:
            assert client.post("/items/a").status_code == 201
            db.session.add(Item(name="after"))
    assert stored(db, app) == {"a"}
    assert "after the request's commit decision" in caplog.text
    assert count_items(db, app) == 1


def test_session_first_used_in_after_request_is_committed(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """A request whose only database work is an after_request function's has
    that work committed when it succeeds, and rolled back when it fails."""

    @app.get("/<int:status>")
    def page(status: int) -> tuple[str, int]:
        return "page", status

    @app.after_request
    def log_visit(response: flask.Response) -> flask.Response:
        db.session.add(Item(name=f"visit-{response.status_code}"))
        return response

    client = app.test_client()
    assert client.get("/200").status_code == 200
    assert client.get("/404").status_code == 404
    assert stored(db, app) == {"visit-200"}
    assert checked_out(db, app) == 0


def test_flash_from_on_commit_reaches_the_next_page(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """The commit comes before Flask saves the session cookie: a message flashed
    by an on_commit function is shown on the next page, only if it committed."""
    app.config["SECRET_KEY"] = "test"

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.on_commit(flask.flash, f"saved {name}")
        return "created", 201

    @app.get("/messages")
    def messages() -> list[str]:
        return flask.get_flashed_messages()

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert client.post("/items/a").status_code == 201
    assert client.get("/messages").json == ["saved a"]
    assert client.post("/items/a").status_code == 500
    assert client.get("/messages").json == []
