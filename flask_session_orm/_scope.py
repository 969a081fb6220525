"""Which session belongs to the current request or app context.

Every session lives on the ``g`` of the app context it was created in, so an
object cached in ``g`` (Flask-Login's user) stays attached to its session for as
long as that ``g`` lives. An app context holds at most two sessions:

- the *request* session, for the requests dispatched in it. Each request commits
  or rolls it back at its end. Flask (up to 3.1) dispatches a request in an app
  context pushed before it for the same app (pytest-flask pushes one for every
  test), so several test-client requests may share one app context, one ``g``
  and so this session, each with its own transaction;
- the *context* session, for everything else that runs in the app context: a
  CLI command, a job, test code, an app context pushed inside a view, a request
  context copied with ``copy_current_request_context`` or made with
  ``test_request_context``. Nothing is committed for it automatically.

Which one ``db.session`` means is decided by the request context being
dispatched in the current app context: :func:`install` records it, at the start
of :meth:`flask.Flask.full_dispatch_request`, as ``g._session_orm_dispatched``.
The request session is used only while that request context is the current one
*and* the current app context is the one it was dispatched in; any context pushed
inside the view is a context of its own.
"""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy as sa
from flask.globals import _cv_app
from flask.globals import _cv_request

from . import _lifecycle
from . import _retry
from ._session import Session
from ._session import note_statement

if t.TYPE_CHECKING:
    from ._extension import SessionORM
    from ._state import AppState

EXTENSION_KEY = "session_orm"
#: The request session's scope, on ``g``.
REQUEST_KEY = "_session_orm_request"
#: The app context's own scope, on ``g``.
CONTEXT_KEY = "_session_orm"
#: The request context dispatched in this app context, on ``g``.
DISPATCHED_KEY = "_session_orm_dispatched"
#: The request context whose commit decision was taken, on ``g``.
DECIDED_KEY = "_session_orm_decided"


class Scope:
    """One session and the decisions about its end.

    The flags are class attributes, so that creating a scope (once per request
    that uses the database) sets only what differs from them. A request scope is
    reused by the next request dispatched in the same app context;
    :meth:`start_request` then resets the flags.
    """

    #: The session, created on first use of ``db.session``.
    session: Session | None = None
    #: The commit decision was taken for the current request.
    finished = False
    #: db.invalidate() was called: never commit this request automatically.
    invalidated = False
    #: db.mark_for_rollback() was called.
    rollback_only = False
    #: An exception escaped the view (even if an error handler answered it).
    raised = False
    #: A disconnect error was seen: discard connections instead of rolling back.
    disconnected = False
    #: The response is streamed: the session is closed when the stream ends,
    #: not in teardown.
    deferred = False
    #: The request retries or sets an isolation level (:mod:`._retry`).
    attempt: _retry.Attempt | None = None

    def __init__(self, state: AppState, in_request: bool) -> None:
        self.state = state
        self.in_request = in_request

    def start_request(self) -> None:
        """Forget the previous request's decisions; keep its session."""
        for name in (
            "finished",
            "invalidated",
            "rollback_only",
            "raised",
            "disconnected",
            "deferred",
            "attempt",
        ):
            self.__dict__.pop(name, None)

    def open(self) -> Session:
        """Create this scope's session."""
        session = self.state.sessionmaker()
        if not self.in_request:
            # Lets the end of the app context say what it discards; request
            # sessions do not pay for it.
            sa.event.listen(session, "do_orm_execute", note_statement)
        elif self.attempt is not None:
            self.attempt.prepare(session)
        self.session = session
        return session


def _no_context() -> RuntimeError:
    return RuntimeError(
        "Working outside of application context: 'db.session' is the session of"
        " the current request or app context, and there is none. Use it in a"
        " view, a CLI command, or inside 'with app.app_context():'. To give a"
        " library a session at setup (Flask-Admin, marshmallow-sqlalchemy,"
        " factory_boy, WTForms-SQLAlchemy) or to listen to session events at"
        " import, pass 'db.scoped_session': it always means the session of the"
        " current request or app context."
    )


def app_state(db: SessionORM, app: flask.Flask | None = None) -> AppState:
    """The state ``db`` keeps for ``app`` (default: the current app)."""
    if app is None:
        app_ctx = _cv_app.get(None)
        if app_ctx is None:
            raise RuntimeError(
                "Working outside of application context: pass the app, or use this"
                " inside a request, a CLI command or 'with app.app_context():'."
            )
        app = app_ctx.app
    state: AppState | None = app.extensions.get(EXTENSION_KEY)
    if state is None or state.db is not db:
        raise RuntimeError(
            f"The Flask app {app.name!r} is not registered with this SessionORM"
            " instance. Did you forget to call 'db.init_app(app)'?"
        )
    return state


def get(db: SessionORM) -> Scope:
    """The current scope of ``db``, created if needed."""
    app_ctx = _cv_app.get(None)
    if app_ctx is None:
        raise _no_context()
    attributes = app_ctx.g.__dict__
    request_ctx = _cv_request.get(None)
    if request_ctx is not None and attributes.get(DISPATCHED_KEY) is request_ctx:
        key = REQUEST_KEY
    else:
        key = CONTEXT_KEY
    scope: Scope | None = attributes.get(key)
    if scope is None or scope.state.db is not db:
        scope = Scope(app_state(db, app_ctx.app), key is REQUEST_KEY)
        if key is REQUEST_KEY and attributes.get(DECIDED_KEY) is request_ctx:
            # First used after the decision (test code in a context that the
            # test client preserved): nothing of it is committed automatically.
            scope.finished = True
        attributes[key] = scope
    return scope


