"""Run a request again when its transaction failed on a concurrency conflict.

A database that runs transactions under ``SERIALIZABLE`` (or ``REPEATABLE
READ``) isolation, and any database that detects deadlocks, aborts some of them
and expects the application to run the whole transaction again. This module does
that for the views that opt in (:meth:`.SessionORM.retry`, or the config key
``SESSION_ORM_RETRY_ATTEMPTS`` for every view): the request's transaction is
rolled back, and after a short randomized backoff the request is dispatched
again, from its ``before_request`` functions on, with a fresh transaction and
``g`` as it was when the request started.

The retry loop wraps :meth:`flask.Flask.full_dispatch_request` (see
:func:`._scope.install`), which a request runs only once otherwise. A retryable
error is caught where it appears:

- raised by the view, a ``before_request`` function or a flush: in the
  ``handle_user_exception`` wrapper, before the app's error handler turns it
  into a response, by raising :class:`RetryRequest` out of the dispatch;
- at the end-of-request commit: the commit's failure goes through
  ``handle_user_exception`` too;
- raised by an ``after_request`` function: it escapes the dispatch.

A request is never run again once a commit may have happened: after the view
committed itself, or when the failed commit spanned several databases (some of
which may be committed). A lost connection is never retried, even during the
commit: whether the commit happened is unknown.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import typing as t
import weakref

import flask
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException

from . import _lifecycle
from . import _scope
from . import signals

if t.TYPE_CHECKING:
    from ._scope import Scope
    from ._session import Session
    from ._state import AppState

logger = logging.getLogger("flask_session_orm")

#: Attribute set on a view function or class by :meth:`.SessionORM.retry`: the
#: number of attempts.
RETRY = "_session_orm_retry"
#: Attribute set by :meth:`.SessionORM.transaction`: the isolation level.
TRANSACTION = "_session_orm_transaction"

#: Whether any view was marked with either; until one is, a request whose app
#: has no default retry does not look its view up.
marked = False

#: The isolation levels a view may ask for. ``AUTOCOMMIT`` is not one: each
#: statement would be committed at once, so a retry would run it twice.
ISOLATION_LEVELS = frozenset(
    {"SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED", "READ UNCOMMITTED"}
)

#: PostgreSQL's SQLSTATEs for a serialization failure and a detected deadlock.
_PG_RETRYABLE = frozenset({"40001", "40P01"})
#: MySQL/MariaDB error codes: deadlock found (ER_LOCK_DEADLOCK), lock wait
#: timeout exceeded (ER_LOCK_WAIT_TIMEOUT), and a row changed since the
#: transaction's snapshot (ER_CHECKREAD: MariaDB 11.6.2+ raises it under
#: REPEATABLE READ with innodb_snapshot_isolation, its default). Each rolls back
#: the statement or the transaction, which the request then runs again whole.
_MYSQL_RETRYABLE = frozenset({1213, 1205, 1020})
#: The modules whose exceptions carry the MySQL error code as ``args[0]``.
_MYSQL_DRIVERS = ("pymysql", "MySQLdb")
#: SQLite's primary result code for a busy database (SQLITE_BUSY); extended
#: codes such as SQLITE_BUSY_SNAPSHOT keep it in their low byte.
_SQLITE_BUSY = 5

Predicate: t.TypeAlias = "t.Callable[[BaseException], bool]"


class RetryRequest(Exception):
    """Raised out of the dispatch to make the retry loop run the request again.

    Private: it never leaves :func:`run`.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Attempt:
    """The retry state of one request: which attempt runs, and what it did."""

    #: Dispatching: a retryable error may end the attempt with a retry.
    active = False
    #: A root transaction of the request's session committed in this attempt.
    committed = False
    #: The session whose engines were swapped for the isolation level.
    _swapped: Session | None = None

    def __init__(
        self, scope: Scope, attempts: int, isolation_level: str | None
    ) -> None:
        self.scope = scope
        self.attempts = attempts
        self.isolation_level = isolation_level
        #: 1 for the first run of the request.
        self.number = 1
        #: The engines the attempt's transactions used.
        self.engines: set[sa.Engine] = set()

    def prepare(self, session: Session) -> None:
        """Apply the isolation level to ``session``, and watch its commits."""
        if self.isolation_level is not None:
            _apply_isolation_level(self, session)
        if self.attempts > 1 and not getattr(session, "_orm_retry_watched", False):
            # The listeners ask the scope for its attempt when they run, so that
            # a session that outlives this request (in an app context pushed
            # around several test requests) does not report to it afterwards.
            session._orm_retry_watched = True  # type: ignore[attr-defined]
            scope = self.scope
            sa.event.listen(session, "after_begin", _began_listener(scope))
            sa.event.listen(session, "after_commit", _committed_listener(scope))

    def next(self) -> None:
        """Start the next attempt."""
        self.number += 1
        self.committed = False
        self.engines.clear()

    def restore(self) -> None:
        """Give the session swapped for the isolation level its engines back."""
        session = self._swapped
        if session is None:
            return
        if session.in_transaction():
            # Only a streamed response keeps it in a transaction after the
            # decision, and the end of the stream closes that session.
            return
        self._swapped = None
        session._orm_targets = self.scope.state.engines


