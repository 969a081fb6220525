"""The health of read replicas: down or lagging replicas are skipped for a while,
and a replica's replay position (PostgreSQL) is read at most every
``SESSION_ORM_REPLICA_CHECK_SECONDS``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from ._config import ReplicaConfig

logger = logging.getLogger("flask_session_orm")

# The replay position of a standby. A server that is not in recovery (a
# logical replica, a promoted standby, the primary itself in a test) has WAL
# positions of its own, which say nothing about the primary's: None, so that a
# client pinned to a position never reads there.
_STATUS_SQL = (
    "SELECT pg_is_in_recovery(),"
    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " END - '0/0'::pg_lsn)::bigint,"
    " CASE WHEN NOT pg_is_in_recovery()"
    " OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
    " END"
)


class Replica:
    """One replica engine and what is known of its health."""

    def __init__(self, engine: sa.Engine, label: str) -> None:
        self.engine = engine
        self.label = label
        self.postgres = engine.dialect.name == "postgresql"
        #: Skipped until this time (time.monotonic()) after a failure.
        self.down_until = 0.0
        #: When replay_lsn and lag were read.
        self.checked_at = -math.inf
        #: How far it has replayed the primary's WAL (PostgreSQL), or None.
        self.replay_lsn: int | None = None
        #: Seconds behind the primary (PostgreSQL); None: unknown.
        self.lag: float | None = 0.0
        self._lock = threading.Lock()

    def fail(self, config: ReplicaConfig, error: BaseException) -> None:
        """Skip this replica for a while after ``error``."""
        if self.down_until <= time.monotonic():
            logger.warning(
                "Read replica %s failed; reading from the primary (or another"
                " replica) for %s s: %s",
                self.label,
                config.retry_seconds,
                one_line(error),
            )
        self.down_until = time.monotonic() + config.retry_seconds
        self.checked_at = -math.inf

    def usable(self, config: ReplicaConfig, lsn: int | None, now: float) -> bool:
        """Whether reads that need position ``lsn`` (None: any) may go here."""
        if now < self.down_until:
            return False
        if not self.postgres:
            # No position to compare: a recent write pins the client to the
            # primary for the whole window (the caller passes lsn then).
            return lsn is None
        if now - self.checked_at >= config.check_seconds:
            self._refresh(config, now)
            if now < self.down_until:
                return False
        if config.max_lag_seconds is not None and (
            self.lag is None or self.lag > config.max_lag_seconds
        ):
            return False
        return lsn is None or (self.replay_lsn is not None and self.replay_lsn >= lsn)

    def _refresh(self, config: ReplicaConfig, now: float) -> None:
        # One thread reads the status; the others use the cached one meanwhile.
        if not self._lock.acquire(blocking=False):
            return
        try:
            with self.engine.connect() as connection:
                row = connection.exec_driver_sql(_STATUS_SQL).one()
                connection.rollback()
            self.replay_lsn = None if row[1] is None else int(row[1])
            self.lag = None if row[2] is None else float(row[2])
            self.checked_at = now
        except Exception as e:
            self.fail(config, e)
        finally:
            self._lock.release()


class Replicas:
    """The replicas of one engine, taking turns."""

    def __init__(self, name: str, primary: sa.Engine, replicas: list[Replica]):
        self.name = name
        self.primary = primary
        self.replicas = replicas
        self.postgres = primary.dialect.name == "postgresql"
        self._turn = itertools.count()

    def candidates(self, config: ReplicaConfig, lsn: int | None) -> list[Replica]:
        """The replicas that may serve a read needing ``lsn``, next turn first."""
        now = time.monotonic()
        usable = [r for r in self.replicas if r.usable(config, lsn, now)]
        if len(usable) > 1:
            start = next(self._turn) % len(usable)
            usable = usable[start:] + usable[:start]
        return usable


def one_line(error: BaseException) -> str:
    from ._config import hide_password

    text = str(error).strip().splitlines()
    return hide_password(f"{type(error).__name__}: {text[0] if text else ''}")
