"""Schema migrations with the real Flask-Migrate and Alembic.

The ``flask db`` commands run in a subprocess on ``tests/migrate_support/migapp.py``
(Alembic's ``env.py`` reconfigures logging for the whole process, so it is kept
out of the test process). PostgreSQL engines get a schema of their own through
``search_path``, so that each engine sees only its own tables, as two databases
would; MariaDB, whose schemas are databases, runs the single-database flow only.
"""

from __future__ import annotations

import importlib.util
import json
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

SUPPORT = pathlib.Path(__file__).parent / "migrate_support"
DEFAULT_TABLES = {"mig_author", "mig_book", "mig_book_tag"}
AUDIT_TABLES = {"mig_event", "mig_metric", "mig_archive"}


class Place:
    """Where one engine's tables go: a URL and how to look inside it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def tables(self) -> set[str]:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def inspect(self) -> t.Any:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        connection = engine.connect()
        return sa.inspect(connection), connection, engine


class Places:
    """Makes clean places for one test on one backend, and removes them."""

    def __init__(self, backend: str, tmp_path: pathlib.Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.cleanups: list[t.Callable[[], None]] = []

    def new(self, name: str) -> Place:
        if self.backend == "sqlite":
            return Place(f"sqlite:///{self.tmp_path}/{name}.db")
        url = sa.make_url(backend_url(self.backend, self.tmp_path))
        if self.backend == "postgresql":
            schema = f"mig_{name}"
            self._postgres_schema(url, schema)
            url = url.update_query_dict({"options": f"-csearch_path={schema}"})
        else:
            if name != "main":
                pytest.skip("MariaDB needs a second database for a second engine")
            self._mysql_clean(url)
        return Place(url.render_as_string(hide_password=False))

    def _postgres_schema(self, url: sa.URL, schema: str) -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

        def drop() -> None:
            with engine.begin() as connection:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

        drop()
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        self.cleanups.append(drop)

    def _mysql_clean(self, url: sa.URL) -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

        def drop() -> None:
            with engine.begin() as connection:
                for table in (*sorted(AUDIT_TABLES), "mig_book_tag", "mig_book"):
                    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
                connection.exec_driver_sql("DROP TABLE IF EXISTS mig_author")
                connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")

        drop()
        self.cleanups.append(drop)


@pytest.fixture
def places(backend: str, tmp_path: pathlib.Path) -> t.Iterator[Places]:
    made = Places(backend, tmp_path)
    try:
        yield made
    finally:
        for cleanup in made.cleanups:
            cleanup()


class Project:
    """A directory holding ``migapp.py``, where ``flask db ...`` runs."""

    def __init__(self, directory: pathlib.Path, main: Place, audit: Place | None):
        self.directory = directory
        directory.mkdir()
        shutil.copy(SUPPORT / "migapp.py", directory)
        self.report = directory / "report.jsonl"
        self.env = {
            **os.environ,
            "FLASK_APP": "migapp",
            "MIGAPP_INSTANCE": str(directory / "instance"),
            "MIGAPP_DEFAULT_URL": main.url,
            "MIGAPP_REPORT": str(self.report),
            "PYTHONPATH": str(directory),
        }
        self.env.pop("MIGAPP_AUDIT_URL", None)
        if audit is not None:
            self.env["MIGAPP_AUDIT_URL"] = audit.url

    def flask_db(self, *args: str) -> str:
        """Run ``flask db *args``; its output, or a failure showing it."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "db", *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"flask db {' '.join(args)} failed:\n{output}"
        assert "Warning" not in output, output
        return output

    def revisions(self) -> list[pathlib.Path]:
        return sorted((self.directory / "migrations" / "versions").glob("*.py"))

    def reports(self) -> list[dict[str, t.Any]]:
        lines = self.report.read_text().splitlines()
        return [json.loads(line) for line in lines]


def sections(revision: str) -> dict[str, str]:
    """The bodies of the functions of a revision file, by function name."""
    parts = re.split(r"^def (\w+)\(.*\):\n", revision, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def created_tables(body: str) -> set[str]:
    return set(re.findall(r"op\.create_table\('(\w+)'", body))


def assert_flask_sqlalchemy_unused(project: Project) -> None:
    """Flask-SQLAlchemy is installed, yet no command imported or configured it,
    and every connection was made by one of this extension's engines.
    """
    assert importlib.util.find_spec("flask_sqlalchemy") is not None
    reports = project.reports()
    assert reports
    for report in reports:
        assert report["extensions"] == ["migrate", "session_orm"]
        assert report["sqlalchemy_keys"] == []
        assert report["flask_sqlalchemy_imported"] is False
        assert report["foreign_connections"] == 0
    assert any(report["connections"] for report in reports)


def test_single_database(places: Places, tmp_path: pathlib.Path, backend: str) -> None:
    """Flask-Migrate's own template creates, finds unchanged, and drops the
    models' tables, with their foreign keys, indexes and unique constraints.
    """
    main = places.new("main")
    project = Project(tmp_path / "project", main, None)
    project.flask_db("init")
    output = project.flask_db("migrate", "-m", "first")
    assert "Detected added table 'mig_book'" in output
    (revision,) = project.revisions()
    body = sections(revision.read_text())["upgrade"]
    assert created_tables(body) == DEFAULT_TABLES
    assert "ForeignKeyConstraint(['author_id'], ['mig_author.id']" in body
    assert "fk_mig_book_author_id_mig_author" in body
    assert "uq_mig_author_name" in body
    assert "ix_mig_book_title" in body
    project.flask_db("upgrade")
    assert main.tables() == {*DEFAULT_TABLES, "alembic_version"}
    inspector, connection, engine = main.inspect()
    try:
        (foreign_key,) = inspector.get_foreign_keys("mig_book")
        assert foreign_key["referred_table"] == "mig_author"
        indexes = {index["name"] for index in inspector.get_indexes("mig_book")}
        assert "ix_mig_book_title" in indexes
    finally:
        connection.close()
        engine.dispose()
    output = project.flask_db("migrate", "-m", "second")
    assert "No changes in schema detected." in output
    assert project.revisions() == [revision]
    project.flask_db("downgrade")
    assert main.tables() == {"alembic_version"}
    assert_flask_sqlalchemy_unused(project)


def test_multiple_databases(
    places: Places, tmp_path: pathlib.Path, backend: str
) -> None:
    """With ``flask db init --multidb``, each table is migrated on the engine it
    is routed to: by class path and by table name in SESSION_ORM_BINDS, and by
    __bind_key__; a second migrate finds nothing and downgrade drops them all.
    """
    main = places.new("main")
    audit = places.new("audit")
    project = Project(tmp_path / "project", main, audit)
    project.flask_db("init", "--multidb")
    project.flask_db("migrate", "-m", "first")
    (revision,) = project.revisions()
    functions = sections(revision.read_text())
    assert created_tables(functions["upgrade_"]) == DEFAULT_TABLES
    assert created_tables(functions["upgrade_audit"]) == AUDIT_TABLES
    assert "['mig_event.id']" in functions["upgrade_audit"]
    project.flask_db("upgrade")
    assert main.tables() == {*DEFAULT_TABLES, "alembic_version"}
    assert audit.tables() == {*AUDIT_TABLES, "alembic_version"}
    output = project.flask_db("migrate", "-m", "second")
    assert "No changes in schema detected." in output
    assert project.revisions() == [revision]
    project.flask_db("downgrade")
    assert main.tables() == {"alembic_version"}
    assert audit.tables() == {"alembic_version"}
    assert_flask_sqlalchemy_unused(project)
