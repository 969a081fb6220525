"""The Session subclass: engine routing, after-commit callbacks and signals."""

from __future__ import annotations

import logging
import re
import typing as t

import blinker
import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import signals

if t.TYPE_CHECKING:
    from ._state import AppState

logger = logging.getLogger("flask_session_orm")

# An on_commit callback as (transaction, func, args, kwargs); transaction is the
# innermost transaction at registration, or None when the session had not begun
# one and does not autobegin (the callback then belongs to the next root
# transaction).
Callback: t.TypeAlias = (
    "tuple[orm.SessionTransaction | None, t.Callable[..., object],"
    " tuple[t.Any, ...], dict[str, t.Any]]"
)

# Text statements that cannot write, so that an app context which only ran them
# does not warn about discarded writes.
_READ_ONLY_SQL = re.compile(r"\s*(SELECT|SHOW|EXPLAIN|PRAGMA|VALUES)\b", re.IGNORECASE)

Bind: t.TypeAlias = "sa.Engine | sa.Connection"

_LOCKING_SQL = re.compile(
    r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b", re.IGNORECASE
)


def may_write(clause: t.Any) -> bool:
    """Whether a statement may write or lock rows (read replicas route it to the
    primary)."""
    if clause.is_dml or getattr(clause, "is_ddl", False):
        return True
    if isinstance(clause, sa.TextClause):
        text = clause.text
        return not _READ_ONLY_SQL.match(text) or bool(_LOCKING_SQL.search(text))
    return getattr(clause, "_for_update_arg", None) is not None


class Session(orm.Session):
    """The :class:`sqlalchemy.orm.Session` used by :class:`.SessionORM`.

    It routes every model, table and statement to the engine configured for it,
    runs :meth:`.SessionORM.on_commit` callbacks and sends the lifecycle signals.
    Create sessions with :attr:`.SessionORM.sessionmaker`, not directly.

    .. versionadded:: 0.1.0
    """

    # The bookkeeping is kept in attributes, with these class-level defaults,
    # rather than in Session.info, which SQLAlchemy creates on first access: a
    # request that registers no callback then creates no dictionary for it.
    #: The on_commit callbacks waiting for the root transaction.
    _orm_callbacks: list[Callback] | None = None
    #: The root transaction committed; set until it has ended.
    _orm_committed = False
    #: The open transaction flushed or executed something that may write.
    _orm_writes = False

    def __init__(self, *, orm_state: AppState, **kwargs: t.Any) -> None:
        isolation = orm_state.isolation
        if isolation is not None:
            # Join the outer transaction of db.isolation() and turn this session's
            # own commits and rollbacks into savepoint releases and rollbacks.
            kwargs.setdefault("join_transaction_mode", "create_savepoint")
            self._orm_targets: t.Mapping[str, Bind] = isolation.connections
        else:
            self._orm_targets = orm_state.engines
        super().__init__(**kwargs)
        if isolation is not None:
            isolation.sessions.add(self)
        self._orm_isolation = isolation
        self._orm_state = orm_state
        send_quietly("session_created", orm_state.app, self)

    def get_bind(
        self,
        mapper: t.Any = None,
        *,
        clause: sa.ClauseElement | None = None,
        bind: Bind | None = None,
        **kwargs: t.Any,
    ) -> Bind:
        """Return the engine (or, inside :meth:`.SessionORM.isolation`, the
        connection) for a mapper, a Core statement or an explicit ``bind``.
        """
        state = self._orm_state
        if bind is not None:
            # An engine of this app given explicitly still goes through the
            # isolation connection while a test isolates the database.
            name = state.engine_names.get(bind) if isinstance(bind, sa.Engine) else None
            return bind if name is None else self._orm_targets[name]
        if mapper is not None:
            return self._orm_targets[state.router.for_mapper(mapper)]
        if clause is not None:
            return self._orm_targets[state.router.for_clause(clause)]
        return self._orm_targets["default"]

    def commit(self) -> None:
        """Commit, flushing first; with several databases, in a fixed order.

        The databases of one transaction are committed one after the other, in
        the order the transaction first used them. If one fails, those before
        it stay committed and it and those after it are rolled back (this is
        not a two-phase commit). SQLAlchemy itself commits them in an arbitrary
        order, so which part survives a failure would be left to chance.
        """
        # Only apps with several engines pay for this.
        if len(self._orm_targets) > 1 and self._orm_isolation is None:
            transaction = self.get_transaction()
            if transaction is not None and not self.twophase:
                # The flush that commit() would do may use another database.
                self.flush()
                # SessionTransaction keeps its connections in the order they
                # were added (a private attribute; without it, SQLAlchemy's
                # order), each under two keys: the connection and its engine.
                entries = getattr(transaction, "_connections", None)
                if entries is not None and len(entries) > 2:
                    # Only those the session commits (a replica's read-only
                    # connection is joined without committing it).
                    self._commit_in_order(
                        [entry[0] for entry in entries.values() if entry[2]]
                    )
        super().commit()

    def _commit_in_order(self, connections: list[sa.Connection]) -> None:
        """Commit each connection's database transaction in order.

        The commits are sent as SQL, leaving SQLAlchemy's transactions open: the
        ``super().commit()`` that follows then finds nothing left to do in the
        databases, and when one of these commits fails (with SQLAlchemy's
        exception, as any statement), rolling the session back does not touch a
        transaction that SQLAlchemy considers committed already (it warns then).
        """
        seen: set[int] = set()
        for connection in connections:
            # A replica's read-only transaction may have been ended already.
            if (
                id(connection) in seen
                or connection.closed
                or not connection.in_transaction()
            ):
                continue
            seen.add(id(connection))
            # sqlite3 refuses COMMIT outside a transaction and says whether one
            # is open; the other drivers accept it.
            driver = connection.connection.driver_connection
            if getattr(driver, "in_transaction", True) is False:
                continue
            connection.exec_driver_sql("COMMIT")

    def close(self) -> None:
        super().close()
        self._orm_callbacks = None

    def invalidate(self) -> None:
        isolation = self._orm_isolation
        if isolation is not None and isolation.active:
            # Inside db.isolation() the connections carry the test's outer
            # transaction, shared with the test and its other requests:
            # invalidating them would end it. Dropping this session's own
            # savepoint has the effect invalidating has in production: this
            # session's uncommitted work is gone, what was committed stays.
            try:
                self.close()
            except Exception:
                # The connection itself is broken; discard it after all.
                super().invalidate()
        else:
            super().invalidate()
        self._orm_callbacks = None


