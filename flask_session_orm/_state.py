"""The state a :class:`.SessionORM` keeps per app, and the engines it creates."""

from __future__ import annotations

import os
import typing as t
import weakref

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import _ping
from . import _scope
from ._binds import Router
from ._config import Config
from ._config import EngineConfig
from ._config import hide_password
from ._config import render_url
from ._replica_health import Replica
from ._replica_health import Replicas
from ._replicas import ReplicaSession
from ._session import Session

if t.TYPE_CHECKING:
    from ._extension import SessionORM
    from ._isolation import Isolation

# Every engine this extension created, so that a forked child (gunicorn or uWSGI
# with preload, multiprocessing, Celery) drops the pooled connections it inherited
# instead of sharing their sockets with the parent. dispose(close=False) leaves the
# parent's connections alone and gives the child a fresh pool.
_all_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _dispose_after_fork() -> None:
    for engine in list(_all_engines):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_after_fork)


class AppState:
    """What one :class:`SessionORM` keeps for one app, in ``app.extensions``."""

    def __init__(self, db: SessionORM, app: flask.Flask, config: Config) -> None:
        self.db = db
        self.app = app
        self.config = config
        self.engines: dict[str, sa.Engine] = {
            name: _create_engine(spec) for name, spec in config.engines.items()
        }
        self.engine_names: dict[sa.Engine, str] = {
            engine: name for name, engine in self.engines.items()
        }
        self.router = Router(self.engines, config.binds)
        self.isolation: Isolation | None = None
        #: Engine name -> its read replicas; empty when none is configured.
        self.replicas: dict[str, Replicas] = {}
        session_class = Session
        if config.replicas is not None:
            session_class = ReplicaSession
            for name, specs in config.replicas.engines.items():
                self.replicas[name] = Replicas(
                    name,
                    self.engines[name],
                    [Replica(_create_engine(spec), spec.name) for spec in specs],
                )
        self.sessionmaker: orm.sessionmaker[Session] = orm.sessionmaker(
            class_=session_class, orm_state=self, **config.session_options
        )

    @property
    def targets(self) -> t.Mapping[str, sa.Engine | sa.Connection]:
        """Engines, or the isolation connections while a test isolates."""
        if self.isolation is not None:
            return self.isolation.connections
        return self.engines


def _create_engine(spec: EngineConfig) -> sa.Engine:
    try:
        engine = sa.create_engine(spec.url, **spec.options)
    except Exception as e:
        # The original error may quote the URL; show only the sanitized text.
        raise ValueError(
            f"Config key {spec.key!r} could not create the engine {spec.name!r} for"
            f" {render_url(spec.url)!r}: {hide_password(f'{type(e).__name__}: {e}')}"
        ) from None
    sa.event.listen(engine, "handle_error", _note_disconnect)
    if spec.ping_idle_after is not None:
        _ping.install(engine, spec.ping_idle_after)
    _all_engines.add(engine)
    return engine


def _note_disconnect(context: sa.engine.ExceptionContext) -> None:
    # SQLAlchemy invalidates the connection and its pool on a disconnect; the
    # session that used it must then be invalidated too, not rolled back. A
    # disconnect found by the pool's pre-ping concerns an idle connection that
    # the pool replaces at once: the session never saw it. (SQLAlchemy before
    # 2.0.5 has no is_pre_ping; there a pre-ping is the only case without an
    # engine.)
    if context.is_disconnect and not getattr(
        context, "is_pre_ping", context.engine is None
    ):
        scope = _scope.peek()
        if scope is not None:
            scope.disconnected = True