def _began_listener(scope: Scope) -> t.Callable[..., None]:
    def began(session: Session, transaction: t.Any, connection: sa.Connection) -> None:
        attempt = scope.attempt
        if attempt is not None and attempt.active:
            attempt.engines.add(connection.engine)

    return began


def _committed_listener(scope: Scope) -> t.Callable[[Session], None]:
    def committed(session: Session) -> None:
        attempt = scope.attempt
        # Releasing a savepoint sends after_commit too; only the root
        # transaction's commit stores anything.
        if (
            attempt is not None
            and attempt.active
            and session.get_nested_transaction() is None
        ):
            attempt.committed = True

    return committed


# Engines configured with an isolation level share their original's pool. They
# are made once per engine and level: Engine.execution_options() copies the
# engine, and a request should not pay for that.
_level_engines: weakref.WeakKeyDictionary[sa.Engine, dict[str, sa.Engine]] = (
    weakref.WeakKeyDictionary()
)


def _with_level(engine: sa.Engine, level: str) -> sa.Engine:
    levels = _level_engines.setdefault(engine, {})
    option_engine = levels.get(level)
    if option_engine is None:
        option_engine = levels[level] = engine.execution_options(isolation_level=level)
    return option_engine


def _apply_isolation_level(attempt: Attempt, session: Session) -> None:
    """Make ``session`` connect through engines set to the attempt's level."""
    state = attempt.scope.state
    if state.isolation is not None or session.in_transaction():
        # Inside db.isolation() every session joins the test's open
        # transaction, whose level can no longer change; and a session already
        # in a transaction keeps its connections until it ends.
        return
    level = t.cast(str, attempt.isolation_level)
    # SQLAlchemy sets the level on each connection when the session checks it
    # out, before its first statement, and resets it when the connection goes
    # back to the pool: the next request gets the engine's own level.
    session._orm_targets = {
        name: _with_level(engine, level) for name, engine in state.engines.items()
    }
    attempt._swapped = session


# -- the view's settings ------------------------------------------------------------


def mark(view: object, name: str, value: object) -> None:
    """Set ``name`` on ``view`` (a view function or class)."""
    global marked
    setattr(view, name, value)
    marked = True


def _marked_value(view: object, name: str) -> t.Any:
    value = getattr(view, name, None)
    if value is None:
        # A class-based view's function (View.as_view) does not carry the
        # class's attributes; the class is reachable as view_class.
        value = getattr(getattr(view, "view_class", None), name, None)
    return value


def check_isolation_level(level: t.Any) -> str:
    """Validate the ``isolation_level`` argument; return it in SQLAlchemy's form."""
    if not isinstance(level, str):
        raise TypeError(
            "The argument 'isolation_level' must be a string such as"
            f" 'SERIALIZABLE', got {level!r} (type {type(level).__name__})."
        )
    normalized = " ".join(level.replace("_", " ").upper().split())
    if normalized not in ISOLATION_LEVELS:
        raise ValueError(
            f"The argument 'isolation_level' is {level!r}; it must be one of"
            f" {', '.join(repr(name) for name in sorted(ISOLATION_LEVELS))}."
            " ('AUTOCOMMIT' is not: a request's statements would be committed one"
            " by one, and a retry would run them again.)"
        )
    return normalized