def peek() -> Scope | None:
    """The current scope if one exists; never creates one, never raises."""
    app_ctx = _cv_app.get(None)
    if app_ctx is None:
        return None
    attributes = app_ctx.g.__dict__
    request_ctx = _cv_request.get(None)
    if request_ctx is not None and attributes.get(DISPATCHED_KEY) is request_ctx:
        return attributes.get(REQUEST_KEY)
    return attributes.get(CONTEXT_KEY)


def in_request() -> bool:
    """Whether the current context is a request being dispatched (not a context
    pushed inside it, nor a copied or test request context)."""
    app_ctx = _cv_app.get(None)
    request_ctx = _cv_request.get(None)
    return (
        app_ctx is not None
        and request_ctx is not None
        and app_ctx.g.__dict__.get(DISPATCHED_KEY) is request_ctx
    )


def install(app: flask.Flask, db: SessionORM) -> None:
    """Hook the extension into ``app``'s request cycle.

    Four of the app's methods are wrapped, on the app object only:

    - ``full_dispatch_request``: records the request being dispatched, and
      takes the commit decision once it has returned, that is after the view,
      the error handlers and every ``after_this_request``, blueprint and app
      ``after_request`` function, on the response they produced. Only the
      network remains after the commit. Registering an ``after_request``
      function could not guarantee that order: functions registered later run
      before it, and one that raises skips it.
    - ``do_teardown_request`` and ``do_teardown_appcontext``: end the sessions
      after every teardown function has run, even when one of them raised (Flask
      stops calling the others then), and after the ones that used the session
      themselves.
    - ``handle_user_exception``: notes that the view raised, even when an error
      handler turns the exception into a success response; in a request that
      retries, ends the attempt on a retryable error before any handler sees it.

    A request whose view retries or sets an isolation level (and every request
    when ``SESSION_ORM_RETRY_ATTEMPTS`` is above 1) is dispatched by
    :func:`._retry.dispatch` instead; the others pay one check for it.

    A wrapper costs one function call per request and does nothing else when the
    request did not use the database; Flask's own hooks cost more (each call
    goes through ``ensure_sync``).
    """
    dispatch = app.full_dispatch_request
    teardown_request = app.do_teardown_request
    teardown_appcontext = app.do_teardown_appcontext
    handle_user_exception = app.handle_user_exception
    state: AppState = app.extensions[EXTENSION_KEY]
    retry_all = state.config.retry_attempts > 1

    def full_dispatch_request() -> flask.Response:
        request_ctx = _cv_request.get()
        attributes = _cv_app.get().g.__dict__
        attributes[DISPATCHED_KEY] = request_ctx
        scope: Scope | None = attributes.get(REQUEST_KEY)
        if scope is not None:
            # An earlier request was dispatched in this app context (a context
            # pushed before the requests, as tests do): same session, new
            # transaction and new decisions.
            scope.start_request()
        if retry_all or _retry.marked:
            return _retry.dispatch(state, attributes, request_ctx, dispatch)
        response = dispatch()
        attributes[DECIDED_KEY] = request_ctx
        scope = attributes.get(REQUEST_KEY)
        if scope is None or scope.session is None:
            return response
        return _lifecycle.finish_request(scope, response)

    def do_teardown_request(*args: t.Any) -> None:
        try:
            teardown_request(*args)
        finally:
            app_ctx = _cv_app.get(None)
            if app_ctx is not None:
                attributes = app_ctx.g.__dict__
                scope = attributes.get(REQUEST_KEY)
                if (
                    scope is not None
                    and attributes.get(DISPATCHED_KEY) is _cv_request.get(None)
                    and not scope.deferred
                ):
                    _lifecycle.end_request(scope)

    def do_teardown_appcontext(*args: t.Any) -> None:
        try:
            teardown_appcontext(*args)
        finally:
            app_ctx = _cv_app.get(None)
            if app_ctx is not None:
                attributes = app_ctx.g.__dict__
                if CONTEXT_KEY in attributes or REQUEST_KEY in attributes:
                    _end_app_context(attributes)

    def handle_user_exception_(e: Exception) -> t.Any:
        if in_request():
            scope = get(db)
            scope.raised = True
            if scope.attempt is not None:
                _retry.intercept(scope, e)
        return handle_user_exception(e)

    # Instance attributes shadow the methods for this app only.
    setattr(app, "full_dispatch_request", full_dispatch_request)  # noqa: B010
    setattr(app, "do_teardown_request", do_teardown_request)  # noqa: B010
    setattr(app, "do_teardown_appcontext", do_teardown_appcontext)  # noqa: B010
    setattr(app, "handle_user_exception", handle_user_exception_)  # noqa: B010


def _end_app_context(attributes: dict[str, t.Any]) -> None:
    """End the sessions kept on an app context that is being torn down."""
    scope: Scope | None = attributes.pop(CONTEXT_KEY, None)
    if scope is not None:
        _lifecycle.end_scope(scope)
    scope = attributes.get(REQUEST_KEY)
    if scope is not None and not scope.deferred:
        del attributes[REQUEST_KEY]
        _lifecycle.end_scope(scope)
