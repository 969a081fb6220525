"""Read replicas: which engine a statement of a request reads from.

Everything here is used only by an app that configures ``SESSION_ORM_REPLICAS``:
its sessions are :class:`ReplicaSession` objects, and its
``full_dispatch_request`` gets one more wrapper (:func:`install`). An app without
replicas runs none of this code.

The rules, in the order :meth:`ReplicaSession.get_bind` applies them:

- Inside ``db.isolation()`` (tests) everything goes to the primary.
- A write (a flush, DML, DDL or ``SELECT ... FOR UPDATE/SHARE`` through the
  session, a text statement that is not a plain read, an explicit
  ``session.connection()``, a bulk operation) goes to the primary, and from then
  on every statement of the request (outside requests: of the transaction) goes
  there too. So the statements of a transaction that writes are on one
  connection, and no read lands on a replica between two writes.
- Reads go to a replica when the request may use one: its method is one of
  ``SESSION_ORM_REPLICA_METHODS`` or its view says ``@db.replica_ok``, its view
  does not say ``@db.primary_only``, it is not inside ``db.primary()``; outside
  requests only inside ``db.replica()``.
- A replica qualifies when it is not in its back-off after a failure, is not
  lagging more than ``SESSION_ORM_REPLICA_MAX_LAG_SECONDS`` (PostgreSQL), and,
  when the client's cookie says it wrote recently, has replayed the client's
  last commit (PostgreSQL: its replay LSN has reached the one in the cookie;
  other databases: never, until the cookie expires). Qualifying replicas take
  turns; with none, the primary.
- The replica chosen is checked out at once, so that a replica that is down is
  found before any statement runs on it: the request then falls back to the
  next replica or the primary, and the replica is skipped for
  ``SESSION_ORM_REPLICA_RETRY_SECONDS``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import typing as t

import flask
import itsdangerous
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask.globals import _cv_app
from flask.globals import _cv_request

from . import _scope
from ._replica_health import Replicas
from ._replica_health import one_line as _one_line
from ._session import Bind
from ._session import Session
from ._session import may_write

if t.TYPE_CHECKING:
    from ._config import ReplicaConfig
    from ._state import AppState

logger = logging.getLogger("flask_session_orm")

#: Where a request's :class:`Route` is kept, in its WSGI environ.
ROUTE_KEY = "flask_session_orm.route"
#: The attribute :meth:`.SessionORM.primary_only` and
#: :meth:`.SessionORM.replica_ok` set on a view, view class or blueprint.
READS_ATTRIBUTE = "_session_orm_reads"
_SALT = "flask-session-orm.replicas"
#: Stands for "the replica must replay everything": used when the primary's
#: position could not be read after a commit.
_UNKNOWN_LSN = 2**63 - 1

#: "primary" inside db.primary(), "replica" inside db.replica(), else None.
forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flask_session_orm_reads", default=None
)

_INSERT_LSN_SQL = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"


class Route:
    """Where the reads of one request (or of one transaction outside requests)
    go, and what it wrote.
    """

    #: Everything goes to the primary from now on.
    primary = False
    #: The current transaction wrote.
    wrote = False

    def __init__(self, allowed: bool, pins: dict[str, int]) -> None:
        #: Reads may start on a replica.
        self.allowed = allowed
        #: Engine name -> the position the client's last commit needs
        #: (0 for databases without positions), from its cookie.
        self.pins = pins
        #: Engine names used on the primary in the current transaction.
        self.used: set[str] = set()
        #: Engine names whose transaction committed writes in this request.
        self.committed: set[str] = set()


class ReplicaSession(Session):
    """The :class:`.Session` of an app with read replicas: reads go to a
    replica while the request has not written (see :doc:`replicas`).

    .. versionadded:: 0.1.0
    """

    #: The route of a session outside requests; reset with its transaction.
    _orm_own_route: Route | None = None
    #: (request context, its route) of the last lookup.
    _orm_route_cache: tuple[object, Route] | None = None
    #: Replica engine -> its connection in the current transaction.
    _orm_replica_connections: dict[sa.Engine, sa.Connection] | None = None

    def get_bind(
        self,
        mapper: t.Any = None,
        *,
        clause: sa.ClauseElement | None = None,
        bind: Bind | None = None,
        **kwargs: t.Any,
    ) -> Bind:
        target = super().get_bind(mapper, clause=clause, bind=bind, **kwargs)
        if bind is not None or self._orm_isolation is not None:
            return target
        state = self._orm_state
        name = state.engine_names.get(t.cast(sa.Engine, target))
        replicas = state.replicas.get(name) if name is not None else None
        if replicas is None:
            return target
        route = self._route()
        if clause is None:
            # A flush, a bulk operation or session.connection(), marked as a
            # write before they get here; or a question about a model's engine.
            if route.wrote:
                route.used.add(t.cast(str, name))
            return target
        if route.primary or may_write(clause):
            return self._use_primary(route, t.cast(str, name), target)
        mode = forced.get()
        if mode == "primary" or (mode is None and not route.allowed):
            return self._use_primary(route, t.cast(str, name), target)
        connections = self._orm_replica_connections
        if connections:
            # Keep reading from the replica this transaction already uses.
            for replica in replicas.replicas:
                connection = connections.get(replica.engine)
                if connection is not None:
                    return connection
        return self._checkout(route, replicas, target)

    def _use_primary(self, route: Route, name: str, target: Bind) -> Bind:
        route.primary = True
        route.used.add(name)
        return target

    def _checkout(self, route: Route, replicas: Replicas, primary: Bind) -> Bind:
        """Check out a qualifying replica's connection, or use the primary.

        The connection is the session's for the rest of the transaction, but
        the session joins it without committing it (it only reads): ending it
        is this class's job, when the session's transaction ends. So a replica
        that went away after the reads cannot fail the commit of what the
        request wrote on the primary.
        """
        config = t.cast("ReplicaConfig", self._orm_state.config.replicas)
        lsn = route.pins.get(replicas.name)
        lost = self.__dict__.get("_orm_lost", ())
        for replica in replicas.candidates(config, lsn):
            if any(connection.engine is replica.engine for connection in lost):
                # Its lost connection still belongs to this transaction, which
                # can hold one connection per engine.
                continue
            scope = _scope.peek()
            disconnected = scope.disconnected if scope is not None else False
            try:
                connection = replica.engine.connect()
            except (sa.exc.DBAPIError, sa.exc.TimeoutError) as e:
                # Nothing ran on it: the request is not affected by the failure
                # (SQLAlchemy's disconnect handling would otherwise mark it).
                if scope is not None:
                    scope.disconnected = disconnected
                replica.fail(config, e)
                continue
            # Begun here, so that the session joins this transaction instead of
            # taking it over: with join_transaction_mode "conditional_savepoint"
            # (the default) or "rollback_only", it never commits it.
            connection.begin()
            if self._orm_replica_connections is None:
                self._orm_replica_connections = {}
            self._orm_replica_connections[replica.engine] = connection
            return connection
        return self._use_primary(route, replicas.name, primary)

    def _execute_internal(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        # Session.execute(), scalar(), scalars(), get() and the ORM's loads all
        # run here (SQLAlchemy 2.0 and 2.1). A read that fails because its
        # replica went away (the connection is invalidated) is run again, on
        # the next replica or the primary: the client gets its answer, not an
        # error. What fails on the primary is raised as usual.
        try:
            return super()._execute_internal(*args, **kwargs)
        except sa.exc.DBAPIError as e:
            if not self._drop_lost_replicas(e):
                raise
            # The lost connection was the replica's, not one the request keeps.
            scope = _scope.peek()
            if scope is not None:
                scope.disconnected = False
        return super()._execute_internal(*args, **kwargs)

    def _drop_lost_replicas(self, error: BaseException) -> bool:
        """Stop using the replica connections that were lost; whether any was."""
        connections = self._orm_replica_connections
        if not connections:
            return False
        lost = [c for c in connections.items() if c[1].invalidated]
        if not lost:
            return False
        config = t.cast("ReplicaConfig", self._orm_state.config.replicas)
        for engine, connection in lost:
            del connections[engine]
            self._orm_lost_connections.append(connection)
            for replicas in self._orm_state.replicas.values():
                for replica in replicas.replicas:
                    if replica.engine is engine:
                        replica.fail(config, error)
        return True

    @property
    def _orm_lost_connections(self) -> list[sa.Connection]:
        lost: list[sa.Connection] | None = self.__dict__.get("_orm_lost")
        if lost is None:
            lost = self.__dict__["_orm_lost"] = []
        return lost

    def _route(self) -> Route:
        """The route of the current request, if this is its session, else
        this session's own.
        """
        request_ctx = _cv_request.get(None)
        cached = self._orm_route_cache
        if cached is not None and cached[0] is request_ctx:
            # A session belongs to one scope for its life: the same request
            # context means the same answer.
            return cached[1]
        app_ctx = _cv_app.get(None)
        if app_ctx is not None and request_ctx is not None:
            attributes = app_ctx.g.__dict__
            scope = attributes.get(_scope.REQUEST_KEY)
            if (
                attributes.get(_scope.DISPATCHED_KEY) is request_ctx
                and scope is not None
                and scope.session is self
            ):
                environ = flask.request.environ
                route: Route | None = environ.get(ROUTE_KEY)
                if route is None:
                    route = environ[ROUTE_KEY] = _request_route(self._orm_state)
                self._orm_route_cache = (request_ctx, route)
                return route
        route = self._orm_own_route
        if route is None:
            route = self._orm_own_route = Route(False, {})
        return route

    def connection(
        self,
        bind_arguments: t.Any = None,
        execution_options: t.Any = None,
    ) -> sa.Connection:
        """Return the connection of the current transaction; an explicit call
        counts as a write: it and everything after it use the primary.
        """
        if self._orm_isolation is None and not (
            bind_arguments and "bind" in bind_arguments
        ):
            self._route().primary = True
            self._route().wrote = True
        return super().connection(bind_arguments, execution_options)

    def _mark_write(self) -> None:
        if self._orm_isolation is None:
            route = self._route()
            route.primary = True
            route.wrote = True

    def bulk_save_objects(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._mark_write()
        super().bulk_save_objects(*args, **kwargs)

    def bulk_insert_mappings(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._mark_write()
        super().bulk_insert_mappings(*args, **kwargs)

    def bulk_update_mappings(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._mark_write()
        super().bulk_update_mappings(*args, **kwargs)

    def _close_replicas(self) -> None:
        """Give the replicas' connections back to their pools; never raises."""
        connections = list((self._orm_replica_connections or {}).values())
        connections += self.__dict__.pop("_orm_lost", ())
        if not connections:
            return
        self._orm_replica_connections = None
        for connection in connections:
            try:
                connection.close()
            except Exception as e:
                logger.warning(
                    "Closing a connection to a read replica failed: %s",
                    _one_line(e),
                )
                with contextlib.suppress(Exception):
                    connection.invalidate()


