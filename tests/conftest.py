"""Fixtures shared by the tests: one app per test, on every configured backend.

``database_url`` is parametrized over SQLite (always), PostgreSQL
(``TEST_POSTGRES_URL``) and MariaDB/MySQL (``TEST_MYSQL_URL``); a backend whose
variable is unset is skipped with that reason. Tests that take ``app``, ``db`` or
``client`` therefore run once per backend.
"""

from __future__ import annotations

import os
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="Run the long reliability run (restarts PostgreSQL once).",
    )


BACKENDS = {
    "sqlite": None,
    "postgresql": "TEST_POSTGRES_URL",
    "mysql": "TEST_MYSQL_URL",
}


class Base(orm.DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "orm_test_item"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)


def backend_url(backend: str, tmp_path: t.Any) -> str:
    """The URL of ``backend`` for this test, or skip when it is not configured."""
    variable = BACKENDS[backend]
    if variable is None:
        return f"sqlite:///{tmp_path}/test.db"
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set: no {backend} server to test against")
    return url


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: t.Any) -> str:
    return backend_url(backend, tmp_path)


@pytest.fixture
def app(database_url: str, tmp_path: t.Any) -> flask.Flask:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SESSION_ORM_DATABASE_URL=database_url)
    return app


@pytest.fixture
def db(app: flask.Flask) -> t.Iterator[SessionORM]:
    db = SessionORM(app)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    yield db
    if flask.has_request_context():
        # pytest-flask's request context outlives this fixture: end the test
        # body's session first, or its open transaction blocks DROP TABLE.
        db.session.close()
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def client(app: flask.Flask, db: SessionORM) -> flask.testing.FlaskClient:
    return app.test_client()


@pytest.fixture
def outside_requests() -> t.Iterator[None]:
    """Pop the request context pytest-flask pushes around every test that uses
    ``app``, so that the test body runs outside any request (as a CLI command, a
    job or a pre-forking server's master does) and what it does inside
    ``app.app_context()`` ends with that context.
    """
    if not flask.has_request_context():
        yield
        return
    ctx = flask.globals.request_ctx._get_current_object()  # type: ignore[attr-defined]
    ctx.pop()
    try:
        yield
    finally:
        ctx.push()


def count_items(db: SessionORM, app: flask.Flask) -> int:
    """How many items are stored, read through a fresh connection."""
    with app.app_context(), db.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(Item)) or 0


def checked_out(db: SessionORM, app: flask.Flask) -> int:
    """How many connections the app's pools have checked out, all engines."""
    with app.app_context():
        return sum(
            t.cast(t.Any, engine.pool).checkedout() for engine in db.engines.values()
        )
