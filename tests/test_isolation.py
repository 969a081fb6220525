"""db.isolation(): everything written inside it through the extension is rolled
back on exit, while commits and rollbacks inside it keep their meaning.
"""

from __future__ import annotations

import sys
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

from .conftest import Item
from .conftest import checked_out
from .conftest import count_items


def add_views(app: flask.Flask, db: SessionORM) -> None:
    """Views that write items and end in various ways."""

    @app.post("/add/<name>")
    def add(name: str) -> str:
        db.session.add(Item(name=name))
        return "added"

    @app.get("/names")
    def names() -> list[str]:
        return list(db.session.scalars(sa.select(Item.name).order_by(Item.name)))

    @app.post("/raise/<name>")
    def raise_(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        raise ValueError("the view failed")

    @app.post("/reject/<name>")
    def reject(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.flush()
        return "rejected", 400

    @app.post("/invalidate/<name>")
    def invalidate(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        db.invalidate()
        return "invalidated"


def names(client: flask.testing.FlaskClient) -> list[str]:
    """The item names a request sees."""
    response = client.get("/names")
    assert response.status_code == 200
    return t.cast(list[str], response.json)


def test_view_commit_is_rolled_back_on_exit(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view's commit inside isolation is seen by later requests and is gone
    after the block, with no connection left checked out.
    """
    add_views(app, db)
    with db.isolation(app):
        assert client.post("/add/a").status_code == 200
        assert names(client) == ["a"]
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0


def test_view_commit_is_invisible_to_other_connections(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view's commit inside isolation does not reach the database: another
    connection does not see it.
    """
    add_views(app, db)
    with db.isolation(app):
        client.post("/add/a")
        assert names(client) == ["a"]
        assert count_items(db, app) == 0


def test_test_body_commit_is_rolled_back_on_exit(
    app: flask.Flask, db: SessionORM
) -> None:
    """What the test itself commits through ``db.session`` is rolled back on exit."""
    with db.isolation(app), app.app_context():
        db.session.add(Item(name="a"))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count(Item.id))) == 1
    assert count_items(db, app) == 0


def test_isolation_of_the_current_app(app: flask.Flask, db: SessionORM) -> None:
    """Without an argument, db.isolation() isolates the current app."""
    with app.app_context(), db.isolation():
        db.session.add(Item(name="a"))
        db.session.commit()
    assert count_items(db, app) == 0


def test_isolation_without_app_or_context(tmp_path: t.Any) -> None:
    """Without an app and outside any context, db.isolation() says what is missing."""
    _app, db = sqlite_app("sqlite://", tmp_path)
    assert not flask.has_app_context()
    with pytest.raises(RuntimeError, match="outside of application context"):
        with db.isolation():
            pass


def test_isolation_of_unregistered_app(db: SessionORM, tmp_path: t.Any) -> None:
    """db.isolation() on an app the extension is not registered on is an error."""
    other = flask.Flask("other", instance_path=str(tmp_path))
    with pytest.raises(RuntimeError, match="not registered with this SessionORM"):
        with db.isolation(other):
            pass


def test_nested_isolation_is_an_error(app: flask.Flask, db: SessionORM) -> None:
    """db.isolation() cannot be nested for one app, and the outer one still
    rolls back.
    """
    with db.isolation(app):
        with app.app_context():
            db.session.add(Item(name="a"))
            db.session.commit()
        with pytest.raises(RuntimeError, match="already active"):
            with db.isolation(app):
                pass
    assert count_items(db, app) == 0


def test_requests_and_test_body_see_each_others_commits(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """The test body and requests share the isolated transaction: each sees
    what the other committed.
    """
    add_views(app, db)
    with db.isolation(app), app.app_context():
        db.session.add(Item(name="from-test"))
        db.session.commit()
        assert names(client) == ["from-test"]
        client.post("/add/from-view")
        assert set(db.session.scalars(sa.select(Item.name))) == {
            "from-test",
            "from-view",
        }
    assert count_items(db, app) == 0


def test_view_that_raises_rolls_back_only_its_own_work(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view that raises loses its own writes, not what earlier requests
    committed inside the isolation.
    """
    add_views(app, db)
    with db.isolation(app):
        client.post("/add/a")
        with pytest.raises(ValueError, match="the view failed"):
            client.post("/raise/b")
        assert names(client) == ["a"]
        client.post("/add/c")
        assert names(client) == ["a", "c"]
    assert count_items(db, app) == 0


def test_error_response_rolls_back_only_its_own_work(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A request that ends with a 400 loses its own writes inside the isolation."""
    add_views(app, db)
    with db.isolation(app):
        client.post("/add/a")
        assert client.post("/reject/b").status_code == 400
        assert names(client) == ["a"]
    assert count_items(db, app) == 0


def test_failed_commit_rolls_back_only_that_request(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A commit that fails (a unique violation) undoes that request only; the
    transaction stays usable for the next requests.
    """
    add_views(app, db)
    with db.isolation(app):
        client.post("/add/a")
        with pytest.raises(sa_exc.IntegrityError):
            client.post("/add/a")
        client.post("/add/b")
        assert names(client) == ["a", "b"]
    assert count_items(db, app) == 0


def test_commits_and_rollbacks_inside_a_view(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A view's own commit() keeps its work and its own rollback() drops it,
    even when the view fails afterwards.
    """

    @app.post("/steps")
    def steps() -> str:
        db.session.add(Item(name="rolled-back"))
        db.session.flush()
        db.session.rollback()
        db.session.add(Item(name="committed"))
        db.session.commit()
        db.session.add(Item(name="lost"))
        db.session.flush()
        raise ValueError("after the commit")

    add_views(app, db)
    with db.isolation(app):
        with pytest.raises(ValueError, match="after the commit"):
            client.post("/steps")
        assert names(client) == ["committed"]
    assert count_items(db, app) == 0


def test_nested_savepoints_in_a_view(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Savepoints a view opens itself, nested two deep, keep or drop their work."""

    @app.post("/nested")
    def nested() -> str:
        db.session.add(Item(name="outer"))
        with db.session.begin_nested():
            db.session.add(Item(name="kept"))
            inner = db.session.begin_nested()
            db.session.add(Item(name="dropped"))
            db.session.flush()
            inner.rollback()
        with pytest.raises(sa_exc.IntegrityError):
            with db.session.begin_nested():
                db.session.add(Item(name="kept"))  # a duplicate: its flush fails
        return "nested"

    add_views(app, db)
    with db.isolation(app):
        assert client.post("/nested").status_code == 200
        assert names(client) == ["kept", "outer"]
    assert count_items(db, app) == 0


def test_sessionmaker_sessions_join_the_isolation(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Sessions that code opens itself with db.sessionmaker commit into the
    isolation too.
    """
    add_views(app, db)
    with db.isolation(app):
        with app.app_context():
            with db.sessionmaker() as session:
                session.add(Item(name="a"))
                session.commit()
            with db.sessionmaker.begin() as session:
                session.add(Item(name="b"))
        assert names(client) == ["a", "b"]
    assert count_items(db, app) == 0


def test_cli_command_joins_the_isolation(app: flask.Flask, db: SessionORM) -> None:
    """A CLI command run with the test CLI runner commits into the isolation."""

    @app.cli.command("add-item")
    def add_item() -> None:
        db.session.add(Item(name="from-cli"))
        db.session.commit()

    with db.isolation(app):
        result = app.test_cli_runner().invoke(args=["add-item"])
        assert result.exit_code == 0, result.output
        with app.app_context():
            assert list(db.session.scalars(sa.select(Item.name))) == ["from-cli"]
    assert count_items(db, app) == 0


def test_on_commit_runs_for_commits_inside_isolation(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """on_commit callbacks run when a view's commit succeeds inside isolation
    and not when it rolls back, as they would without it.
    """
    called: list[str] = []

    @app.post("/notify/<name>")
    def notify(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.on_commit(called.append, name)
        return "notified", 400 if name == "rejected" else 200

    with db.isolation(app):
        client.post("/notify/kept")
        client.post("/notify/rejected")
    assert called == ["kept"]
    assert count_items(db, app) == 0


def test_invalidate_in_a_view_discards_only_that_request(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """db.invalidate() in a view drops that request's work but leaves the
    isolated transaction working for the rest of the test.
    """
    add_views(app, db)
    with db.isolation(app):
        client.post("/add/a")
        assert client.post("/invalidate/b").status_code == 200
        client.post("/add/c")
        assert names(client) == ["a", "c"]
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0


def test_session_left_open_is_closed_on_exit(app: flask.Flask, db: SessionORM) -> None:
    """A session still open when the isolation ends is closed with it, and
    afterwards works on the real database again.
    """
    with app.app_context():
        with db.isolation(app):
            session = db.session
            session.add(Item(name="isolated"))
            session.flush()
        assert not session.in_transaction()
        assert db.session is session
        session.add(Item(name="real"))
        session.commit()
        assert list(session.scalars(sa.select(Item.name))) == ["real"]
        session.close()
    assert count_items(db, app) == 1
    assert checked_out(db, app) == 0


def test_unused_isolation_opens_no_connection(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """An isolation the test never writes through checks out no connection, and
    one that is used holds a single connection for all its requests.
    """
    add_views(app, db)
    with db.isolation(app):
        assert checked_out(db, app) == 0
        client.post("/add/a")
        client.post("/add/b")
        assert checked_out(db, app) == 1


def test_exception_in_block_still_rolls_back(app: flask.Flask, db: SessionORM) -> None:
    """An exception leaving the block propagates and the work is rolled back."""
    with pytest.raises(KeyError, match="escaped"):
        with db.isolation(app), app.app_context():
            db.session.add(Item(name="a"))
            db.session.commit()
            raise KeyError("escaped")
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0


# -- several engines -----------------------------------------------------------


class OtherBase(orm.DeclarativeBase):
    pass


class Note(OtherBase):
    __tablename__ = "iso_note"
    __bind_key__ = "other"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(50))


def second_database(backend: str, database_url: str, tmp_path: t.Any) -> str:
    """A URL for the second engine: another file on SQLite, otherwise the same
    server database under a URL that differs, so that it gets its own connection.
    """
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/other.db"
    query = {"application_name": "iso-other"}
    if backend == "mysql":
        query = {"charset": "utf8mb4"}
    url = sa.make_url(database_url).update_query_dict(query)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def two_engine_app(
    backend: str, database_url: str, tmp_path: t.Any
) -> t.Iterator[tuple[flask.Flask, SessionORM]]:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_ENGINES={
            "default": database_url,
            "other": second_database(backend, database_url, tmp_path),
        },
    )
    db = SessionORM(app)
    with app.app_context():
        for base in (Item.__base__, OtherBase):
            db.drop_all(base)
            db.create_all(base)
    yield app, db
    with app.app_context():
        for base in (Item.__base__, OtherBase):
            db.drop_all(base)
        for engine in db.engines.values():
            engine.dispose()


def count_notes(db: SessionORM, app: flask.Flask) -> int:
    """How many notes are stored, read through a fresh connection."""
    with app.app_context(), db.get_engine("other").connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(Note)) or 0


def test_several_engines(two_engine_app: tuple[flask.Flask, SessionORM]) -> None:
    """Writes to every engine of the app are isolated together, one connection
    each.
    """
    app, db = two_engine_app

    @app.post("/both")
    def both() -> str:
        db.session.add(Item(name="a"))
        db.session.add(Note(text="n"))
        return "both"

    @app.get("/counts")
    def counts() -> list[int]:
        return [
            db.session.scalar(sa.select(sa.func.count(Item.id))) or 0,
            db.session.scalar(sa.select(sa.func.count(Note.id))) or 0,
        ]

    client = app.test_client()
    with db.isolation(app):
        assert client.post("/both").status_code == 200
        assert client.get("/counts").json == [1, 1]
        assert checked_out(db, app) == 2
    assert count_items(db, app) == 0
    assert count_notes(db, app) == 0
    assert checked_out(db, app) == 0


def test_engines_on_one_database_share_the_isolation(
    database_url: str, tmp_path: t.Any
) -> None:
    """Two engines configured with the same database (a replica pointed at the
    primary in tests) see each other's commits inside isolation.
    """
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_ENGINES={"default": database_url, "replica": database_url},
    )
    db = SessionORM(app)

    @app.post("/write")
    def write() -> str:
        db.session.add(Item(name="written"))
        return "written"

    @app.get("/read")
    def read() -> list[str]:
        statement = sa.select(Item.name)
        replica = db.get_engine("replica")
        return list(db.session.scalars(statement, bind_arguments={"bind": replica}))

    with app.app_context():
        db.drop_all(Item.__base__)
        db.create_all(Item.__base__)
    try:
        client = app.test_client()
        with db.isolation(app):
            client.post("/write")
            assert client.get("/read").json == ["written"]
            assert checked_out(db, app) == 1
        assert count_items(db, app) == 0
    finally:
        with app.app_context():
            db.drop_all(Item.__base__)
            for engine in db.engines.values():
                engine.dispose()


def test_autocommit_engine_is_isolated(database_url: str, tmp_path: t.Any) -> None:
    """An engine configured with isolation_level="AUTOCOMMIT" is isolated too,
    and autocommits again once the isolation is over.
    """
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_DATABASE_URL=database_url,
        SESSION_ORM_ENGINE_OPTIONS={"isolation_level": "AUTOCOMMIT"},
    )
    db = SessionORM(app)
    add_views(app, db)
    with app.app_context():
        db.drop_all(Item.__base__)
        db.create_all(Item.__base__)
    try:
        client = app.test_client()
        with db.isolation(app):
            client.post("/add/a")
            with pytest.raises(ValueError, match="the view failed"):
                client.post("/raise/b")
            assert names(client) == ["a"]
        assert count_items(db, app) == 0
        with app.app_context(), db.engine.connect() as connection:
            connection.execute(sa.insert(Item).values(name="autocommitted"))
        assert count_items(db, app) == 1
    finally:
        with app.app_context():
            db.drop_all(Item.__base__)
            db.engine.dispose()


# -- DDL -----------------------------------------------------------------------


class DDLBase(orm.DeclarativeBase):
    pass


class Scratch(DDLBase):
    __tablename__ = "iso_scratch"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


def has_scratch_table(db: SessionORM, app: flask.Flask) -> bool:
    """Whether the scratch table exists, seen through a fresh connection."""
    with app.app_context(), db.engine.connect() as connection:
        return sa.inspect(connection).has_table(Scratch.__tablename__)


def test_create_all_inside_isolation_is_rolled_back(
    backend: str, app: flask.Flask, db: SessionORM
) -> None:
    """On backends with transactional DDL, tables created inside the isolation
    are usable in it and gone after it.
    """
    if backend == "mysql":
        pytest.skip("MySQL and MariaDB commit DDL implicitly")
    with app.app_context():
        db.drop_all(DDLBase)
    with db.isolation(app), app.app_context():
        db.create_all(DDLBase)
        db.session.add(Scratch())
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count(Scratch.id))) == 1
    assert not has_scratch_table(db, app)


def test_ddl_inside_isolation_is_refused_on_mysql(
    backend: str, app: flask.Flask, db: SessionORM
) -> None:
    """On MySQL/MariaDB, where DDL commits implicitly, DDL inside the isolation
    is refused with a clear error before it can keep the test's writes.
    """
    if backend != "mysql":
        pytest.skip("only MySQL and MariaDB commit DDL implicitly")
    with app.app_context():
        db.drop_all(DDLBase)
    with db.isolation(app), app.app_context():
        db.session.add(Item(name="a"))
        db.session.commit()
        with pytest.raises(RuntimeError, match="MySQL and MariaDB commit the open"):
            db.create_all(DDLBase)
        with pytest.raises(RuntimeError, match="cannot run TRUNCATE statements"):
            db.session.execute(sa.text(f"TRUNCATE TABLE {Item.__tablename__}"))
    assert not has_scratch_table(db, app)
    assert count_items(db, app) == 0


# -- SQLite specifics ----------------------------------------------------------


def sqlite_app(url: str, tmp_path: t.Any) -> tuple[flask.Flask, SessionORM]:
    """An app with one SQLite engine and ``add_views``."""
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SESSION_ORM_DATABASE_URL=url)
    db = SessionORM(app)
    add_views(app, db)
    return app, db


def test_sqlite_memory_database(tmp_path: t.Any) -> None:
    """An in-memory SQLite database (one shared connection) is isolated too, with
    no context pushed around the isolation.
    """
    app, db = sqlite_app("sqlite://", tmp_path)
    assert not flask.has_app_context()
    with app.app_context():
        db.create_all(Item.__base__)
    client = app.test_client()
    with db.isolation(app):
        client.post("/add/a")
        with pytest.raises(ValueError, match="the view failed"):
            client.post("/raise/b")
        assert names(client) == ["a"]
    assert names(client) == []


def test_sqlite_app_that_emits_its_own_begin(tmp_path: t.Any) -> None:
    """An app that already applies SQLAlchemy's SQLite savepoint recipe (driver
    transactions off, BEGIN on the "begin" event) is isolated without a second
    BEGIN, and keeps its own transactions afterwards.
    """
    app, db = sqlite_app(f"sqlite:///{tmp_path}/recipe.db", tmp_path)
    with app.app_context():
        engine = db.engine

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: t.Any, record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    with app.app_context():
        db.create_all(Item.__base__)
    client = app.test_client()
    with db.isolation(app):
        client.post("/add/a")
        with pytest.raises(ValueError, match="the view failed"):
            client.post("/raise/b")
        assert names(client) == ["a"]
    assert names(client) == []
    client.post("/add/c")
    assert names(client) == ["c"]
    engine.dispose()


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sqlite3's autocommit attribute is 3.12+"
)
@pytest.mark.parametrize("autocommit", [False, True])
def test_sqlite_autocommit_attribute(tmp_path: t.Any, autocommit: bool) -> None:
    """Python 3.12's sqlite3 autocommit modes, chosen through connect_args, are
    isolated with working savepoints.
    """
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_DATABASE_URL=f"sqlite:///{tmp_path}/autocommit.db",
        SESSION_ORM_ENGINE_OPTIONS={"connect_args": {"autocommit": autocommit}},
    )
    db = SessionORM(app)
    add_views(app, db)
    with app.app_context():
        with db.engine.begin() as connection:
            Item.metadata.create_all(connection)
    client = app.test_client()
    with db.isolation(app):
        client.post("/add/a")
        with pytest.raises(ValueError, match="the view failed"):
            client.post("/raise/b")
        assert names(client) == ["a"]
    assert count_items(db, app) == 0
    with app.app_context():
        db.engine.dispose()
