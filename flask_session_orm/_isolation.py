"""Test isolation: one outer transaction per database, rolled back at the end.

This is SQLAlchemy 2's "joining a session into an external transaction" recipe,
applied to every engine of an app at once. While :meth:`.SessionORM.isolation` is
active, each engine gets (on first use) one connection with a transaction begun on
it; every session created meanwhile is bound to those connections with
``join_transaction_mode="create_savepoint"``, so its commits and rollbacks become
savepoint releases and rollbacks, and the outer transactions are rolled back on
exit.
"""

from __future__ import annotations

import collections.abc
import contextlib
import logging
import re
import typing as t
import weakref

import sqlalchemy as sa

from ._config import is_sqlite_memory
from ._config import render_url

if t.TYPE_CHECKING:
    import sqlalchemy.orm as orm

logger = logging.getLogger("flask_session_orm")

# sqlite3.LEGACY_TRANSACTION_CONTROL, the default of Python 3.12's 'autocommit'.
_LEGACY = -1

# Statements after which MySQL and MariaDB commit the open transaction implicitly
# (and before which they commit it too). Temporary tables are the exception.
_IMPLICIT_COMMIT = re.compile(
    r"\s*(ALTER|CREATE|DROP|RENAME|TRUNCATE)\s+(?!TEMPORARY\b)", re.IGNORECASE
)


class Isolation:
    """The connections and transactions of one active :meth:`.SessionORM.isolation`.

    :attr:`connections` maps engine names to the connection sessions must use.
    Connections are opened lazily, so a test that never touches a database costs
    nothing, and once the isolation has ended the mapping gives the engines
    themselves, so that a session left over from the test (the one of a request
    context popped after the isolation) works like any other session again.
    """

    def __init__(self, engines: t.Mapping[str, sa.Engine]) -> None:
        self.engines = engines
        self.active = True
        self.connections = _Targets(self)
        self.sessions: weakref.WeakSet[orm.Session] = weakref.WeakSet()
        self._opened: dict[str, sa.Connection] = {}
        # Engines configured with the same database (a "replica" engine pointed
        # at the primary in tests, say) share one connection, so that each sees
        # what the other wrote, as it would after a real commit; on SQLite a
        # second connection would also wait for the first one's write lock.
        self._by_database: dict[str, sa.Connection] = {}
        self._exit = contextlib.ExitStack()

    def target(self, name: str) -> sa.Engine | sa.Connection:
        """The connection for engine ``name``, opened on first use."""
        if not self.active:
            return self.engines[name]
        connection = self._opened.get(name)
        if connection is None:
            connection = self._open(name)
        return connection

    def _open(self, name: str) -> sa.Connection:
        engine = self.engines[name]
        url = engine.url
        database = (
            None if is_sqlite_memory(url) else url.render_as_string(hide_password=False)
        )
        connection = self._by_database.get(database) if database else None
        if connection is None:
            connection = self._exit.enter_context(engine.connect())
            dialect = engine.dialect.name
            if dialect == "sqlite":
                self._exit.enter_context(_sqlite_savepoints(connection))
            elif dialect in ("mysql", "mariadb"):
                _refuse_implicit_commits(connection, name, url)
            if dialect != "sqlite" and _autocommits(connection):
                # An engine configured with isolation_level="AUTOCOMMIT" would
                # commit every statement for real. This connection gets the
                # database's default level for the isolation; the pool restores
                # the engine's level when it is returned. (SQLite's BEGIN
                # below covers its autocommit mode.)
                connection.execution_options(
                    isolation_level=connection.default_isolation_level
                )
            transaction = connection.begin()
            self._exit.callback(_rollback, transaction)
            if dialect == "sqlite":
                _sqlite_begin(connection)
            if database:
                self._by_database[database] = connection
        self._opened[name] = connection
        return connection

    def stop(self) -> None:
        """Close the sessions still open, roll back and return the connections."""
        self.active = False
        try:
            # Sessions still open (e.g. the one of a request context pushed by
            # pytest-flask, popped after this) hold savepoints on the
            # connections; close them before the connections go away. Their
            # work is rolled back with the outer transaction anyway, so a
            # failure here must not keep the connections from being returned.
            for session in list(self.sessions):
                try:
                    session.close()
                except Exception:
                    logger.exception(
                        "Closing a session left open in db.isolation() failed."
                    )
        finally:
            self._exit.close()


