"""The SessionORM extension object: init_app and the public methods."""

from __future__ import annotations

import contextlib
import functools
import types
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import _cli
from . import _metadata
from . import _recording
from . import _replicas
from . import _scope
from ._binds import DEFAULT
from ._config import ConfigKeyError
from ._config import read_config
from ._inspection import InspectionMethods
from ._inspection import _describe
from ._isolation import Isolation
from ._lifecycle import invalidate as _invalidate_session
from ._metadata import Engines
from ._metadata import MetadataSource
from ._query_methods import QueryMethods
from ._scoped import ScopedSession
from ._session import Session
from ._session import add_on_commit
from ._state import AppState
from ._view_control import ViewControlMethods

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
_V = t.TypeVar("_V")
_O = t.TypeVar("_O")


class SessionORM(InspectionMethods, QueryMethods, ViewControlMethods):
    """Give every request one SQLAlchemy session, committed when the request
    succeeded and rolled back otherwise.

    :param app: Call :meth:`init_app` on this app now.
    :param engine_options: Default ``create_engine`` options for every engine;
        ``SESSION_ORM_ENGINE_OPTIONS`` and per-engine options override them.
    :param session_options: Default ``sessionmaker`` options;
        ``SESSION_ORM_SESSION_OPTIONS`` and the dedicated keys override them.
    :param metadata: The metadata of the app's models: a declarative base
        class, a :class:`~sqlalchemy.MetaData`, or a list of them. Used by
        :attr:`metadata`, :attr:`metadatas` (Flask-Migrate), and by
        :meth:`create_all` / :meth:`drop_all` called without a target. See
        :meth:`register_metadata` to add it later.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        engine_options: t.Mapping[str, t.Any] | None = None,
        session_options: t.Mapping[str, t.Any] | None = None,
        metadata: MetadataSource | t.Iterable[MetadataSource] | None = None,
    ) -> None:
        # Validated by init_app, with the app's config, so errors name the key.
        self._engine_options = engine_options
        self._session_options = session_options
        # Code, not configuration: the same for every app of this extension.
        self._metadata: list[sa.MetaData] = []
        if metadata is not None:
            self._metadata = _metadata.to_metadata_list("metadata", metadata)

        #: The functions registered with :meth:`retryable`.
        self._retry_predicates: list[t.Callable[[BaseException], bool]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Read and validate the app's ``SESSION_ORM_*`` config, create its
        engines (without connecting), and register the request hooks, the
        ``db-shell`` command and the shell context.

        The config is read once; changing it afterwards has no effect.

        :raises RuntimeError: ``init_app`` was already called for this app.
        """
        if _scope.EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"'init_app' was already called for the Flask app {app.name!r}; a"
                " SessionORM is registered on an app once."
            )
        config = read_config(
            app.config,
            instance_path=app.instance_path,
            engine_defaults=self._engine_options,
            session_defaults=self._session_options,
        )
        state = AppState(self, app, config)
        app.extensions[_scope.EXTENSION_KEY] = state
        _scope.install(app, self)
        _recording.install(state)
        if state.replicas:
            for replicas in state.replicas.values():
                for replica in replicas.replicas:
                    _recording.attach_engine(
                        config.recording, replica.engine, replica.label
                    )
            _replicas.install(app)
        _cli.init_cli(app, self)

    # -- sessions and engines ----------------------------------------------------

    @property
    def session(self) -> orm.Session:
        """The session of the current request, or of the current app context
        outside requests. Created on first use.
        """
        scope = _scope.get(self)
        session = scope.session
        if session is None:
            session = scope.open()
        return session

    if not t.TYPE_CHECKING:
        # Hidden from type checkers, so that a misspelt attribute of db is
        # still an error there.

        def __getattr__(self, name: str) -> t.Any:
            """Session methods called on ``db`` itself go to :attr:`session`.

            Libraries that accept "the db object or a session" and use any
            object they do not recognize as a session (Flask-Admin 2's
            ``ModelView(User, db)``) then work: ``db.query(...)`` and
            ``db.add(...)`` are the current context's session's.
            """
            if not name.startswith("_") and hasattr(orm.Session, name):
                return getattr(self.session, name)
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )

    @functools.cached_property
    def scoped_session(self) -> ScopedSession:
        """A :class:`~sqlalchemy.orm.scoped_session` that always means the
        session of the current request (or app context outside requests): the
        same object as :attr:`session` at the moment it is used.

        Unlike :attr:`session`, it can be captured once, at import, outside any
        context, and handed to libraries that keep a session: Flask-Admin,
        marshmallow-sqlalchemy, factory_boy, WTForms-SQLAlchemy
        (:doc:`integrations`). Each request still gets its own session, committed
        or rolled back and closed at its end as usual.

        - Calling it, or any session method on it, uses the current context's
          session; outside any context that raises :exc:`RuntimeError`.
        - ``remove()`` closes the current context's session: its transaction is
          rolled back and its connections go back to the pool; used again, it
          begins a new transaction. It does nothing outside any context.
        - ``configure()`` and calling it with arguments raise
          :exc:`RuntimeError`: sessions are configured by the app's config.
        - ``sqlalchemy.event.listen(db.scoped_session, "after_commit", fn)``,
          at import, listens on :class:`Session`, the class of every session of
          flask-session-orm (of every :class:`SessionORM` in the process).

        The object is the same for the life of ``db``.

        .. versionadded:: 0.1.0
        """
        return ScopedSession(self)

    @property
    def sessionmaker(self) -> orm.sessionmaker[Session]:
        """The configured :class:`~sqlalchemy.orm.sessionmaker` of the current app,
        for work outside requests (``with db.sessionmaker() as session: ...``).
        Nothing is committed for sessions made with it: commit explicitly.
        """
        return _scope.app_state(self).sessionmaker

    @property
    def engines(self) -> t.Mapping[str, sa.Engine]:
        """The current app's engines, by name (read-only).

        ``db.engines[None]`` and ``db.engines.get(None)`` are the ``"default"``
        engine too, as in Flask-SQLAlchemy, for Flask-Migrate's multi-database
        ``env.py``; iterating gives the names.
        """
        return Engines(_scope.app_state(self).engines)

    @property
    def engine(self) -> sa.Engine:
        """The current app's ``"default"`` engine."""
        return self.get_engine(DEFAULT)

    def get_engine(
        self, name: str | None = DEFAULT, *, bind: str | None = None
    ) -> sa.Engine:
        """The current app's engine called ``name``.

        :param name: The engine's name; None is ``"default"``.
        :param bind: The same, under Flask-SQLAlchemy's name for it (as
            Flask-Migrate's multi-database ``env.py`` passes it): None is
            ``"default"``, another value wins over ``name``.
        :raises KeyError: There is no such engine.
        """
        if bind is not None:
            name = bind
        if name is None:
            name = DEFAULT
        engines = _scope.app_state(self).engines
        try:
            return engines[name]
        except KeyError:
            raise ConfigKeyError(
                f"No engine named {name!r}. The engines that exist are:"
                f" {', '.join(sorted(engines))}."
            ) from None

    @property
    def replica_engines(self) -> t.Mapping[str, tuple[sa.Engine, ...]]:
        """The current app's read replica engines, by the name of the engine
        they replicate (``SESSION_ORM_REPLICAS``); empty without replicas.

        .. versionadded:: 0.1.0
        """
        return types.MappingProxyType(
            {
                name: tuple(replica.engine for replica in replicas.replicas)
                for name, replicas in _scope.app_state(self).replicas.items()
            }
        )

    def create_all(self, target: t.Any = None) -> None:
        """Create the tables of ``target`` (a declarative base or a
        :class:`~sqlalchemy.MetaData`), each on the engine its model is bound to.

        :param target: Default: the registered :attr:`metadata`.
        :raises RuntimeError: :attr:`session` has a transaction in progress,
            whose locks would make the DDL wait for ever; commit or close it
            first. (Inside :meth:`isolation` it shares the DDL's connection
            and is no obstacle.)
        """
        self._ddl(target, create=True)

    def drop_all(self, target: t.Any = None) -> None:
        """Drop the tables of ``target``, each on the engine its model is bound
        to. The same arguments and errors as :meth:`create_all`.
        """
        self._ddl(target, create=False)

    def _ddl(self, target: t.Any, *, create: bool) -> None:
        if target is None:
            if not self._metadata:
                method = "create_all" if create else "drop_all"
                raise _metadata.no_metadata_error(f"db.{method}() without a target")
            sources = self._metadata
        else:
            metadata = target if isinstance(target, sa.MetaData) else None
            if metadata is None:
                metadata = getattr(target, "metadata", None)
            if not isinstance(metadata, sa.MetaData):
                raise TypeError(
                    "create_all() and drop_all() take a declarative base or a"
                    f" MetaData, got {type(target).__name__!r}."
                )
            sources = [metadata]
        _metadata.run_ddl(_scope.app_state(self), sources, create=create)

    # -- metadata and Flask-Migrate ----------------------------------------------

    def register_metadata(self, *targets: MetadataSource) -> None:
        """Add the metadata of the app's models, as the ``metadata`` argument
        of :class:`SessionORM` does: for when the base class is defined after
        the extension object. Registering one twice does nothing.

        :param targets: Declarative base classes or
            :class:`~sqlalchemy.MetaData` objects.
        :raises TypeError: A target is neither.

        .. versionadded:: 0.1.0
        """
        for metadata in _metadata.to_metadata_list("metadata", targets):
            if not any(metadata is known for known in self._metadata):
                self._metadata.append(metadata)

    @property
    def metadata(self) -> sa.MetaData:
        """The registered :class:`~sqlalchemy.MetaData` (the ``metadata``
        argument, or :meth:`register_metadata`): the same object as
        ``Base.metadata``, so ``sa.Table("name", db.metadata, ...)`` defines a
        table of the app's models. Needs no app context.

        :raises RuntimeError: None is registered, or several are (then use
            each base's own ``metadata``).

        .. versionadded:: 0.1.0
        """
        if not self._metadata:
            raise _metadata.no_metadata_error("db.metadata")
        if len(self._metadata) > 1:
            raise RuntimeError(
                f"db.metadata is ambiguous: {len(self._metadata)} MetaData objects"
                " are registered with this SessionORM. Use the metadata of each"
                " base class, or db.metadatas for the tables of each engine."
            )
        return self._metadata[0]

    @property
    def metadatas(self) -> t.Mapping[str | None, sa.MetaData]:
        """The registered tables of the current app by engine, read-only:
        ``None`` (or ``"default"``) for the ``"default"`` engine, the name of
        each other engine, and a :class:`~sqlalchemy.MetaData` holding copies
        of exactly the tables routed to it (``SESSION_ORM_BINDS``, then
        ``__bind_key__``, else ``"default"``), with their constraints, indexes
        and schema. Every engine has an entry. This is what Flask-Migrate's
        ``env.py`` compares each database with.

        Computed for the current app, since routing is configuration, and
        kept until a registered MetaData gains or loses a table. The copies
        are for comparing and DDL, not for queries: use the models.

        :raises RuntimeError: No metadata is registered; or outside an app
            context.

        .. versionadded:: 0.1.0
        """
        if not self._metadata:
            raise _metadata.no_metadata_error("db.metadatas")
        return _metadata.metadatas(_scope.app_state(self), self._metadata)

    def bind_names(self) -> list[str]:
        """The names of the current app's engines other than ``"default"``,
        in configuration order (Flask-Migrate's multi-database template makes
        one section per name).

        .. versionadded:: 0.1.0
        """
        return [name for name in _scope.app_state(self).engines if name != DEFAULT]

    def bind_name(self, obj: object) -> str:
        """The name of the engine ``obj`` is routed to in the current app.

        :param obj: A :class:`~sqlalchemy.Table`, a mapped class or an instance
            of one, a :class:`~sqlalchemy.orm.Mapper`, or a Core statement (the
            engine of the first table it names, as the session routes it).
        :raises TypeError: ``obj`` is none of these.
        :raises ValueError: Its ``__bind_key__`` names no engine.

        .. versionadded:: 0.1.0
        """
        name = _metadata.bind_name(_scope.app_state(self), obj)
        if name is None:
            raise TypeError(
                "bind_name() takes a Table, a mapped class or instance, a Mapper"
                f" or a statement, got {_describe(obj)}."
            )
        return name

    def recorded_queries(self) -> list[_recording.RecordedQuery]:
        """The SQL statements run so far in the current request (or, outside
        requests, the current app context), oldest first, with their
        parameters, duration, engine and the place in the app's code that ran
        them. See :doc:`queries`.

        :raises RuntimeError: ``SESSION_ORM_RECORD_QUERIES`` is off for the app.

        .. versionadded:: 0.1.0
        """
        return _recording.recorded_queries(_scope.app_state(self))

    def invalidate(self) -> None:
        """Discard the current session and its database connections.

        For a connection in a state that cannot be trusted (an interrupted
        statement, changed connection settings, a driver error): the session's
        connections are invalidated, closed and never returned to the pool, and
        the session is closed, its uncommitted work and :meth:`on_commit`
        callbacks dropped. :data:`~flask_session_orm.signals.session_invalidated`
        is sent (not ``session_rolled_back``).

        In a request, the view's response is sent, and the end of the request
        neither commits nor raises. Using :attr:`session` afterwards gives a new,
        working session; the rest of the request is not committed automatically
        either, so commit explicitly what it must keep. Called before the session
        was used, it discards nothing but still turns the automatic commit off.

        The same happens by itself when a lost connection (a disconnect error)
        reaches a request: its session is invalidated instead of rolled back, and
        the next request gets a new connection.

        Works in an app context too.

        .. versionadded:: 0.1.0
        """
        scope = _scope.get(self)
        scope.invalidated = True
        session = scope.session
        if session is not None:
            # A later db.session in this scope creates a new session.
            scope.session = None
            _invalidate_session(scope, session)

    def on_commit(
        self, func: t.Callable[..., object], /, *args: t.Any, **kwargs: t.Any
    ) -> None:
        """Call ``func(*args, **kwargs)`` after the current transaction of
        :attr:`session` is committed.

        Callbacks run once, in registration order, right after the commit
        succeeded; at the end of a request, before the response is returned.
        With no transaction in progress, one is begun (as ``session.add()``
        does) and the callback waits for its commit.

        A callback never runs if its transaction is rolled back instead (an error
        response, an exception, a failed commit, :meth:`mark_for_rollback`,
        :meth:`invalidate`). One registered inside a savepoint
        (``session.begin_nested()``) that is rolled back is dropped with it; the
        others are kept.

        An exception raised by ``func`` is logged with its traceback on the
        ``flask_session_orm`` logger and changes nothing else: the data stays
        committed, later callbacks still run, the response is unchanged. A
        callback may use :attr:`session`; that starts a new transaction, which it
        must commit itself.

        Only for :attr:`session` (of the request or the app context), not for
        sessions made with :attr:`sessionmaker`.

        .. versionadded:: 0.1.0
        """
        add_on_commit(t.cast(Session, self.session), func, args, kwargs)

    # -- testing -----------------------------------------------------------------

    @contextlib.contextmanager
    def isolation(self, app: flask.Flask | None = None) -> t.Iterator[None]:
        """Roll back, on exit, everything written through this extension inside
        the block: by the code in it, by test-client requests and by views that
        commit, on every engine of the app.

        Sessions created inside the block join one transaction per engine
        through savepoints, so their commits and rollbacks keep their meaning
        until the block ends. What it covers and what not: :doc:`testing`.

        :param app: The app; default the current one. No context needs to be
            pushed when it is given.
        :raises RuntimeError: The isolation is already active for this app.

        .. versionadded:: 0.1.0
        """
        state = _scope.app_state(self, app)
        if state.isolation is not None:
            raise RuntimeError(
                f"db.isolation() is already active for the Flask app"
                f" {state.app.name!r}; it cannot be nested."
            )
        isolation = Isolation(state.engines)
        state.isolation = isolation
        try:
            yield
        finally:
            state.isolation = None
            isolation.stop()
