"""pytest plugin: roll back everything a test writes through flask-session-orm.

Loaded automatically (entry point ``pytest11``) once the package is installed.
The fixtures use the project's own ``app`` fixture, as pytest-flask does, and
compose with pytest-flask's ``client``::

    def test_create(client, orm_session):
        client.post("/items", data={"name": "a"})
        assert orm_session.scalar(select(func.count(Item.id))) == 1

Nothing here imports Flask or SQLAlchemy until a fixture is used, so projects that
do not use the fixtures pay nothing for the plugin.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing as t

import pytest

if t.TYPE_CHECKING:
    import flask
    import sqlalchemy.orm as orm

    from ._extension import SessionORM


def _app(request: pytest.FixtureRequest) -> flask.Flask:
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            f"The fixture {request.fixturename!r} of flask-session-orm needs a"
            " fixture named 'app' that returns your Flask app (the pytest-flask"
            " convention). Define one in your conftest.py."
        ) from None
    return t.cast("flask.Flask", app)


def _db(app: flask.Flask, fixture: str) -> SessionORM:
    from ._scope import EXTENSION_KEY

    extensions = getattr(app, "extensions", None)
    state = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    if state is None:
        raise pytest.UsageError(
            f"The fixture {fixture!r} of flask-session-orm got an 'app' fixture"
            f" value {app!r} with no SessionORM registered. Call 'db.init_app(app)'"
            " in the app fixture (or in your app factory)."
        )
    return t.cast("SessionORM", state.db)


@pytest.fixture
def orm_isolation(request: pytest.FixtureRequest) -> t.Iterator[SessionORM]:
    """Run the test inside ``db.isolation()``: everything it writes through the
    extension, by itself or through requests, is rolled back when it ends.
    Yields the app's :class:`.SessionORM`.
    """
    app = _app(request)
    db = _db(app, "orm_isolation")
    with db.isolation(app):
        yield db


@pytest.fixture
def orm_session(
    request: pytest.FixtureRequest, orm_isolation: SessionORM
) -> t.Iterator[orm.Session]:
    """The session for the test body, inside :func:`orm_isolation`.

    It is ``db.session`` of the app context already pushed for the test (as
    pytest-flask does), or of an app context pushed for the test if none is.
    """
    import flask

    app = _app(request)
    if flask.has_app_context() and flask.current_app._get_current_object() is app:  # type: ignore[attr-defined]
        yield orm_isolation.session
        return
    with app.app_context():
        yield orm_isolation.session
