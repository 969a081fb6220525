"""The benchmarked Flask apps: one model, the same views, one app per variant.

Every variant serves the same four views over the same mapped class:

``GET /noop``
    Returns a string; the database is never touched.
``GET /read``
    Loads one row by primary key.
``POST /write``
    Inserts one row, committed (by the extension, or explicitly in the view for
    the peers that never commit for the user).
``GET /read-many``
    Ten primary-key loads in one request (ten queries).

The engine options are passed identically to every variant, so the only
difference between two variants is how they manage the session.
"""

from __future__ import annotations

import json
import os
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

VARIANTS = (
    "flask-only",
    "hand-written",
    "flask-sqlalchemy",
    "flask-sqlalchemy-lite",
    "flask-session-orm",
)
#: The variants that use a database: each also has a "(defaults)" row.
DATABASE_VARIANTS = VARIANTS[1:]
#: A variant's name with this suffix is that variant as configured by default:
#: no engine options at all, so each applies its own defaults (for
#: flask-session-orm on a network database, the idle ping).
DEFAULTS = " (defaults)"
#: flask-session-orm pinging at every checkout (pool_pre_ping=True, its
#: default before SESSION_ORM_PING_IDLE_AFTER): what "always" costs.
PRE_PING_VARIANT = "flask-session-orm (pool_pre_ping=True)"
#: Flask-SQLAlchemy with its read views committing too: the same SQL as the
#: variants that commit every successful request, for the read scenarios.
FSA_COMMIT_VARIANT = "flask-sqlalchemy (commit reads)"
#: Flask alone with one empty teardown_request function: what Flask charges
#: every request for calling a teardown function, whatever it does.
TEARDOWN_VARIANT = "flask-only (one teardown)"
#: flask-session-orm with one read replica (the same database, as a second
#: engine): what the routing costs a request that reads from the replica.
REPLICA_VARIANT = "flask-session-orm (one replica)"
SCENARIOS = ("noop", "read", "write", "read-many")
#: The method and path of each scenario.
ROUTES = {
    "noop": ("GET", "/noop"),
    "read": ("GET", "/read"),
    "write": ("POST", "/write"),
    "read-many": ("GET", "/read-many"),
}
TABLE = "bench_item"
#: Rows the read views load; seeded before any run.
SEED_ROWS = 10

GetSession = t.Callable[[], orm.Session]


class Base(orm.DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = TABLE

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))


class Variant:
    """A built app and how to release its engines."""

    def __init__(self, app: flask.Flask, engines: t.Callable[[], t.Iterable[t.Any]]):
        self.app = app
        self._engines = engines

    def dispose(self) -> None:
        with self.app.app_context():
            for engine in self._engines():
                engine.dispose()


def prepare_database(url: str) -> None:
    """Create the benchmark table afresh and seed the rows the views read."""
    engine = sa.create_engine(url)
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        # Ids come from the table's own sequence, so that the write scenario's
        # inserts continue after them on every backend.
        with orm.Session(engine) as session, session.begin():
            for i in range(1, SEED_ROWS + 1):
                session.add(Item(name=f"item {i}"))
                session.flush()
        with orm.Session(engine) as session:
            ids = session.scalars(sa.select(Item.id).order_by(Item.id)).all()
        if list(ids) != list(range(1, SEED_ROWS + 1)):
            raise RuntimeError(f"Seeding {TABLE!r} gave the ids {ids}, not 1..10.")
    finally:
        engine.dispose()


