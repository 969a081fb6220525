"""Fixtures for the example app's tests.

``app`` is the example app, created once per backend for the whole test session:
SQLite always, PostgreSQL when ``TEST_POSTGRES_URL`` is set, MariaDB/MySQL when
``TEST_MYSQL_URL`` is set. On a server both engines (main and ``audit``) use the
same database; on SQLite they are two files, as when the app runs.

Tests stay independent through flask-session-orm's pytest plugin: a test module
that uses the app marks its tests with ``usefixtures("orm_isolation")``, so all a
test writes (its requests' commits and the audit entries written after them
included) is rolled back when it ends. pytest-flask provides ``client``.
"""

from __future__ import annotations

import os
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from example_app import create_app
from example_app import db
from example_app.models import AuditEntry
from example_app.models import Base
from example_app.models import Bookmark

BACKENDS = {
    "sqlite": None,
    "postgresql": "TEST_POSTGRES_URL",
    "mysql": "TEST_MYSQL_URL",
}


def database_urls(backend: str, folder: t.Any) -> tuple[str, str]:
    """The main and audit database URLs for ``backend``, or skip."""
    variable = BACKENDS[backend]
    if variable is None:
        return f"sqlite:///{folder}/bookmarks.db", f"sqlite:///{folder}/audit.db"
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set: no {backend} server to test against")
    return url, url


@pytest.fixture(scope="session", params=list(BACKENDS))
def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[flask.Flask]:
    main, audit = database_urls(request.param, tmp_path_factory.mktemp("example"))
    app = create_app(
        {
            "TESTING": True,
            "SESSION_ORM_DATABASE_URL": main,
            "AUDIT_DATABASE_URL": audit,
        }
    )
    with app.app_context():
        # Start from empty tables whatever an interrupted run left behind.
        db.drop_all(Base)
        db.create_all(Base)
    yield app
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


def bookmark_urls(session: orm.Session) -> list[str]:
    """The stored bookmark URLs, oldest first."""
    return list(session.scalars(sa.select(Bookmark.url).order_by(Bookmark.id)))


def audit_log(session: orm.Session) -> list[tuple[str, str, str]]:
    """The stored audit entries as (action, url, detail), oldest first."""
    rows = session.execute(
        sa.select(AuditEntry.action, AuditEntry.url, AuditEntry.detail).order_by(
            AuditEntry.id
        )
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]
