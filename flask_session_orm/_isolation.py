"""Test isolation: one outer transaction per engine, rolled back at the end.

This is SQLAlchemy 2's "joining a session into an external transaction" recipe,
applied to every engine of an app at once: each engine gets one connection with a
transaction begun on it, every session created meanwhile is bound to those
connections with ``join_transaction_mode="create_savepoint"``, so its commits and
rollbacks become savepoint releases and rollbacks, and the outer transactions are
rolled back on exit.
"""

from __future__ import annotations

import contextlib
import typing as t
import weakref

import sqlalchemy as sa

if t.TYPE_CHECKING:
    import sqlalchemy.orm as orm


class Isolation:
    """The connections and transactions of one active :meth:`.SessionORM.isolation`."""

    def __init__(self) -> None:
        self.connections: dict[str, sa.Connection] = {}
        self.sessions: weakref.WeakSet[orm.Session] = weakref.WeakSet()
        self._exit = contextlib.ExitStack()

    def start(self, engines: t.Mapping[str, sa.Engine]) -> None:
        try:
            for name, engine in engines.items():
                connection = self._exit.enter_context(engine.connect())
                if engine.dialect.name == "sqlite":
                    self._exit.enter_context(_sqlite_transactions(connection))
                transaction = connection.begin()
                self._exit.callback(_rollback, transaction)
                self.connections[name] = connection
        except BaseException:
            self._exit.close()
            raise

    def stop(self) -> None:
        try:
            # Sessions still open (e.g. the one of a request context pushed by
            # pytest-flask, torn down after this) hold savepoints on the
            # connections; close them before the connections go away.
            for session in list(self.sessions):
                session.close()
        finally:
            self._exit.close()


def _rollback(transaction: sa.RootTransaction) -> None:
    if transaction.is_active:
        transaction.rollback()


@contextlib.contextmanager
def _sqlite_transactions(connection: sa.Connection) -> t.Iterator[None]:
    """Let SQLite savepoints work on this one connection.

    The sqlite3 driver manages transactions itself and would commit before a
    SAVEPOINT. With its own handling turned off, SQLAlchemy's BEGIN, SAVEPOINT,
    RELEASE and ROLLBACK reach SQLite as written. Done only here, where savepoints
    are needed, since it costs a statement per transaction.
    """
    dbapi_connection = connection.connection.dbapi_connection
    previous = dbapi_connection.isolation_level  # type: ignore[union-attr]
    if previous is None:
        # The app already turned the driver's handling off and emits its own
        # BEGIN (SQLAlchemy's documented recipe for SQLite savepoints): a
        # second BEGIN would fail with "cannot start a transaction within a
        # transaction".
        yield
        return
    dbapi_connection.isolation_level = None  # type: ignore[union-attr]

    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    sa.event.listen(connection, "begin", begin)
    try:
        yield
    finally:
        sa.event.remove(connection, "begin", begin)
        if not connection.invalidated:
            dbapi_connection.isolation_level = previous  # type: ignore[union-attr]
