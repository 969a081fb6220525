"""pytest plugin: roll back everything a test writes through flask-session-orm.

Loaded automatically (entry point ``pytest11``) once the package is installed.
The fixtures use the project's own ``app`` fixture, as pytest-flask does, and
compose with pytest-flask's ``client``::

    def test_create(client, orm_session):
        client.post("/items", data={"name": "a"})
        assert orm_session.scalar(select(func.count(Item.id))) == 1

The fixtures import Flask and SQLAlchemy only when a test uses them.

``--orm-fail-on-nplusone`` (or ``orm_fail_on_nplusone = true`` in the pytest
configuration) turns :class:`~flask_session_orm.NPlusOneWarning` into an error.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing as t

import pytest

if t.TYPE_CHECKING:
    import flask
    import sqlalchemy.orm as orm

    from ._extension import SessionORM


def pytest_addoption(parser: pytest.Parser) -> None:
    text = (
        "Turn flask-session-orm's NPlusOneWarning into an error, so that a test"
        " whose code or requests lazy-load one relationship too often fails."
    )
    group = parser.getgroup("flask-session-orm")
    group.addoption(
        "--orm-fail-on-nplusone", action="store_true", default=False, help=text
    )
    parser.addini("orm_fail_on_nplusone", text, type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("orm_fail_on_nplusone") or config.getini(
        "orm_fail_on_nplusone"
    ):
        # Appended to the ini's filter lines, so it wins over those before it
        # (and a test's own filterwarnings mark still wins over it). The class
        # is imported by pytest only when a test runs.
        config.addinivalue_line(
            "filterwarnings", "error::flask_session_orm.NPlusOneWarning"
        )


def _app(request: pytest.FixtureRequest) -> flask.Flask:
    # Looked up by name, not declared as an argument, so that a missing 'app'
    # fixture gets an explanation instead of pytest's generic lookup error.
    try:
        return t.cast("flask.Flask", request.getfixturevalue("app"))
    except pytest.FixtureLookupError:
        pass
    # Outside the except block, so that the report is the message alone.
    pytest.fail(
        f"The fixture {request.fixturename!r} of flask-session-orm needs a"
        " fixture named 'app' that returns your Flask app (the pytest-flask"
        " convention). Define one in your conftest.py.",
        pytrace=False,
    )


def _db(app: flask.Flask, fixture: str) -> SessionORM:
    from ._scope import EXTENSION_KEY

    extensions = getattr(app, "extensions", None)
    state = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    if state is None:
        pytest.fail(
            f"The fixture {fixture!r} of flask-session-orm got {app!r} from the"
            " 'app' fixture, which has no SessionORM registered. Call"
            " 'db.init_app(app)' in the app fixture (or in your app factory).",
            pytrace=False,
        )
    return t.cast("SessionORM", state.db)


@pytest.fixture
def orm_isolation(request: pytest.FixtureRequest) -> t.Iterator[SessionORM]:
    """Run the test inside :meth:`.SessionORM.isolation` of the ``app``
    fixture's app: everything the test writes through the extension, itself or
    through test-client requests, is rolled back when it ends. Yields the app's
    :class:`.SessionORM`.

    .. versionadded:: 0.1.0
    """
    if "live_server" in request.fixturenames:
        pytest.fail(
            "The fixture 'orm_isolation' cannot isolate a test that uses"
            " 'live_server': the live server runs in another process, with its own"
            " database connections, so its writes are not rolled back and it does"
            " not see the test's. Clean the database after such tests instead"
            " (see the flask-session-orm testing docs).",
            pytrace=False,
        )
    app = _app(request)
    db = _db(app, "orm_isolation")
    with db.isolation(app):
        yield db


@pytest.fixture
def orm_session(
    request: pytest.FixtureRequest, orm_isolation: SessionORM
) -> t.Iterator[orm.Session]:
    """The session for the test body, inside :func:`orm_isolation`: what it
    commits is seen by the test's requests and rolled back at the end.

    It is ``db.session`` of the context already pushed for the app (pytest-flask
    pushes a request context for every test), or of an app context pushed for
    the test when there is none.

    .. versionadded:: 0.1.0
    """
    import flask

    app = _app(request)
    current = t.cast(t.Any, flask.current_app) if flask.has_app_context() else None
    if current is not None and current._get_current_object() is app:
        session = orm_isolation.session
        isolation = getattr(session, "_orm_isolation", None)
        if isolation is None or not isolation.active:
            pytest.fail(
                "The fixture 'orm_session' found that db.session of the context"
                " pushed for this test was created before 'orm_isolation' started,"
                " by a fixture that ran first: it is not isolated, and what it"
                " commits is stored for real. Make the fixtures that use"
                " db.session depend on 'orm_session' (or 'orm_isolation').",
                pytrace=False,
            )
        yield session
        return
    with app.app_context():
        session = orm_isolation.session
        yield session
        # Uncommitted work is expected to go away at the end of a test: close
        # here, so that the app context's end does not log it as discarded.
        session.close()