@sa.event.listens_for(ReplicaSession, "before_flush")
def _before_flush(session: ReplicaSession, *args: t.Any) -> None:
    session._mark_write()


@sa.event.listens_for(ReplicaSession, "after_commit")
def _after_commit(session: ReplicaSession) -> None:
    if session.get_nested_transaction() is not None or session._orm_isolation:
        return
    route = session._route()
    if route.wrote:
        route.committed |= route.used


@sa.event.listens_for(ReplicaSession, "after_transaction_end")
def _after_transaction_end(
    session: ReplicaSession, transaction: orm.SessionTransaction
) -> None:
    if transaction.parent is not None:
        return
    session._close_replicas()
    session._orm_own_route = None
    if session._orm_isolation is None:
        # The request's route outlives its transactions: only what concerns
        # the transaction is reset.
        route = session._route()
        route.wrote = False
        route.used = set()


# -- requests ------------------------------------------------------------------


def _request_route(state: AppState) -> Route:
    """The route of the current request: may it read from replicas, and what
    does the client's cookie pin.
    """
    config = t.cast("ReplicaConfig", state.config.replicas)
    request = flask.request
    allowed = request.method in config.methods
    mark = _view_mark(state.app)
    if mark is not None:
        allowed = mark == "replica"
    return Route(allowed, _read_cookie(state, config))


