"""Per-view commit control: @db.no_autocommit and db.mark_for_rollback()."""

from __future__ import annotations

import functools
import typing as t

import flask
import flask.views
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM

from .conftest import Item
from .conftest import checked_out


def stored(db: SessionORM, app: flask.Flask) -> set[str]:
    """The names of the stored items, read through a fresh connection."""
    with app.app_context(), db.engine.connect() as connection:
        return set(connection.scalars(sa.select(Item.name)))


def write(db: SessionORM, name: str) -> str:
    """Add an item (flushed, so the database has seen it) and return 'ok'."""
    db.session.add(Item(name=name))
    db.session.flush()
    return "ok"


def logged_in(view: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """A typical wrapping view decorator (functools.wraps)."""

    @functools.wraps(view)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return view(*args, **kwargs)

    return wrapper


# -- @db.no_autocommit ---------------------------------------------------------------


def test_no_autocommit_below_and_above_route(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """@db.no_autocommit works written below @app.route and above it: the
    successful request is rolled back and its connection returned.
    """

    @app.post("/below")
    @db.no_autocommit
    def below() -> str:
        return write(db, "below")

    @db.no_autocommit
    @app.post("/above")
    def above() -> str:
        return write(db, "above")

    @app.post("/normal")
    def normal() -> str:
        return write(db, "normal")

    for path in ("/below", "/above", "/normal"):
        assert client.post(path).data == b"ok"
    assert stored(db, app) == {"normal"}
    assert checked_out(db, app) == 0


def test_no_autocommit_keeps_what_the_view_commits(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view without automatic commit keeps what it commits itself; what it left
    uncommitted is rolled back.
    """

    @app.post("/")
    @db.no_autocommit
    def view() -> str:
        write(db, "committed")
        db.session.commit()
        return write(db, "left over")

    assert client.post("/").status_code == 200
    assert stored(db, app) == {"committed"}
    assert checked_out(db, app) == 0


def test_no_autocommit_with_other_decorators_and_add_url_rule(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """The marker survives a functools.wraps decorator on either side of it, and
    works on a view registered with add_url_rule and in a blueprint.
    """

    @app.post("/inner")
    @logged_in
    @db.no_autocommit
    def inner() -> str:
        return write(db, "inner")

    @app.post("/outer")
    @db.no_autocommit
    @logged_in
    def outer() -> str:
        return write(db, "outer")

    def ruled() -> str:
        return write(db, "ruled")

    app.add_url_rule("/ruled", view_func=db.no_autocommit(ruled), methods=["POST"])

    blueprint = flask.Blueprint("bp", __name__)

    @blueprint.post("/blueprint")
    @db.no_autocommit
    def in_blueprint() -> str:
        return write(db, "blueprint")

    @blueprint.post("/blueprint-normal")
    def blueprint_normal() -> str:
        return write(db, "blueprint-normal")

    app.register_blueprint(blueprint)

    for path in ("/inner", "/outer", "/ruled", "/blueprint", "/blueprint-normal"):
        assert client.post(path).data == b"ok", path
    assert stored(db, app) == {"blueprint-normal"}


def test_no_autocommit_on_class_based_views(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A class-based view opts out with @db.no_autocommit on the class, or with
    ``decorators = [db.no_autocommit]``.
    """

    @db.no_autocommit
    class Decorated(flask.views.MethodView):
        def post(self) -> str:
            return write(db, "decorated")

    class Listed(flask.views.MethodView):
        decorators: t.ClassVar[list[t.Callable[..., t.Any]]] = [db.no_autocommit]

        def post(self) -> str:
            return write(db, "listed")

    class Normal(flask.views.MethodView):
        def post(self) -> str:
            return write(db, "normal")

    app.add_url_rule("/decorated", view_func=Decorated.as_view("decorated"))
    app.add_url_rule("/listed", view_func=Listed.as_view("listed"))
    app.add_url_rule("/normal", view_func=Normal.as_view("normal"))
    for path in ("/decorated", "/listed", "/normal"):
        assert client.post(path).data == b"ok", path
    assert stored(db, app) == {"normal"}


def test_no_autocommit_returns_the_view_itself(db: SessionORM) -> None:
    """The decorator returns the function it was given, so it stacks anywhere."""

    def view() -> str:
        return "ok"

    assert db.no_autocommit(view) is view


# -- db.mark_for_rollback() ----------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 302])
def test_mark_for_rollback(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient, status: int
) -> None:
    """A request marked for rollback is rolled back whatever its (successful)
    response, which is sent unchanged; the next request commits as usual.
    """

    @app.post("/marked")
    def marked() -> tuple[str, int]:
        write(db, "marked")
        db.mark_for_rollback()
        return "kept response", status

    @app.post("/next")
    def next_() -> str:
        return write(db, "next")

    response = client.post("/marked")
    assert (response.status_code, response.data) == (status, b"kept response")
    assert client.post("/next").status_code == 200
    assert stored(db, app) == {"next"}
    assert checked_out(db, app) == 0


def test_mark_for_rollback_before_using_the_session(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Marking the request before its session exists still rolls it back."""

    @app.post("/")
    def view() -> str:
        db.mark_for_rollback()
        return write(db, "a")

    assert client.post("/").status_code == 200
    assert stored(db, app) == set()


def test_mark_for_rollback_keeps_explicit_commits(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """What the view committed itself before or after the mark stays committed;
    only the automatic commit is replaced by a rollback.
    """

    @app.post("/")
    def view() -> str:
        write(db, "before")
        db.session.commit()
        db.mark_for_rollback()
        write(db, "after")
        db.session.commit()
        return write(db, "left over")

    assert client.post("/").status_code == 200
    assert stored(db, app) == {"before", "after"}


def test_mark_for_rollback_outside_request(app: flask.Flask, db: SessionORM) -> None:
    """Outside a request mark_for_rollback() is an error: nothing is committed
    automatically there to begin with.
    """

    def call() -> None:
        with (
            app.app_context(),
            pytest.raises(RuntimeError, match="works inside a request only"),
        ):
            db.mark_for_rollback()

    if flask.has_request_context():
        # pytest-flask pushes a request context around every test.
        ctx = flask.globals.request_ctx._get_current_object()
        ctx.pop()
        try:
            call()
        finally:
            ctx.push()
    else:
        call()
