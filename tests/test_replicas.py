"""Read replicas: the routing rules, on two SQLite files.

The "replica" is a second SQLite file that never receives the primary's
writes, so every read says which database answered it: each file has a table
``orm_where`` whose one row names it. The tests against a real PostgreSQL
streaming standby are in ``test_replicas_standby.py``.
"""

from __future__ import annotations

import logging
import typing as t

import flask
import flask.views
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import Session
from flask_session_orm import SessionORM
from flask_session_orm._replicas import ReplicaSession


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "orm_replica_note"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(50))


WHERE = sa.text("SELECT name FROM orm_where")


def make_database(url: str, name: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.exec_driver_sql("CREATE TABLE orm_where (name TEXT)")
        connection.exec_driver_sql("INSERT INTO orm_where VALUES (?)", (name,))
    engine.dispose()


@pytest.fixture
def urls(tmp_path: t.Any) -> tuple[str, str]:
    primary = f"sqlite:///{tmp_path}/primary.db"
    replica = f"sqlite:///{tmp_path}/replica.db"
    make_database(primary, "primary")
    make_database(replica, "replica")
    return primary, replica


def make_app(urls: tuple[str, str], **config: t.Any) -> tuple[flask.Flask, SessionORM]:
    app = flask.Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_ORM_DATABASE_URL=urls[0],
        SESSION_ORM_REPLICAS={"default": [urls[1]]},
    )
    app.config.update(config)
    db = SessionORM(app)

    @app.route("/where", methods=["GET", "POST", "PUT"])
    def where() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    return app, db


@pytest.fixture
def app_db(urls: tuple[str, str]) -> t.Iterator[tuple[flask.Flask, SessionORM]]:
    app, db = make_app(urls)
    yield app, db
    with app.app_context():
        for engine in (*db.engines.values(), *db.replica_engines["default"]):
            engine.dispose()


def test_get_reads_from_the_replica(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """A GET request that only reads uses the replica."""
    app, _db = app_db
    assert app.test_client().get("/where").text == "replica"


def test_write_then_read_stays_on_the_primary(
    app_db: tuple[flask.Flask, SessionORM],
) -> None:
    """After a flush, every read of the request goes to the primary, and the
    write is committed there."""
    app, db = app_db
    seen = []

    @app.get("/write")
    def write() -> str:
        seen.append(db.session.scalar(WHERE))
        db.session.add(Note(text="x"))
        db.session.flush()
        seen.append(db.session.scalar(WHERE))
        seen.append(db.session.scalar(sa.select(sa.func.count(Note.id))))
        return "ok"

    assert app.test_client().get("/write").status_code == 200
    assert seen == ["replica", "primary", 1]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Note.id))) == 1


@pytest.mark.parametrize(
    "statement",
    [
        sa.update(Note).values(text="y"),
        sa.insert(Note).values(text="y"),
        sa.delete(Note),
        sa.select(Note).with_for_update(),
        sa.text("UPDATE orm_replica_note SET text = 'y'"),
        sa.text("SELECT * FROM orm_replica_note FOR SHARE"),
    ],
    ids=["update", "insert", "delete", "for-update", "text-update", "text-for-share"],
)
def test_writing_statements_go_to_the_primary(
    app_db: tuple[flask.Flask, SessionORM], statement: t.Any
) -> None:
    """DML, locking selects and text that is not a plain read run on the
    primary, and the reads after them too."""
    app, db = app_db
    seen = []
    # SQLite has no FOR UPDATE/SHARE: compile the routing only.
    runs = not isinstance(statement, sa.TextClause) or "SHARE" not in statement.text

    @app.get("/dml")
    def dml() -> str:
        seen.append(db.session.scalar(WHERE))
        bind = db.session.get_bind(clause=statement)
        if runs:
            db.session.execute(statement)
        seen.append(db.session.get_bind(clause=WHERE) is bind)
        seen.append(db.session.scalar(WHERE))
        return "ok"

    assert app.test_client().get("/dml").status_code == 200
    assert seen == ["replica", True, "primary"]