def _view_mark(app: flask.Flask) -> str | None:
    """``"primary"`` or ``"replica"`` as the view or its blueprints say."""
    request = flask.request
    endpoint = request.endpoint
    if endpoint is None:
        return None
    view = app.view_functions.get(endpoint)
    mark = getattr(view, READS_ATTRIBUTE, None) or getattr(
        getattr(view, "view_class", None), READS_ATTRIBUTE, None
    )
    if mark is not None:
        return t.cast(str, mark)
    for name in request.blueprints:
        blueprint = app.blueprints.get(name)
        mark = getattr(blueprint, READS_ATTRIBUTE, None)
        if mark is not None:
            return t.cast(str, mark)
    return None


def _serializer(state: AppState) -> itsdangerous.URLSafeTimedSerializer | None:
    secret = state.app.secret_key
    if not secret:
        return None
    return itsdangerous.URLSafeTimedSerializer(secret, salt=_SALT)


def _read_cookie(state: AppState, config: ReplicaConfig) -> dict[str, int]:
    request = flask.request
    # Most requests carry no such cookie: skip parsing the header then.
    if config.cookie not in request.environ.get("HTTP_COOKIE", ""):
        return {}
    value = request.cookies.get(config.cookie)
    if not value:
        return {}
    serializer = _serializer(state)
    if serializer is None:
        return {}
    try:
        data = serializer.loads(value, max_age=math.ceil(config.sticky_seconds))
    except itsdangerous.BadData:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        name: lsn
        for name, lsn in data.items()
        if isinstance(name, str) and isinstance(lsn, int)
    }


