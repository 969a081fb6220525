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

import itertools
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


def app_state(db: object, app: flask.Flask | None = None) -> AppState:
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


def get(db: object) -> Scope:
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

    Four of the app's methods are wrapped, on the app object only; no Flask hook
    is registered, so a request that does not use the database pays one function
    call per wrapper and nothing else (a registered hook costs more: Flask calls
    each through ``ensure_sync``).

    - ``process_response`` takes the commit decision after every
      ``after_this_request``, blueprint and app ``after_request`` function, on
      the response they produced, and before Flask saves the session cookie, so
      only the cookie and the network remain after the commit (an ``on_commit``
      function may still ``flash()``). For a request that has a session it runs
      Flask's steps itself, in Flask's order, with the decision inserted before
      the cookie (:func:`_process_response`); other requests go to Flask's own.
    - ``full_dispatch_request`` records the request being dispatched and turns a
      failed commit into the app's error response.
    - ``do_teardown_request`` and ``do_teardown_appcontext`` end the sessions
      after every teardown function has run, even when one of them raised (Flask
      stops calling the others then), and after the ones that used the session
      themselves.
    - ``handle_user_exception`` notes that the view raised, even when an error
      handler turns the exception into a success response; in a request that
      retries, it ends the attempt on a retryable error before any handler sees
      it.

    An app whose class overrides ``process_response`` keeps it: the decision is
    then an ``after_request`` function put first in the app's list, so that
    Flask runs it last.

    A request whose view retries or sets an isolation level (and every request
    when ``SESSION_ORM_RETRY_ATTEMPTS`` is above 1) is dispatched by
    :func:`._retry.dispatch` instead; the others pay one check for it.
    """
    dispatch = app.full_dispatch_request
    process_response = app.process_response
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
        try:
            return dispatch()
        except _lifecycle.CommitFailed as failure:
            error = failure.error
        return _lifecycle.answer_commit_failure(app, error)

    def decide(response: flask.Response) -> flask.Response:
        attributes = _cv_app.get().g.__dict__
        request_ctx = _cv_request.get()
        if attributes.get(DISPATCHED_KEY) is not request_ctx:
            return response
        attributes[DECIDED_KEY] = request_ctx
        scope: Scope | None = attributes.get(REQUEST_KEY)
        if scope is None or scope.session is None:
            return response
        return _lifecycle.finish_request(scope, response)

    def process_response_(response: flask.Response) -> flask.Response:
        # Flask calls it for the request being dispatched (or answered after
        # an error), the one recorded by full_dispatch_request.
        attributes = _cv_app.get().g.__dict__
        request_ctx = _cv_request.get()
        scope: Scope | None = attributes.get(REQUEST_KEY)
        if scope is not None and scope.session is not None:
            return _process_response(app, request_ctx, attributes, scope, response)
        response = process_response(response)
        attributes[DECIDED_KEY] = request_ctx
        # The session may have been first used by an after_request function:
        # its work is the request's too, decided now that the cookie is saved.
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
    if type(app).process_response is flask.Flask.process_response:
        setattr(app, "process_response", process_response_)  # noqa: B010
    else:
        app.after_request_funcs.setdefault(None, []).insert(0, decide)
    setattr(app, "full_dispatch_request", full_dispatch_request)  # noqa: B010
    setattr(app, "do_teardown_request", do_teardown_request)  # noqa: B010
    setattr(app, "do_teardown_appcontext", do_teardown_appcontext)  # noqa: B010
    setattr(app, "handle_user_exception", handle_user_exception_)  # noqa: B010


def _process_response(
    app: flask.Flask,
    request_ctx: t.Any,
    attributes: dict[str, t.Any],
    scope: Scope,
    response: flask.Response,
) -> flask.Response:
    """:meth:`flask.Flask.process_response` (Flask 3.0 and 3.1), with the commit
    decision between the ``after_request`` functions and the session cookie.
    """
    ensure_sync = app.ensure_sync
    for func in request_ctx._after_request_functions:
        response = ensure_sync(func)(response)
    functions = app.after_request_funcs
    for name in itertools.chain(flask.request.blueprints, (None,)):
        if name in functions:
            for func in reversed(functions[name]):
                response = ensure_sync(func)(response)
    attributes[DECIDED_KEY] = request_ctx
    response = _lifecycle.finish_request(scope, response)
    interface = app.session_interface
    # Flask 3.1 keeps it in _session (its session property marks it accessed);
    # Flask 3.0 in session.
    try:
        session = request_ctx._session
    except AttributeError:
        session = request_ctx.session
    if not interface.is_null_session(session):
        interface.save_session(app, session, response)
    return response


def _end_app_context(attributes: dict[str, t.Any]) -> None:
    """End the sessions kept on an app context that is being torn down."""
    scope: Scope | None = attributes.pop(CONTEXT_KEY, None)
    if scope is not None:
        _lifecycle.end_scope(scope)
    scope = attributes.get(REQUEST_KEY)
    if scope is not None and not scope.deferred:
        del attributes[REQUEST_KEY]
        _lifecycle.end_scope(scope)