def test_explicit_connection_goes_to_the_primary(
    app_db: tuple[flask.Flask, SessionORM],
) -> None:
    """db.session.connection() returns a primary connection, and later reads
    use the primary."""
    app, db = app_db
    seen = []

    @app.get("/connection")
    def connection() -> str:
        seen.append(db.session.connection().scalar(WHERE))
        seen.append(db.session.scalar(WHERE))
        return "ok"

    app.test_client().get("/connection")
    assert seen == ["primary", "primary"]


def test_other_methods_start_on_the_primary(
    app_db: tuple[flask.Flask, SessionORM],
) -> None:
    """POST and PUT read from the primary; HEAD and OPTIONS may use a replica."""
    app, _db = app_db
    client = app.test_client()
    assert client.post("/where").text == "primary"
    assert client.put("/where").text == "primary"
    assert client.get("/where").text == "replica"


def test_replica_methods_are_configurable(urls: tuple[str, str]) -> None:
    """SESSION_ORM_REPLICA_METHODS lists the methods that may start on a replica."""
    app, _db = make_app(urls, SESSION_ORM_REPLICA_METHODS=["post"])
    client = app.test_client()
    assert client.post("/where").text == "replica"
    assert client.get("/where").text == "primary"


def test_view_and_blueprint_marks(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """@db.primary_only and @db.replica_ok on a view, a view class or a
    blueprint decide, and a view's mark wins over its blueprint's."""
    app, db = app_db

    @app.get("/primary")
    @db.primary_only
    def primary() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    @app.post("/search")
    @db.replica_ok
    def search() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    @db.primary_only
    class Where(flask.views.View):
        def dispatch_request(self) -> str:
            return t.cast(str, db.session.scalar(WHERE))

    app.add_url_rule("/class", view_func=Where.as_view("where_class"))

    admin = db.primary_only(flask.Blueprint("admin", __name__))

    @admin.get("/admin/where")
    def admin_where() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    @admin.get("/admin/report")
    @db.replica_ok
    def admin_report() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    app.register_blueprint(admin)
    client = app.test_client()
    assert client.get("/primary").text == "primary"
    assert client.post("/search").text == "replica"
    assert client.get("/class").text == "primary"
    assert client.get("/admin/where").text == "primary"
    assert client.get("/admin/report").text == "replica"


def test_context_managers(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """db.primary() sends the reads to the primary (and the request stays
    there); db.replica() lets a POST read from a replica until it writes."""
    app, db = app_db
    seen = []

    @app.get("/primary-block")
    def primary_block() -> str:
        with db.primary():
            seen.append(db.session.scalar(WHERE))
        seen.append(db.session.scalar(WHERE))
        return "ok"

    @app.post("/replica-block")
    def replica_block() -> str:
        with db.replica():
            seen.append(db.session.scalar(WHERE))
            db.session.add(Note(text="x"))
            db.session.flush()
            seen.append(db.session.scalar(WHERE))
        return "ok"

    @app.get("/decorated")
    @db.primary()
    def decorated() -> str:
        return t.cast(str, db.session.scalar(WHERE))

    client = app.test_client()
    client.get("/primary-block")
    client.post("/replica-block")
    assert seen == ["primary", "primary", "replica", "primary"]
    assert client.get("/decorated").text == "primary"


def test_outside_requests(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """Outside requests the primary is used, unless inside db.replica(), where
    a write still sends the rest of the transaction to the primary."""
    app, db = app_db
    with app.app_context():
        assert db.session.scalar(WHERE) == "primary"
        db.session.commit()
        with db.replica():
            assert db.session.scalar(WHERE) == "replica"
            db.session.add(Note(text="job"))
            assert db.session.scalar(sa.select(sa.func.count(Note.id))) == 1
            assert db.session.scalar(WHERE) == "primary"
        db.session.commit()
        with db.replica():
            # A new transaction may read from the replica again.
            assert db.session.scalar(WHERE) == "replica"
        db.session.rollback()
        with db.sessionmaker() as session:
            assert session.scalar(WHERE) == "primary"


def test_own_writes_pin_the_client_to_the_primary(
    app_db: tuple[flask.Flask, SessionORM],
) -> None:
    """After a request committed writes, the client's signed cookie keeps its
    reads on the primary (SQLite has no replay position: for the sticky
    window); another client, or a forged cookie, still reads the replica."""
    app, db = app_db

    @app.post("/notes")
    def add_note() -> tuple[str, int]:
        db.session.add(Note(text="mine"))
        return "created", 201

    client = app.test_client()
    assert client.get("/where").text == "replica"
    response = client.post("/notes")
    assert response.status_code == 201
    cookie = client.get_cookie("session_orm_rw")
    assert cookie is not None and cookie.http_only
    assert len(cookie.value) < 80
    assert client.get("/where").text == "primary"
    assert app.test_client().get("/where").text == "replica"
    forged = app.test_client()
    forged.set_cookie("session_orm_rw", cookie.value[:-2] + "xx")
    assert forged.get("/where").text == "replica"


def test_no_cookie_without_a_write(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """A request that committed no write, or rolled back, sets no cookie."""
    app, db = app_db

    @app.post("/fails")
    def fails() -> tuple[str, int]:
        db.session.add(Note(text="lost"))
        return "no", 400

    client = app.test_client()
    client.post("/where")
    client.post("/fails")
    assert client.get_cookie("session_orm_rw") is None
    assert client.get("/where").text == "replica"


def test_isolation_uses_the_primary(app_db: tuple[flask.Flask, SessionORM]) -> None:
    """Inside db.isolation() requests and test code read from the primary,
    so they see the test's data."""
    app, db = app_db
    with db.isolation(app), app.app_context():
        assert app.test_client().get("/where").text == "primary"
        with db.replica():
            assert db.session.scalar(WHERE) == "primary"


def test_replica_down_falls_back_to_the_primary(
    urls: tuple[str, str], tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that cannot be connected to is skipped with a warning; the
    request reads from the next replica or the primary without an error."""
    missing = f"sqlite:///{tmp_path}/no/such/dir/replica.db"
    app, _db = make_app((urls[0], missing))
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        assert client.get("/where").text == "primary"
        assert client.get("/where").text == "primary"
    warnings = [r for r in caplog.records if "Read replica" in r.getMessage()]
    assert len(warnings) == 1
    assert "default (replica 1) failed" in warnings[0].getMessage()
    app, _db = make_app(urls, SESSION_ORM_REPLICAS={"default": [missing, urls[1]]})
    client = app.test_client()
    assert {client.get("/where").text for _ in range(4)} == {"replica"}


def test_replicas_take_turns(urls: tuple[str, str], tmp_path: t.Any) -> None:
    """Several healthy replicas are used in turn."""
    second = f"sqlite:///{tmp_path}/second.db"
    make_database(second, "second")
    app, _db = make_app(urls, SESSION_ORM_REPLICAS={"default": [urls[1], second]})
    client = app.test_client()
    assert sorted(client.get("/where").text for _ in range(4)) == [
        "replica",
        "replica",
        "second",
        "second",
    ]


def test_without_replicas_nothing_changes(urls: tuple[str, str]) -> None:
    """An app without replicas uses the plain Session class and no extra
    request wrapper."""
    app = flask.Flask(__name__)
    app.config["SESSION_ORM_DATABASE_URL"] = urls[0]
    db = SessionORM(app)
    with app.app_context():
        assert isinstance(db.session, Session)
        assert not isinstance(db.session, ReplicaSession)
        assert db.replica_engines == {}
    wrapper = app.full_dispatch_request
    assert wrapper.__module__ == "flask_session_orm._scope"
    app, db = make_app(urls)
    with app.app_context():
        assert isinstance(db.session, ReplicaSession)


def test_replicas_inherit_options_and_connect_lazily(urls: tuple[str, str]) -> None:
    """A replica gets its primary's engine options, overridden by its own, and
    init_app connects to none of them."""
    app = flask.Flask(__name__)
    app.config.update(
        SESSION_ORM_ENGINES={"default": {"url": urls[0], "echo": True}},
        SESSION_ORM_REPLICAS={
            "default": [urls[1], {"url": urls[1], "echo": False}],
        },
    )
    db = SessionORM(app)
    with app.app_context():
        first, second = db.replica_engines["default"]
        assert first.echo is True and second.echo is False
        assert first.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert first.pool.status().startswith("Pool size")


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"SESSION_ORM_REPLICAS": ["x"]}, TypeError, "'SESSION_ORM_REPLICAS' must"),
        (
            {"SESSION_ORM_REPLICAS": {"other": ["sqlite://"]}},
            ValueError,
            "unknown engine 'other'",
        ),
        (
            {"SESSION_ORM_REPLICAS": {"default": 3}},
            TypeError,
            r"SESSION_ORM_REPLICAS\['default'\]' must be a list",
        ),
        (
            {"SESSION_ORM_REPLICAS": {"default": ["postgresql://u:secret@h:x/d"]}},
            ValueError,
            r"SESSION_ORM_REPLICAS\['default'\]\[0\]. is not a valid database URL",
        ),
        (
            {
                "SESSION_ORM_REPLICAS": {"default": ["sqlite://"]},
                "SESSION_ORM_REPLICA_METHODS": "GET",
            },
            TypeError,
            "'SESSION_ORM_REPLICA_METHODS' must be a list",
        ),
        (
            {
                "SESSION_ORM_REPLICAS": {"default": ["sqlite://"]},
                "SESSION_ORM_REPLICA_MAX_LAG_SECONDS": -1,
            },
            ValueError,
            "'SESSION_ORM_REPLICA_MAX_LAG_SECONDS' must be a finite number",
        ),
        (
            {
                "SESSION_ORM_REPLICAS": {"default": ["sqlite://"]},
                "SESSION_ORM_REPLICA_RETRY_SECONDS": None,
            },
            TypeError,
            "'SESSION_ORM_REPLICA_RETRY_SECONDS' must be a number of seconds",
        ),
        (
            {
                "SESSION_ORM_REPLICAS": {"default": ["sqlite://"]},
                "SESSION_ORM_REPLICA_COOKIE": "a b",
            },
            ValueError,
            "'SESSION_ORM_REPLICA_COOKIE' must be a cookie name",
        ),
    ],
)
def test_config_errors(
    config: dict[str, t.Any], error: type[Exception], match: str
) -> None:
    """Bad replica settings are refused by init_app, naming the key, without
    showing a password."""
    app = flask.Flask(__name__)
    app.config.update(SESSION_ORM_DATABASE_URL="sqlite://", **config)
    with pytest.raises(error, match=match) as info:
        SessionORM(app)
    assert "secret" not in str(info.value)


def test_replica_engine_error_hides_the_password() -> None:
    """A replica whose engine cannot be created is named by its key, without
    its password."""
    app = flask.Flask(__name__)
    app.config.update(
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_REPLICAS={"default": ["nosuchdialect://u:secret@h/d"]},
    )
    with pytest.raises(ValueError, match=r"REPLICAS\['default'\]\[0\]") as info:
        SessionORM(app)
    assert "secret" not in str(info.value)


class Audit(Base):
    __tablename__ = "orm_replica_audit"
    __bind_key__ = "audit"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(50))


def test_several_engines(urls: tuple[str, str], tmp_path: t.Any) -> None:
    """With two engines, one of them replicated, a request that read from the
    replica and then wrote to both commits both, in order; the replica's
    read-only connection is not part of the commit."""
    audit = f"sqlite:///{tmp_path}/audit.db"
    make_database(audit, "audit")
    app, db = make_app(urls, SESSION_ORM_ENGINES={"audit": audit}, SESSION_ORM_BINDS={})

    @app.get("/both")
    def both() -> str:
        where = t.cast(str, db.session.scalar(WHERE))
        db.session.add(Audit(text=where))
        db.session.flush()
        db.session.add(Note(text=where))
        return where

    assert app.test_client().get("/both").text == "replica"
    with app.app_context():
        assert db.session.scalars(sa.select(Note.text)).all() == ["replica"]
        assert db.session.scalars(sa.select(Audit.text)).all() == ["replica"]