def add_on_commit(
    session: Session,
    func: t.Callable[..., object],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
) -> None:
    """Register ``func`` to run after ``session``'s current transaction commits.

    With no transaction in progress one is begun, as adding an object does, so
    that the end of a successful request, which commits only a transaction in
    progress, runs the callback.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None and session.autobegin:
        transaction = session.begin()
    entry: Callback = (transaction, func, args, kwargs)
    if session._orm_callbacks is None:
        session._orm_callbacks = [entry]
    else:
        session._orm_callbacks.append(entry)


def _within(transaction: orm.SessionTransaction | None, ancestor: t.Any) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # after_commit also fires when a savepoint is released (the savepoint is
    # then the session's nested transaction); only the root transaction's
    # commit makes anything durable.
    if session.get_nested_transaction() is None:
        session._orm_committed = True


def send_quietly(name: str, app: t.Any, session: orm.Session) -> None:
    """Send the signal ``name``; a receiver's exception is logged, not raised."""
    # These signals are sent from inside a commit, a rollback or an
    # invalidation. A receiver that raises must not turn a stored commit into an
    # error response and skip the on_commit callbacks, nor make a rollback look
    # failed (which invalidates a healthy connection), nor break a teardown.
    signal: blinker.Signal = getattr(signals, name)
    if not signal.receivers:
        return
    try:
        signal.send(app, session=session)
    except Exception:
        logger.exception("A receiver of the signal %s raised an exception.", name)


@sa.event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: t.Any) -> None:
    session._orm_writes = True


@sa.event.listens_for(Session, "after_soft_rollback")
def _after_soft_rollback(
    session: Session, previous_transaction: orm.SessionTransaction
) -> None:
    if previous_transaction.parent is None:
        send_quietly("session_rolled_back", session._orm_state.app, session)
    elif previous_transaction.nested:
        callbacks = session._orm_callbacks
        if callbacks:
            callbacks[:] = [
                entry
                for entry in callbacks
                if not _within(entry[0], previous_transaction)
            ]


@sa.event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(
    session: Session, transaction: orm.SessionTransaction
) -> None:
    if transaction.parent is not None:
        return
    session._orm_writes = False
    callbacks = session._orm_callbacks
    session._orm_callbacks = None
    if not session._orm_committed:
        return
    session._orm_committed = False
    send_quietly("session_committed", session._orm_state.app, session)
    # The root transaction is closed at this point, so a callback that uses the
    # session starts a new transaction instead of failing in a committed one.
    for _transaction, func, args, kwargs in callbacks or ():
        try:
            func(*args, **kwargs)
        except Exception:
            # The data is committed; a failing callback must neither undo that
            # nor stop the callbacks after it.
            logger.exception("An on_commit callback %r raised an exception.", func)


def note_statement(execute_state: orm.ORMExecuteState) -> None:
    """Remember that a session outside a request ran a statement that may write."""
    if execute_state.is_select:
        return
    statement = execute_state.statement
    if isinstance(statement, sa.TextClause) and _READ_ONLY_SQL.match(statement.text):
        return
    t.cast(Session, execute_state.session)._orm_writes = True


def describe_discarded(session: Session) -> str | None:
    """Say what rolling back ``session`` would discard, or None if nothing."""
    new, dirty, deleted = len(session.new), len(session.dirty), len(session.deleted)
    writes = session._orm_writes
    if not (new or dirty or deleted or writes):
        return None
    parts = []
    if new or dirty or deleted:
        parts.append(
            f"{new} new, {dirty} modified and {deleted} deleted object(s) not yet"
            " flushed"
        )
    if writes:
        parts.append("the writes already flushed or executed in the open transaction")
    return " and ".join(parts)