def add_views(
    app: flask.Flask,
    get_session: GetSession | None,
    *,
    explicit_commit: bool,
    commit_reads: bool = False,
    model: type[t.Any] = Item,
) -> None:
    """Register the scenario views; ``get_session`` None registers only ``noop``.

    ``explicit_commit``: the write view commits; ``commit_reads``: the read
    views commit too.
    """

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    if get_session is None:
        return

    @app.get("/read")
    def read() -> str:
        session = get_session()
        name = str(session.get(model, 1).name)
        if commit_reads:
            session.commit()
        return name

    @app.post("/write")
    def write() -> str:
        session = get_session()
        session.add(model(name="written"))
        if explicit_commit:
            session.commit()
        return "ok"

    @app.get("/read-many")
    def read_many() -> str:
        session = get_session()
        names = ",".join(
            str(session.get(model, i).name) for i in range(1, SEED_ROWS + 1)
        )
        if commit_reads:
            session.commit()
        return names


def _flask(instance_path: str) -> flask.Flask:
    return flask.Flask(__name__, instance_path=instance_path)


def flask_only(url: str, options: dict[str, t.Any], instance_path: str) -> Variant:
    """No database at all: the floor for ``noop``."""
    app = _flask(instance_path)
    add_views(app, None, explicit_commit=False)
    return Variant(app, list)


def flask_one_teardown(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """No database, one ``teardown_request`` function that does nothing."""
    variant = flask_only(url, options, instance_path)

    @variant.app.teardown_request
    def nothing(exc: BaseException | None) -> None:
        pass

    return variant


def hand_written(url: str, options: dict[str, t.Any], instance_path: str) -> Variant:
    """The minimal correct integration a user would write by hand: a session on
    first use, committed in ``after_request`` when the status is below 400,
    closed in teardown.
    """
    app = _flask(instance_path)
    engine = sa.create_engine(url, **options)
    factory = orm.sessionmaker(engine)

    def get_session() -> orm.Session:
        session: orm.Session | None = flask.g.get("_bench_session")
        if session is None:
            session = flask.g._bench_session = factory()
        return session

    @app.after_request
    def commit(response: flask.Response) -> flask.Response:
        session: orm.Session | None = flask.g.get("_bench_session")
        if session is not None and response.status_code < 400:
            session.commit()
        return response

    @app.teardown_appcontext
    def close(exc: BaseException | None) -> None:
        session: orm.Session | None = flask.g.pop("_bench_session", None)
        if session is not None:
            session.close()

    add_views(app, get_session, explicit_commit=False)
    return Variant(app, lambda: [engine])


def flask_sqlalchemy(
    url: str,
    options: dict[str, t.Any],
    instance_path: str,
    *,
    commit_reads: bool = False,
) -> Variant:
    """Flask-SQLAlchemy 3.1: never commits for the user, so the view commits."""
    from flask_sqlalchemy import SQLAlchemy

    app = _flask(instance_path)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_ENGINE_OPTIONS=options)
    db = SQLAlchemy(app)
    add_views(app, lambda: db.session, explicit_commit=True, commit_reads=commit_reads)
    return Variant(app, lambda: db.engines.values())


