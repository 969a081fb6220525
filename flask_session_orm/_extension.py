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
from . import _keyset
from . import _metadata
from . import _pagination
from . import _recording
from . import _replicas
from . import _retry
from . import _scope
from ._binds import DEFAULT
from ._config import ConfigKeyError
from ._config import check_attempts
from ._config import read_config
from ._isolation import Isolation
from ._lifecycle import invalidate as _invalidate_session
from ._lifecycle import mark_no_autocommit
from ._metadata import Engines
from ._metadata import MetadataSource
from ._scoped import ScopedSession
from ._session import Session
from ._session import add_on_commit
from ._state import AppState

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
_V = t.TypeVar("_V")
_O = t.TypeVar("_O")


class SessionORM:
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

    # -- read replicas ----------------------------------------------------------

    def primary_only(self, target: _V) -> _V:
        """Decorate a view (function or class), or mark a blueprint, so that
        its requests read from the primary only, whatever their method.
        Returns ``target`` itself, marked. See :doc:`replicas`.

        .. versionadded:: 0.1.0
        """
        setattr(target, _replicas.READS_ATTRIBUTE, "primary")
        return target

    def replica_ok(self, target: _V) -> _V:
        """Decorate a view (function or class), or mark a blueprint, so that
        its requests may read from a replica until they write, whatever their
        method (a ``POST`` that searches, say). Returns ``target`` itself,
        marked. A mark on the view wins over one on its blueprint.
        See :doc:`replicas`.

        .. versionadded:: 0.1.0
        """
        setattr(target, _replicas.READS_ATTRIBUTE, "replica")
        return target

    def primary(self) -> t.ContextManager[None]:
        """A context manager (or decorator): the reads inside it go to the
        primary. In a request, the rest of the request then stays on the
        primary too, since its transaction is there. See :doc:`replicas`.

        .. versionadded:: 0.1.0
        """
        return _replicas.force("primary")

    def replica(self) -> t.ContextManager[None]:
        """A context manager (or decorator): the reads inside it may go to a
        replica even where they would not (a ``POST`` request, a CLI command,
        a job), as long as the request or transaction has not written or used
        the primary. Writes still go to the primary. See :doc:`replicas`.

        .. versionadded:: 0.1.0
        """
        return _replicas.force("replica")

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

    # -- hooks -------------------------------------------------------------------

    def object_session(self, obj: object) -> orm.Session | None:
        """Return the session that holds ``obj``, or None.

        Inside a request, every object the request loaded or added (pending or
        persistent) is held by the request's :attr:`session`. None means ``obj``
        is transient (never added) or detached (its session was closed, or it was
        expunged, or deleted and committed).

        :param obj: An instance of a mapped class.
        :raises TypeError: ``obj`` is not an instance of a mapped class (a mapped
            class itself is not); the message names what was passed.

        .. versionadded:: 0.1.0
        """
        return _instance_state(obj).session

    def get_bind(self, obj: object) -> sa.Engine | sa.Connection:
        """Return the engine, or connection, that ``obj`` talks to.

        - A model instance: the engine its model is bound to
          (``SESSION_ORM_BINDS``, ``__bind_key__``, else ``"default"``), whether
          the instance is transient, pending or persistent. Inside
          :meth:`isolation` that is the isolation's connection to the engine.
        - A :class:`~sqlalchemy.orm.Session`: its default engine.
        - An :class:`~sqlalchemy.engine.Engine` or a
          :class:`~sqlalchemy.engine.Connection`: itself.

        - A :class:`~sqlalchemy.Table` or a statement (``select(Model)``,
          ``insert(table)``, ...): the engine :meth:`bind_name` names (the
          isolation's connection inside :meth:`isolation`).

        :raises TypeError: ``obj`` is none of these; the message names what was
            passed.

        .. versionadded:: 0.1.0
        """
        if isinstance(obj, (sa.Engine, sa.Connection)):
            return obj
        if isinstance(obj, orm.Session):
            return obj.get_bind()
        state = _inspect_instance(obj)
        if state is None:
            # A mapped class is refused, as a likely slip for an instance;
            # bind_name() answers for classes.
            if isinstance(obj, sa.ClauseElement):
                app_state = _scope.app_state(self)
                name = _metadata.bind_name(app_state, obj)
                if name is not None:
                    return app_state.targets[name]
            raise TypeError(
                "get_bind() takes a model instance, a Session, an Engine, a"
                f" Connection, a Table or a statement, got {_describe(obj)}."
            )
        session = state.session
        if session is not None:
            return session.get_bind(mapper=state.mapper)
        app_state = _scope.app_state(self)
        return app_state.targets[app_state.router.for_mapper(state.mapper)]

    def is_deleted(self, obj: object) -> bool:
        """Return whether ``obj`` is marked deleted in its session.

        True from ``session.delete(obj)`` on, before and after the flush, until
        the transaction ends: a rollback makes the object persistent again, a
        commit detaches it (False both).

        :raises TypeError: ``obj`` is not an instance of a mapped class.

        .. versionadded:: 0.1.0
        """
        state = _instance_state(obj)
        if state.deleted:
            return True
        session = state.session
        return session is not None and obj in session.deleted

    def has_changes(
        self,
        obj: object,
        attrs: str | t.Iterable[str] | None = None,
        exclude: str | t.Iterable[str] | None = None,
    ) -> bool:
        """Return whether ``obj`` has changes not flushed yet.

        A change is a column attribute set to a different value (setting the
        value it has is none), a changed relationship, or, for a new object, an
        attribute it was given. A flush clears them. Nothing is loaded from the
        database to answer.

        :param attrs: Look only at these attributes: one name or several.
        :param exclude: Look at every attribute but these: one name or several.
        :raises ValueError: A name in ``attrs`` or ``exclude`` is not an attribute
            of the model.
        :raises TypeError: ``obj`` is not an instance of a mapped class.

        .. versionadded:: 0.1.0
        """
        state = _instance_state(obj)
        names = set(state.mapper.attrs.keys())
        selected = names if attrs is None else _names("attrs", attrs, names, obj)
        if exclude is not None:
            selected = selected - _names("exclude", exclude, names, obj)
        return any(state.attrs[name].history.has_changes() for name in selected)

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

    def no_autocommit(self, view: F) -> F:
        """Decorate a view so that its requests are never committed
        automatically, whatever the response.

        The view commits what it keeps itself (``db.session.commit()``); what is
        left uncommitted is rolled back at the end of the request, and the
        session is closed as usual. Works written above or below
        ``@app.route``, with ``add_url_rule`` and blueprints, and on class-based
        views (decorate the class, or list it in their ``decorators``)::

            @app.post("/import")
            @db.no_autocommit
            def import_rows():
                ...

        Returns ``view`` itself, marked.

        .. versionadded:: 0.1.0
        """
        mark_no_autocommit(view)
        return view

    def mark_for_rollback(self) -> None:
        """Roll back the current request at its end, whatever its response.

        The response is sent as the view returned it; the automatic commit is
        replaced by a rollback, and :meth:`on_commit` callbacks waiting for it
        are dropped. What the view committed itself (``db.session.commit()``),
        before or after the call, stays committed. Can be called before the
        session is first used.

        :raises RuntimeError: Called outside a request, where nothing is
            committed automatically anyway.

        .. versionadded:: 0.1.0
        """
        if not _scope.in_request():
            raise RuntimeError(
                "'mark_for_rollback()' works inside a request only (not in an app"
                " context pushed inside it, nor in a copied or test request"
                " context); outside requests nothing is committed automatically."
            )
        scope = _scope.get(self)
        if scope.finished:
            raise RuntimeError(
                "'mark_for_rollback()' was called after the request's commit"
                " decision was taken (in a streamed body or a teardown function):"
                " it can no longer change it. What is done from here on is not"
                " committed automatically; call it in the view, an error handler"
                " or an after_request function instead."
            )
        scope.rollback_only = True

    # -- queries and pagination ------------------------------------------------

    def get_or_404(
        self,
        entity: type[_O],
        ident: t.Any,
        *,
        description: str | None = None,
        **kwargs: t.Any,
    ) -> _O:
        """Like :meth:`session.get() <sqlalchemy.orm.Session.get>`, but abort with
        ``404 Not Found`` instead of returning None.

        :param entity: The model class.
        :param ident: Its primary key.
        :param description: A message for the error page.
        :param kwargs: More arguments for ``session.get()``.

        .. versionadded:: 0.1.0
        """
        return _pagination.get_or_404(self, entity, ident, description, kwargs)

    def first_or_404(
        self, statement: sa.Select[t.Any], *, description: str | None = None
    ) -> t.Any:
        """Like :meth:`Result.scalar() <sqlalchemy.engine.Result.scalar>`, but
        abort with ``404 Not Found`` instead of returning None.

        :param statement: The ``select`` statement to execute.
        :param description: A message for the error page.

        .. versionadded:: 0.1.0
        """
        return _pagination.first_or_404(self, statement, description)

    def one_or_404(
        self, statement: sa.Select[t.Any], *, description: str | None = None
    ) -> t.Any:
        """Like :meth:`Result.scalar_one() <sqlalchemy.engine.Result.scalar_one>`,
        but abort with ``404 Not Found`` instead of raising for no row or for
        several rows.

        :param statement: The ``select`` statement to execute.
        :param description: A message for the error page.

        .. versionadded:: 0.1.0
        """
        return _pagination.one_or_404(self, statement, description)

    def paginate(
        self,
        select: sa.Select[t.Any],
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = None,
        error_out: bool = True,
        count: bool = True,
    ) -> _pagination.Pagination:
        """Return one page of ``select``'s results, by page number, as a
        :class:`~flask_session_orm.Pagination`; Flask-SQLAlchemy's signature and
        behaviour.

        The page is fetched with LIMIT and OFFSET; the items are
        ``session.execute(...).unique().scalars()``, so select a model, as in
        ``select(User).order_by(User.id)``. For large tables, see
        :meth:`paginate_keyset`.

        :param select: The ``select`` statement; order it, or pages are not stable.
        :param page: The page number, from 1. Default: the ``page`` query-string
            argument in a request, else 1.
        :param per_page: The largest number of items on a page. Default: the
            ``per_page`` query-string argument in a request, else 20.
        :param max_per_page: A cap on ``per_page`` (for values from the query
            string); None for none.
        :param error_out: Abort with ``404 Not Found`` for a page or page size
            that is not an integer or is below 1, and for an empty page other
            than the first. False: use 1 and 20 instead, and return the empty page.
        :param count: Count the results with a second query, for
            :attr:`~flask_session_orm.Pagination.total` and
            :attr:`~flask_session_orm.Pagination.pages`. False leaves ``total``
            None.

        .. versionadded:: 0.1.0
        """
        return _pagination.Pagination(
            self,
            select,
            page=page,
            per_page=per_page,
            max_per_page=max_per_page,
            error_out=error_out,
            count=count,
        )

    def paginate_keyset(
        self,
        select: sa.Select[t.Any],
        *,
        per_page: int | None = None,
        max_per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        error_out: bool = True,
    ) -> _keyset.KeysetPagination:
        """Return the page of ``select``'s results after (or before) a cursor, as
        a :class:`~flask_session_orm.KeysetPagination`, without an OFFSET.

        ``select`` must be ordered by a unique key, or by columns ending with
        one (``order_by(Post.created_at.desc(), Post.id.desc())``), ascending or
        descending. The page is found with a WHERE on those columns, so an index
        on them makes every page as fast as the first. See :doc:`pagination`.

        :param select: The ordered ``select`` statement.
        :param per_page: The largest number of items on a page. Default: the
            ``per_page`` query-string argument in a request, else 20.
        :param max_per_page: A cap on ``per_page``; None for none.
        :param after: A :attr:`~flask_session_orm.KeysetPagination.next_cursor`:
            return the page after it.
        :param before: A :attr:`~flask_session_orm.KeysetPagination.prev_cursor`:
            return the page before it. When neither is given, in a request,
            they are read from the ``after`` and ``before`` query-string
            arguments; an empty string means the first page.
        :param error_out: Abort with ``400 Bad Request`` for a cursor that is
            not valid (altered, for another ordering, signed with another
            ``SECRET_KEY``) or for both arguments in the query string, and with
            ``404 Not Found`` for a bad page size or an empty page reached
            through a cursor. False: the first page, the default page size, the
            empty page.
        :raises ValueError: ``select`` is not ordered, or by something that
            cannot be compared (a string, ``text()``, NULLS FIRST/LAST, a window
            function, a nullable column); both ``after`` and ``before`` were
            passed; the row a cursor is made from has NULL in an ordering
            expression.
        :raises TypeError: ``select`` is not a ``select()`` statement.
        :raises RuntimeError: The app has no ``SECRET_KEY`` to sign cursors with.

        .. versionadded:: 0.1.0
        """
        return _keyset.paginate_keyset(
            self,
            select,
            per_page=per_page,
            max_per_page=max_per_page,
            after=after,
            before=before,
            error_out=error_out,
        )

    # -- retry -------------------------------------------------------------------

    @t.overload
    def retry(self, view: F, /) -> F: ...

    @t.overload
    def retry(
        self, view: None = None, /, *, attempts: int = 3
    ) -> t.Callable[[F], F]: ...

    def retry(
        self, view: F | None = None, /, *, attempts: int = 3
    ) -> F | t.Callable[[F], F]:
        """Decorate a view so that its request runs again, up to ``attempts``
        times in all, when its transaction fails on a concurrency conflict.

        A serialization failure or a deadlock (PostgreSQL SQLSTATE ``40001`` and
        ``40P01``; MySQL and MariaDB errors 1213 and 1205; SQLite's "database is
        locked" on Python 3.11+; anything :meth:`retryable` accepts) raised by
        the view, a ``before_request`` or ``after_request`` function, a flush
        or the end-of-request commit ends the attempt: its transaction is rolled
        back, its session closed, and after a short randomized backoff
        (``SESSION_ORM_RETRY_BACKOFF``) the request is dispatched again, from
        the ``before_request`` functions on, with ``g`` as it was when the
        request started, a new session, the same body and form, and
        :attr:`attempt` one higher. :data:`~flask_session_orm.signals.request_retried`
        is sent. :meth:`on_commit` callbacks and ``session_committed`` belong to
        the attempt that committed.

        The last attempt's error, an error of another kind, and any error after
        the view committed itself go through Flask's error handling as usual
        (the app's error handler, else a 500). See :doc:`retry`.

        Works written above or below ``@app.route``, on blueprints and on
        class-based views, with or without arguments::

            @app.post("/transfer")
            @db.retry(attempts=5)
            @db.transaction(isolation_level="SERIALIZABLE")
            def transfer():
                ...

        ``attempts=1`` turns retry off for a view when
        ``SESSION_ORM_RETRY_ATTEMPTS`` turns it on for every view.

        :param attempts: How many times the request runs at most, the first
            included.
        :raises TypeError: ``attempts`` is not an integer.
        :raises ValueError: ``attempts`` is less than 1.

        .. versionadded:: 0.1.0
        """
        attempts = check_attempts("The argument 'attempts'", attempts)

        def decorator(view: F) -> F:
            _retry.mark(view, _retry.RETRY, attempts)
            return view

        if view is not None:
            return decorator(view)
        return decorator

    def transaction(self, *, isolation_level: str) -> t.Callable[[F], F]:
        """Decorate a view so that its request's transactions run at
        ``isolation_level``.

        The level is set on each connection the request's session checks out,
        before its first statement, on every engine, and reset when the
        connection goes back to the pool. For the whole app, give the engines
        the ``isolation_level`` option instead (``SESSION_ORM_ENGINE_OPTIONS``).
        Inside :meth:`isolation` (tests) the level is not changed: the test's
        transaction is already open. Combine it with :meth:`retry`, since
        ``SERIALIZABLE`` and ``REPEATABLE READ`` make the database abort
        transactions that conflict::

            @app.post("/book")
            @db.retry(attempts=5)
            @db.transaction(isolation_level="SERIALIZABLE")
            def book():
                ...

        :param isolation_level: ``"SERIALIZABLE"``, ``"REPEATABLE READ"``,
            ``"READ COMMITTED"`` or ``"READ UNCOMMITTED"``, as the database
            supports them (SQLite: the first and the last).
        :raises ValueError: Another level, or ``"AUTOCOMMIT"``.

        .. versionadded:: 0.1.0
        """
        level = _retry.check_isolation_level(isolation_level)

        def decorator(view: F) -> F:
            _retry.mark(view, _retry.TRANSACTION, level)
            return view

        return decorator

    def retryable(
        self, predicate: t.Callable[[BaseException], bool], /
    ) -> t.Callable[[BaseException], bool]:
        """Register ``predicate(exception) -> bool``: an exception for which it
        returns True is retried like a serialization failure (in the views that
        retry). Usable as a decorator; returns ``predicate``.

        It is asked about the exception and about each exception that one was
        raised from (``raise ... from``). Mark only errors that leave nothing
        done: running the request again must be safe.

        .. versionadded:: 0.1.0
        """
        if not callable(predicate):
            raise TypeError(
                "'retryable()' takes a function of an exception, got"
                f" {type(predicate).__name__!r}."
            )
        self._retry_predicates.append(predicate)
        return predicate

    @property
    def attempt(self) -> int:
        """The number of the current attempt of the request: 1, then 2 for the
        first retry, and so on. 1 outside requests and in views that do not
        retry.

        .. versionadded:: 0.1.0
        """
        if not _scope.in_request():
            return 1
        scope = _scope.peek()
        attempt = scope.attempt if scope is not None else None
        return 1 if attempt is None else attempt.number

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


