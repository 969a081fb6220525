"""The migration guide, followed on a real Flask-SQLAlchemy application.

``tests/port_support/before`` is a small microblog written for Flask-SQLAlchemy:
users, posts, followers, Flask-Login, Flask-Migrate (``Migrate(app, db)``) with the
migration repository its ``flask db migrate`` generated, ``db.paginate``,
``db.get_or_404``, a JSON API with an ``async`` view, a search index kept up to
date by session events, and its own pytest suite using pytest-flask's ``client``.
``tests/port_support/after`` holds only the files the edits docs/migrating.rst
lists change, as they are after those edits: the ported application is a copy of
``before`` with them laid over it, so the two cannot drift apart anywhere else.
Both suites run in a subprocess, in a copy of each application's folder, against
the database named by the application's own config (``TEST_DATABASE_URL``).
"""

from __future__ import annotations

import difflib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import typing as t

import pytest
import sqlalchemy as sa

from .conftest import backend_url

SUPPORT = pathlib.Path(__file__).parent / "port_support"
GUIDE = pathlib.Path(__file__).parent.parent / "docs" / "migrating.rst"
TABLES = {"user", "post", "followers"}

#: Each line the port adds, and the words of the guide that tell the reader
#: to write it.
EDITS = {
    'SESSION_ORM_DATABASE_URL = os.environ.get("DATABASE_URL") or "sqlite:///app.db"': (
        "``SQLALCHEMY_DATABASE_URI``"
    ),
    'SESSION_ORM_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or "sqlite://"': (
        ":data:`SESSION_ORM_DATABASE_URL`"
    ),
    "from sqlalchemy.orm import DeclarativeBase": "class Base(DeclarativeBase)",
    "class Base(DeclarativeBase):": "class Base(DeclarativeBase)",
    "pass": "class Base(DeclarativeBase)",
    "from flask_session_orm import SessionORM": "SessionORM(metadata=Base)",
    "db = SessionORM(metadata=Base)": "SessionORM(metadata=Base)",
    "from flask_session_orm import Session": "flask_session_orm.Session",
    "from microblog import Base": "class Base(DeclarativeBase)",
    "followers = sa.Table(": "sa.Table(..., db.metadata)",
    "db.metadata,": "sa.Table(..., db.metadata)",
    (
        'sa.Column("follower_id", sa.Integer, sa.ForeignKey("user.id"),'
        " primary_key=True),"
    ): "``sa.Column``",
    (
        'sa.Column("followed_id", sa.Integer, sa.ForeignKey("user.id"),'
        " primary_key=True),"
    ): "``sa.Column``",
    "class User(UserMixin, Base):": "Replace ``db.Model`` with ``Base``",
    "class Post(Base):": "Replace ``db.Model`` with ``Base``",
    '__tablename__ = "user"': "``__tablename__``",
    '__tablename__ = "post"': "``__tablename__``",
    'sa.event.listen(Session, "before_commit", before_commit)': (
        'event.listen(Session, "after_commit"'
    ),
    'sa.event.listen(Session, "after_commit", after_commit)': (
        'event.listen(Session, "after_commit"'
    ),
    "db.session.flush()": "db.session.flush()",
    "db.session.close()": "db.session.close()",
}


#: The files the port changes: all that ``after`` holds.
CHANGED = [
    "config.py",
    "microblog/__init__.py",
    "microblog/api.py",
    "microblog/models.py",
    "tests/conftest.py",
]
IGNORE = shutil.ignore_patterns("__pycache__")


def copy_app(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A private copy of one application: ``before`` as it is, ``after`` as
    ``before`` with the files of ``after`` laid over it.
    """
    directory = tmp_path / name
    shutil.copytree(SUPPORT / "before", directory, ignore=IGNORE)
    if name == "after":
        shutil.copytree(SUPPORT / "after", directory, ignore=IGNORE, dirs_exist_ok=True)
    return directory


def after_files() -> list[str]:
    """The paths of the files ``after`` holds, relative to it."""
    root = SUPPORT / "after"
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def environ(**values: str) -> dict[str, str]:
    """The environment of a subprocess: this one, without database settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_ADDOPTS"}
        and not key.startswith("FLASK_")
    }
    env.update(values)
    return env