def flask_sqlalchemy_commit_reads(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """Flask-SQLAlchemy 3.1 with every view committing, reads included."""
    return flask_sqlalchemy(url, options, instance_path, commit_reads=True)


def flask_sqlalchemy_lite(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """Flask-SQLAlchemy-Lite 0.2: never commits for the user, so the view commits."""
    from flask_sqlalchemy_lite import SQLAlchemy

    app = _flask(instance_path)
    app.config.update(SQLALCHEMY_ENGINES={"default": {"url": url, **options}})
    db = SQLAlchemy(app)
    add_views(app, lambda: db.session, explicit_commit=True)
    return Variant(app, lambda: db.engines.values())


def flask_session_orm(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """flask-session-orm: commits for the user when the request succeeded."""
    from flask_session_orm import SessionORM

    app = _flask(instance_path)
    app.config.update(SESSION_ORM_DATABASE_URL=url, SESSION_ORM_ENGINE_OPTIONS=options)
    db = SessionORM(app)
    add_views(app, lambda: db.session, explicit_commit=False)
    return Variant(app, lambda: db.engines.values())


def flask_session_orm_pre_ping(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """flask-session-orm pinging every connection at checkout."""
    return flask_session_orm(url, {**options, "pool_pre_ping": True}, instance_path)


def flask_session_orm_replica(
    url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """flask-session-orm reading from a replica: the same database, so that
    only the routing differs.
    """
    from flask_session_orm import SessionORM

    app = _flask(instance_path)
    app.config.update(
        SESSION_ORM_DATABASE_URL=url,
        SESSION_ORM_ENGINE_OPTIONS=options,
        SESSION_ORM_REPLICAS={"default": [url]},
    )
    db = SessionORM(app)
    add_views(app, lambda: db.session, explicit_commit=False)

    def engines() -> t.Iterable[sa.Engine]:
        return [*db.engines.values(), *db.replica_engines["default"]]

    return Variant(app, engines)


FACTORIES: dict[str, t.Callable[[str, dict[str, t.Any], str], Variant]] = {
    "flask-only": flask_only,
    "hand-written": hand_written,
    "flask-sqlalchemy": flask_sqlalchemy,
    "flask-sqlalchemy-lite": flask_sqlalchemy_lite,
    "flask-session-orm": flask_session_orm,
    PRE_PING_VARIANT: flask_session_orm_pre_ping,
    FSA_COMMIT_VARIANT: flask_sqlalchemy_commit_reads,
    TEARDOWN_VARIANT: flask_one_teardown,
    REPLICA_VARIANT: flask_session_orm_replica,
}


def build(
    variant: str, url: str, options: dict[str, t.Any], instance_path: str
) -> Variant:
    """Build the app of ``variant`` on the database ``url``; a name ending in
    :data:`DEFAULTS` gets no engine options (its own defaults).
    """
    if variant.endswith(DEFAULTS):
        return FACTORIES[variant.removesuffix(DEFAULTS)](url, {}, instance_path)
    return FACTORIES[variant](url, dict(options), instance_path)


# -- scale: many engines, many models ---------------------------------------------


def scaled_models(count: int, engine_names: t.Sequence[str]) -> type[t.Any]:
    """A new declarative base with ``count`` mapped models; returns the one the
    views read (mapped on the seeded table, on the default engine). The others
    are spread over ``engine_names`` with ``__bind_key__``.
    """

    class ScaleBase(orm.DeclarativeBase):
        pass

    class ScaleItem(ScaleBase):
        __tablename__ = TABLE

        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(sa.String(50))

    for i in range(1, count):
        type(
            f"Model{i}",
            (ScaleBase,),
            {
                "__tablename__": f"bench_model_{i}",
                "__bind_key__": engine_names[i % len(engine_names)],
                "id": orm.mapped_column(sa.Integer, primary_key=True),
                "value": orm.mapped_column(sa.String(50)),
            },
        )
    orm.configure_mappers()
    return ScaleItem


def scaled_app(
    engine_urls: t.Mapping[str, str],
    models: int,
    options: dict[str, t.Any],
    instance_path: str,
) -> Variant:
    """flask-session-orm with the given engines and ``models`` mapped models."""
    from flask_session_orm import SessionORM

    model = scaled_models(models, list(engine_urls))
    app = _flask(instance_path)
    app.config.update(
        SESSION_ORM_ENGINES=dict(engine_urls), SESSION_ORM_ENGINE_OPTIONS=options
    )
    db = SessionORM(app)
    add_views(app, lambda: db.session, explicit_commit=False, model=model)
    return Variant(app, lambda: db.engines.values())


# -- gunicorn ---------------------------------------------------------------------


def from_env() -> flask.Flask:
    """The app gunicorn serves: variant, URL and options from the environment."""
    variant = build(
        os.environ["BENCH_VARIANT"],
        os.environ["BENCH_URL"],
        json.loads(os.environ.get("BENCH_ENGINE_OPTIONS", "{}")),
        os.environ["BENCH_INSTANCE_PATH"],
    )
    return variant.app