class _Targets(collections.abc.Mapping[str, "sa.Engine | sa.Connection"]):
    """Engine name -> what sessions use for it during (and after) an isolation."""

    def __init__(self, isolation: Isolation) -> None:
        self._isolation = isolation

    def __getitem__(self, name: str) -> sa.Engine | sa.Connection:
        return self._isolation.target(name)

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._isolation.engines)

    def __len__(self) -> int:
        return len(self._isolation.engines)


def _autocommits(connection: sa.Connection) -> bool:
    """Whether the driver connection is in autocommit mode (no round trip)."""
    detect = getattr(connection.dialect, "detect_autocommit_setting", None)
    if detect is None:
        return False
    try:
        return bool(detect(connection.connection.dbapi_connection))
    except NotImplementedError:
        return False


def _rollback(transaction: sa.RootTransaction) -> None:
    if transaction.is_active:
        transaction.rollback()


def _refuse_implicit_commits(connection: sa.Connection, name: str, url: sa.URL) -> None:
    """Fail a statement that would commit the outer transaction of a test."""

    def check(
        conn: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        match = _IMPLICIT_COMMIT.match(statement)
        if match is not None:
            raise RuntimeError(
                f"db.isolation() cannot run {match.group(1).upper()} statements on"
                f" the engine {name!r} ({render_url(url)!r}): MySQL and MariaDB"
                " commit the open transaction before and after such a statement,"
                " which would keep what the test wrote so far. Create and drop"
                " tables outside the isolation, e.g. in the 'app' fixture."
            )

    sa.event.listen(connection, "before_cursor_execute", check)


@contextlib.contextmanager
def _sqlite_savepoints(connection: sa.Connection) -> t.Iterator[None]:
    """Let SQLite savepoints work on this one connection.

    In its legacy transaction mode (the default before Python 3.12's
    ``autocommit`` attribute, and still the default after), the sqlite3 driver
    begins transactions itself, only before INSERT, UPDATE and DELETE, so a
    SAVEPOINT issued first would start and its RELEASE end the transaction. With
    the driver's handling turned off, SAVEPOINT, RELEASE and ROLLBACK reach
    SQLite as written, inside the BEGIN issued by :func:`_sqlite_begin`. Done
    only here, where savepoints are needed, since it costs a statement per
    transaction.
    """
    dbapi_connection: t.Any = connection.connection.dbapi_connection
    autocommit = getattr(dbapi_connection, "autocommit", _LEGACY)
    previous = dbapi_connection.isolation_level
    # None already: the app turned the driver's handling off itself (e.g.
    # SQLAlchemy's documented recipe for SQLite savepoints).
    changed = autocommit == _LEGACY and previous is not None
    if changed:
        dbapi_connection.isolation_level = None
    try:
        yield
    finally:
        if not connection.invalidated:
            # With autocommit=True the driver's rollback() does nothing.
            if autocommit is True and dbapi_connection.in_transaction:
                dbapi_connection.execute("ROLLBACK")
            if changed:
                dbapi_connection.isolation_level = previous


def _sqlite_begin(connection: sa.Connection) -> None:
    """Make sure SQLite itself is in the transaction just begun on ``connection``.

    Nothing may have begun it: the driver's handling is off, or in autocommit
    mode, unless the app emits BEGIN from its own "begin" event listener; with
    ``autocommit=False`` the driver keeps one open by itself.
    """
    dbapi_connection: t.Any = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN")