# -- classification -----------------------------------------------------------------


def is_retryable(error: BaseException, predicates: t.Iterable[Predicate] = ()) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a concurrency
    conflict that running the transaction again may resolve.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_conflict(current) or any(check(current) for check in predicates):
            return True
        # Only an explicit "raise ... from": an exception raised while handling
        # another (__context__) may have nothing to do with it.
        current = current.__cause__
    return False


def _is_conflict(error: BaseException) -> bool:
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        # A lost connection: whatever was running, maybe a COMMIT, may or may
        # not have happened.
        return False
    orig = error.orig
    module = type(orig).__module__
    if module.startswith(_MYSQL_DRIVERS):
        # The MySQL error code, not the SQLSTATE (which PyMySQL 1.1+ also
        # gives): a lock wait timeout has the generic SQLSTATE HY000.
        args: tuple[t.Any, ...] = getattr(orig, "args", ())
        return bool(args) and args[0] in _MYSQL_RETRYABLE
    # mysql-connector and MariaDB Connector/Python name the code 'errno'.
    errno = getattr(orig, "errno", None)
    if isinstance(errno, int) and module.startswith(("mysql.connector", "mariadb")):
        return errno in _MYSQL_RETRYABLE
    # psycopg 3 names the SQLSTATE 'sqlstate', psycopg2 'pgcode'.
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return sqlstate in _PG_RETRYABLE
    # sqlite3 (Python 3.11+) names SQLite's result code 'sqlite_errorcode'.
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_BUSY
    return False


def intercept(scope: Scope, error: Exception) -> None:
    """Raise :class:`RetryRequest` if ``error`` ends the attempt with a retry.

    Called by the ``handle_user_exception`` wrapper for requests that opted in.
    """
    if _may_retry(scope, error):
        raise RetryRequest(error) from error


def _may_retry(scope: Scope, error: BaseException) -> bool:
    attempt = scope.attempt
    return (
        attempt is not None
        and attempt.active
        and attempt.number < attempt.attempts
        and not attempt.committed
        and not scope.disconnected
        # A failed end-of-request commit (the decision is taken) is retried only
        # when it concerned one database: with several, those committed before
        # the failing one stay committed.
        and (not scope.finished or len(attempt.engines) <= 1)
        and is_retryable(error, scope.state.db._retry_predicates)
    )


# -- the loop -----------------------------------------------------------------------


def settings(state: AppState) -> tuple[int, str | None] | None:
    """The attempts and isolation level of the current request's view, or None
    when it neither retries nor sets an isolation level.
    """
    endpoint = flask.request.endpoint
    if endpoint is None:
        # No view matched: there is nothing to run again.
        return None
    view = state.app.view_functions.get(endpoint)
    attempts = _marked_value(view, RETRY) if marked else None
    level = _marked_value(view, TRANSACTION) if marked else None
    if attempts is None:
        attempts = state.config.retry_attempts
    if attempts <= 1 and level is None:
        return None
    return attempts, level


