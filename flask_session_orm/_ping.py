"""Ping a pooled connection at checkout only when it sat idle for a while.

SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout. A
connection that went back to the pool a moment ago is almost certainly alive,
and the ways a pooled connection dies (a server restart or fail-over, an idle
timeout in the server, a firewall or a pooler) show on connections that have
been idle. So this pings only a connection that was checked in longer than a
threshold ago: the pessimistic-checkout recipe of SQLAlchemy's pooling docs
("Disconnect Handling - Pessimistic"), with pool events.
"""

from __future__ import annotations

import time
import typing as t

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

if t.TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.pool import ConnectionPoolEntry
    from sqlalchemy.pool import PoolProxiedConnection

#: Where a connection's last check-in time lives, in the pool entry's ``info``.
#: SQLAlchemy clears that dict whenever the DBAPI connection is replaced, so a
#: new connection has no time there and is not pinged: it was just opened.
CHECKED_IN = "flask_session_orm.checked_in"


class IdlePing:
    """The ``checkin`` and ``checkout`` listeners of one engine's pool."""

    def __init__(self, dialect: Dialect, idle_after: float) -> None:
        self.dialect = dialect
        self.idle_after = idle_after

    def checkin(
        self, dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry
    ) -> None:
        """Note when the connection went back to the pool."""
        if dbapi_connection is not None:
            record.info[CHECKED_IN] = time.monotonic()

    def checkout(
        self,
        dbapi_connection: DBAPIConnection,
        record: ConnectionPoolEntry,
        proxy: PoolProxiedConnection,
    ) -> None:
        """Ping a connection that was idle longer than the threshold."""
        checked_in = record.info.get(CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in <= self.idle_after:
            return
        if not self._alive(dbapi_connection):
            # InvalidatePoolError is what pool_pre_ping raises too: the pool
            # replaces this connection (up to three attempts) and recycles
            # every connection older than now at its next checkout, since a
            # dead idle connection usually means the server restarted.
            raise sa_exc.InvalidatePoolError(
                "flask-session-orm: a connection idle for"
                f" {time.monotonic() - checked_in:.1f} s failed its ping"
                " ('SESSION_ORM_PING_IDLE_AFTER')"
            )

    def _alive(self, dbapi_connection: DBAPIConnection) -> bool:
        # SQLAlchemy's own pre-ping goes through Dialect._do_ping_w_event,
        # which also runs the engine's handle_error listeners, so that a
        # user's listener can mark more errors as disconnects. Use it where it
        # exists, to behave exactly like pool_pre_ping; else the public parts.
        ping = getattr(self.dialect, "_do_ping_w_event", None)
        if ping is not None:
            return bool(ping(dbapi_connection))
        try:
            return bool(self.dialect.do_ping(dbapi_connection))
        except self.dialect.loaded_dbapi.Error as e:
            if self.dialect.is_disconnect(e, dbapi_connection, None):
                return False
            raise


def install(engine: sa.Engine, idle_after: float) -> IdlePing:
    """Listen on ``engine``'s pool: ping connections idle over ``idle_after`` s."""
    listeners = IdlePing(engine.dialect, idle_after)
    sa.event.listen(engine, "checkin", listeners.checkin)
    sa.event.listen(engine, "checkout", listeners.checkout)
    return listeners
