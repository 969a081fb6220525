"""Per-view control: no automatic commit, rollback, retry, isolation level and
replica routing.
"""

from __future__ import annotations

import typing as t

from . import _replicas
from . import _retry
from . import _scope
from ._config import check_attempts
from ._lifecycle import mark_no_autocommit

if t.TYPE_CHECKING:
    pass

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
_V = t.TypeVar("_V")


class ViewControlMethods:
    """:class:`.SessionORM` methods that control what a view's requests do."""

    #: The functions registered with :meth:`retryable` (set by SessionORM).
    _retry_predicates: list[t.Callable[[BaseException], bool]]

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