def _inspect_instance(obj: object) -> orm.InstanceState[t.Any] | None:
    """The ORM state of ``obj``, or None when it is not a mapped instance."""
    # A mapped class inspects to its Mapper, and an Engine or a Connection to an
    # Inspector, which opens a database connection: none of them is an instance,
    # so they are not inspected at all.
    if isinstance(obj, (type, sa.Engine, sa.Connection)):
        return None
    state = sa.inspect(obj, raiseerr=False)
    return state if isinstance(state, orm.InstanceState) else None


def _instance_state(obj: object) -> orm.InstanceState[t.Any]:
    """The ORM state of ``obj``; TypeError when it is not a mapped instance."""
    state = _inspect_instance(obj)
    if state is None:
        reason = "not an instance" if isinstance(obj, type) else "not mapped"
        raise TypeError(
            f"Expected an instance of a mapped class, got {_describe(obj)}, which"
            f" is {reason}."
        )
    return state


def _describe(obj: object) -> str:
    """Name what was passed: its type, or the class itself."""
    if isinstance(obj, type):
        return f"the class {obj.__name__!r}"
    return repr(type(obj).__name__)


def _names(
    argument: str, value: str | t.Iterable[str], known: set[str], obj: object
) -> set[str]:
    names = {value} if isinstance(value, str) else set(value)
    unknown = names - known
    if unknown:
        raise ValueError(
            f"Argument {argument!r} names {', '.join(sorted(unknown))!s}, not an"
            f" attribute of {type(obj).__name__!r}."
        )
    return names