def run(command: list[str], cwd: pathlib.Path, env: dict[str, str]) -> str:
    """Run ``command``; its output, or a failure that shows it."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}"
    return result.stdout


def count_tests(directory: pathlib.Path) -> int:
    """How many tests the application's own suite has."""
    return sum(
        len(re.findall(r"^def test_", path.read_text(), re.M))
        for path in (directory / "tests").glob("test_*.py")
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def port_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """The URL the applications' test config reads from ``TEST_DATABASE_URL``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/port.db"
    return backend_url(request.param, tmp_path)


@pytest.mark.parametrize("name", ["before", "after"])
def test_own_suite_passes(name: str, port_url: str, tmp_path: pathlib.Path) -> None:
    """The application's own pytest-flask suite passes, before the port on
    Flask-SQLAlchemy and after it on flask-session-orm, with no
    Flask-SQLAlchemy key left behind.
    """
    if name == "before":
        pytest.importorskip("flask_sqlalchemy")
    directory = copy_app(name, tmp_path)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if name == "after":
        command += ["-W", "error::flask_session_orm.FlaskSQLAlchemyConfigWarning"]
    output = run(command, directory, environ(TEST_DATABASE_URL=port_url))
    assert f"{count_tests(directory)} passed" in output, output


def test_port_edits_are_the_guides() -> None:
    """The port changes only the files and lines the guide tells the reader to
    change; its tests, templates, views and migrations are the original's.
    """
    changed = after_files()
    for path in changed:
        before = SUPPORT / "before" / path
        assert before.is_file(), f"{path} is not in the original application"
        assert before.read_bytes() != (SUPPORT / "after" / path).read_bytes(), (
            f"{path} is the original's: remove it from 'after'"
        )
    assert changed == CHANGED
    guide = GUIDE.read_text()
    for path in changed:
        before = (SUPPORT / "before" / path).read_text().splitlines()
        after = (SUPPORT / "after" / path).read_text().splitlines()
        for line in difflib.unified_diff(before, after, lineterm="", n=0):
            added = line[1:].strip()
            if line.startswith("+") and not line.startswith("+++") and added:
                assert added in EDITS, f"{path}: {added!r} is not a listed edit"
                assert EDITS[added] in guide, f"the guide lacks {EDITS[added]!r}"


@pytest.fixture
def migration_url(port_url: str) -> t.Iterator[str]:
    """An empty place for the after-app's tables: a schema of its own on
    PostgreSQL (through ``search_path``), a new file on SQLite.
    """
    if port_url.startswith("sqlite"):
        yield port_url
        return
    engine = sa.create_engine(port_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA IF EXISTS port_migrations CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA port_migrations")
    url = sa.make_url(port_url).update_query_dict(
        {"options": "-csearch_path=port_migrations"}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA port_migrations CASCADE")
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_after_app_migrations(migration_url: str, tmp_path: pathlib.Path) -> None:
    """The ported app upgrades with the migration repository Flask-SQLAlchemy
    generated, through ``Migrate(app, db)`` unchanged, and its models match it:
    a new ``flask db migrate`` finds no change, and Flask-SQLAlchemy, still
    installed, is not imported.
    """
    directory = copy_app("after", tmp_path)
    env = environ(DATABASE_URL=migration_url)
    check = "import sys, microblog; microblog.create_app(); print(sorted(sys.modules))"
    modules = run([sys.executable, "-c", check], directory, env)
    assert "'flask_migrate'" in modules
    assert "flask_sqlalchemy" not in modules
    flask = [sys.executable, "-m", "flask", "--app", "microblog"]
    run([*flask, "db", "upgrade"], directory, env)
    assert tables(migration_url) == {*TABLES, "alembic_version"}
    output = run([*flask, "db", "migrate", "-m", "nothing"], directory, env)
    assert "No changes in schema detected." in output
    assert len(list((directory / "migrations" / "versions").glob("*.py"))) == 1
    run([*flask, "db", "downgrade"], directory, env)
    assert tables(migration_url) == {"alembic_version"}