_warned_no_secret = False


def _write_cookie(state: AppState, route: Route, response: flask.Response) -> None:
    """Put the primary's position after this request's commits in its cookie."""
    global _warned_no_secret
    config = t.cast("ReplicaConfig", state.config.replicas)
    serializer = _serializer(state)
    if serializer is None:
        if not _warned_no_secret:
            _warned_no_secret = True
            logger.warning(
                "The app has no SECRET_KEY: the read replicas' cookie cannot be"
                " signed, so a client's next requests may read from a replica"
                " that has not replayed its writes yet."
            )
        return
    pins = dict(route.pins)
    for name in route.committed:
        replicas = state.replicas[name]
        lsn = 0
        if replicas.postgres:
            try:
                with replicas.primary.connect() as connection:
                    lsn = int(connection.exec_driver_sql(_INSERT_LSN_SQL).scalar_one())
                    connection.rollback()
            except Exception as e:
                logger.warning(
                    "Reading the primary's WAL position failed; this client"
                    " reads from the primary for %s s: %s",
                    config.sticky_seconds,
                    _one_line(e),
                )
                lsn = _UNKNOWN_LSN
        pins[name] = max(lsn, pins.get(name, 0))
    app = state.app
    response.set_cookie(
        config.cookie,
        serializer.dumps(pins),
        max_age=max(1, math.ceil(config.sticky_seconds)),
        path=app.config.get("APPLICATION_ROOT") or "/",
        secure=bool(app.config.get("SESSION_COOKIE_SECURE")),
        httponly=True,
        samesite="Lax",
    )


def install(app: flask.Flask) -> None:
    """Send the client its write position once the request has committed.

    Wraps the ``full_dispatch_request`` installed by :func:`._scope.install`,
    which commits: the cookie is set on the final response, after the commit
    (Flask's own session cookie is saved before it).
    """
    dispatch = app.full_dispatch_request
    state: AppState = app.extensions[_scope.EXTENSION_KEY]

    def full_dispatch_request() -> flask.Response:
        response = dispatch()
        request_ctx = _cv_request.get()
        route: Route | None = request_ctx.request.environ.get(ROUTE_KEY)
        if route is not None and route.committed:
            _write_cookie(state, route, response)
        return response

    setattr(app, "full_dispatch_request", full_dispatch_request)  # noqa: B010


@contextlib.contextmanager
def force(mode: str) -> t.Iterator[None]:
    token = forced.set(mode)
    try:
        yield
    finally:
        forced.reset(token)
