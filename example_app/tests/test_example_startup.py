"""Starting the app: databases from config or environment, tables, SQLite.

These tests create their own apps on SQLite files and use no isolation: they
check what the app does on its own, as when it runs.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import typing as t

import flask
import pytest
import sqlalchemy as sa

import example_app
from example_app import create_app
from example_app import db
from example_app.models import AuditEntry
from example_app.models import Bookmark


@pytest.fixture
def make_app(tmp_path: pathlib.Path) -> t.Iterator[t.Callable[..., flask.Flask]]:
    """Create example apps; their engines are disposed after the test."""
    apps: list[flask.Flask] = []

    def make(config: dict[str, t.Any] | None = None) -> flask.Flask:
        if config is None:
            config = {
                "SESSION_ORM_DATABASE_URL": f"sqlite:///{tmp_path}/main.db",
                "AUDIT_DATABASE_URL": f"sqlite:///{tmp_path}/audit.db",
            }
        app = create_app({"TESTING": True, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def tables(app: flask.Flask, engine: str) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.get_engine(engine)).get_table_names())


def test_first_start_creates_tables_in_both_databases(
    make_app: t.Callable[..., flask.Flask],
) -> None:
    """Creating the app creates each table in the database its model is bound to."""
    app = make_app()
    assert tables(app, "default") == {"example_bookmark", "example_tag"}
    assert tables(app, "audit") == {"example_audit_entry"}


def test_models_are_routed_by_config(make_app: t.Callable[..., flask.Flask]) -> None:
    """The audit models use the "audit" engine through ``SESSION_ORM_BINDS``, not
    through anything in the models.
    """
    app = make_app()
    assert app.config["SESSION_ORM_BINDS"] == {"example_app.models:AuditModel": "audit"}
    assert not hasattr(AuditEntry, "__bind_key__")
    with app.app_context():
        assert db.session.get_bind(AuditEntry) is db.get_engine("audit")
        assert db.session.get_bind(Bookmark) is db.get_engine("default")


def test_environment_chooses_the_databases(
    make_app: t.Callable[..., flask.Flask],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``SESSION_ORM_DATABASE_URL`` and ``AUDIT_DATABASE_URL`` in the environment
    choose the databases; Flask's ``FLASK_``-prefixed variables win over them.
    """
    monkeypatch.setenv("SESSION_ORM_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("AUDIT_DATABASE_URL", f"sqlite:///{tmp_path}/env-audit.db")
    app = make_app({})
    with app.app_context():
        assert db.engine.url.database == f"{tmp_path}/env.db"
        assert db.get_engine("audit").url.database == f"{tmp_path}/env-audit.db"
    monkeypatch.setenv(
        "FLASK_SESSION_ORM_DATABASE_URL", f"sqlite:///{tmp_path}/flask.db"
    )
    app = make_app({})
    with app.app_context():
        assert db.engine.url.database == f"{tmp_path}/flask.db"


ZERO_CONFIG_SCRIPT = """
from example_app import create_app
app = create_app()
client = app.test_client()
created = client.post("/bookmarks", data={"url": "https://a.example/"})
listed = client.get("/api/bookmarks").get_json()["bookmarks"]
print(created.status_code, [b["url"] for b in listed])
"""


def test_zero_config_start(tmp_path: pathlib.Path) -> None:
    """With no configuration at all, a copy of the app starts on two SQLite files
    in its instance folder, creates its tables and stores what it is sent.
    """
    shutil.copytree(
        pathlib.Path(example_app.__file__).parent,
        tmp_path / "example_app",
        ignore=shutil.ignore_patterns("tests", "__pycache__"),
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FLASK_", "SESSION_ORM_", "AUDIT_", "PYTHON"))
    }
    result = subprocess.run(
        [sys.executable, "-c", ZERO_CONFIG_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "303 ['https://a.example/']\n"
    instance = tmp_path / "instance"
    assert sorted(path.name for path in instance.iterdir()) == [
        "audit.db",
        "bookmarks.db",
    ]


def test_savepoints_roll_back_on_sqlite(
    make_app: t.Callable[..., flask.Flask],
) -> None:
    """On SQLite outside test isolation, the import's savepoints do not commit:
    a preview and a failed import store nothing, a good import stores its items.
    """
    app = make_app()
    client = app.test_client()
    items = [{"url": "https://a.example/"}, {"url": "https://b.example/"}]
    assert client.post("/api/bookmarks/import/preview", json=items).status_code == 200
    bad = [*items, {"url": "nope"}]
    assert client.post("/api/bookmarks/import", json=bad).status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Bookmark.id))) == 0
        assert db.session.scalar(sa.select(sa.func.count(AuditEntry.id))) == 0
    assert client.post("/api/bookmarks/import", json=items).status_code == 200
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Bookmark.id))) == 2
        assert db.session.scalar(sa.select(sa.func.count(AuditEntry.id))) == 2