def dispatch(
    state: AppState,
    attributes: dict[str, t.Any],
    request_ctx: t.Any,
    full_dispatch_request: t.Callable[[], flask.Response],
) -> flask.Response:
    """Dispatch the current request, running it again after retryable errors.

    :param attributes: The app context's ``g.__dict__``.
    :param full_dispatch_request: Flask's own method.
    """
    found = settings(state)
    if found is None:
        try:
            return full_dispatch_request()
        except _lifecycle.CommitFailed as failure:
            failed = failure.error
        return _lifecycle.answer_commit_failure(state.app, failed)
    attempts, level = found
    if attempts > 1:
        _cache_body()
    scope: Scope | None = attributes.get(_scope.REQUEST_KEY)
    if scope is None:
        scope = attributes[_scope.REQUEST_KEY] = _scope.Scope(state, True)
    attempt = Attempt(scope, attempts, level)
    scope.attempt = attempt
    # A session kept from an earlier request in this app context (tests push a
    # context around several requests) is reused: its objects cached in g stay
    # attached. One the request creates is closed before a retry.
    kept = scope.session
    if kept is not None:
        attempt.prepare(kept)
    snapshot = dict(attributes)
    after_this_request = list(getattr(request_ctx, "_after_request_functions", ()))
    try:
        while True:
            try:
                attempt.active = True
                try:
                    return full_dispatch_request()
                except _lifecycle.CommitFailed as failure:
                    failed = failure.error
                # Still active: the commit's failure may end the attempt too,
                # through the handle_user_exception wrapper.
                return _lifecycle.answer_commit_failure(state.app, failed)
            except RetryRequest as signal:
                error: BaseException = signal.error
            except Exception as e:
                # Raised by an after_request function, or an error that is not
                # retried and that no error handler answered.
                if not _may_retry(scope, e):
                    _roll_back(scope)
                    raise
                error = e
            finally:
                attempt.active = False
            _end_attempt(scope, kept)
            _reset(scope, attributes, snapshot, request_ctx, after_this_request)
            attempt.next()
            scope.attempt = attempt
            _send_retried(state.app, attempt.number, error)
            _sleep(state, attempt.number)
    finally:
        attempt.restore()


def _cache_body() -> None:
    """Read the request body into memory so that each attempt can read it."""
    # Too large, or the client went away: the view meets the same error when it
    # reads the body, and the app handles it as usual. Werkzeug parses the form
    # from the cached body when there is one.
    with contextlib.suppress(HTTPException):
        flask.request.get_data(cache=True)


def _roll_back(scope: Scope) -> None:
    """Roll back now what the end of the request would roll back anyway, so
    that the session's own engines can be given back.
    """
    session = scope.session
    if session is not None and session.in_transaction():
        _lifecycle.discard(scope, session)


def _end_attempt(scope: Scope, kept: Session | None) -> None:
    """Roll back the attempt's transaction; close its session unless kept."""
    session = scope.session
    if session is None:
        return
    if session is kept:
        if session.in_transaction():
            _lifecycle.discard(scope, session)
    else:
        _lifecycle.end_scope(scope)


def _reset(
    scope: Scope,
    attributes: dict[str, t.Any],
    snapshot: dict[str, t.Any],
    request_ctx: t.Any,
    after_this_request: list[t.Any],
) -> None:
    """Bring the request back to where it was before the first attempt."""
    scope.start_request()
    # A session for an app context scope created during the attempt (a
    # test_request_context inside the view shares this g) is ended, not leaked.
    context_scope = attributes.get(_scope.CONTEXT_KEY)
    if context_scope is not None and context_scope is not snapshot.get(
        _scope.CONTEXT_KEY
    ):
        _lifecycle.end_scope(context_scope)
    # g as it was when the request started: what the attempt cached there (a
    # user loaded by Flask-Login, with the closed session) is loaded again.
    attributes.clear()
    attributes.update(snapshot)
    functions = getattr(request_ctx, "_after_request_functions", None)
    if functions is not None:
        functions[:] = after_this_request
    request = flask.request
    # Uploaded files are read again from their start, and the JSON body is parsed
    # again, so that the attempt does not see what the previous one changed.
    files = request.__dict__.get("files")
    if files is not None:
        for storage in files.values():
            if isinstance(storage, FileStorage) and storage.stream.seekable():
                storage.stream.seek(0)
    request.__dict__.pop("_cached_json", None)


def _send_retried(app: flask.Flask, attempt: int, error: BaseException) -> None:
    signal = signals.request_retried
    if not signal.receivers:
        return
    try:
        signal.send(app, attempt=attempt, exception=error)
    except Exception:
        logger.exception("A receiver of the signal request_retried raised.")


def _sleep(state: AppState, attempt: int) -> None:
    """Wait before ``attempt``: exponential, randomized so that the requests
    that conflicted do not meet again at once.
    """
    config = state.config
    ceiling = min(config.retry_backoff_max, config.retry_backoff * 2 ** (attempt - 2))
    delay = ceiling * random.uniform(0.5, 1.0)
    if delay > 0:
        time.sleep(delay)
