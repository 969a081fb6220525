"""Which session belongs to the current request or app context.

Inside a request the session lives on the request object, not on ``g``: with Flask
up to 3.1 a request reuses an app context that was pushed before it (pytest-flask
pushes one for every test), so ``g`` and ``teardown_appcontext`` can span several
requests. Outside requests it lives on the app context's ``g``.
"""

from __future__ import annotations

import functools
import threading
import typing as t

import flask
import sqlalchemy as sa

from . import _lifecycle
from ._session import Session
from ._session import note_statement

if t.TYPE_CHECKING:
    from ._extension import SessionORM
    from ._state import AppState

KEY = "_session_orm"
EXTENSION_KEY = "session_orm"


class Scope:
    """One request's or one app context's session and end-of-scope decisions.

    The flags are class attributes, so that creating a scope (once per request
    that uses the database) sets only what differs from them.
    """

    #: The session, created on first use of ``db.session``.
    session: Session | None = None
    #: The commit decision was taken (the end-of-request function ran).
    finished = False
    #: The end-of-request function is registered.
    hooked = False
    #: db.invalidate() was called: never commit this scope automatically.
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

    def __init__(self, state: AppState, in_request: bool) -> None:
        self.state = state
        self.in_request = in_request

    def open(self) -> Session:
        """Create this scope's session."""
        if self.in_request:
            session = self.state.sessionmaker()
            if not self.hooked:
                self.hooked = True
                flask.after_this_request(
                    functools.partial(_lifecycle.finish_request, self)
                )
        else:
            _watch_app_contexts(self.state.app)
            session = self.state.sessionmaker()
            # Lets the app-context teardown say what it discards; request
            # sessions do not pay for it.
            sa.event.listen(session, "do_orm_execute", note_statement)
        self.session = session
        return session


# The proxies' own lookups, bound once (each raises RuntimeError outside its
# context): the hot path then calls one function instead of going through the
# proxy's attribute machinery. (Flask's type hints present the proxies as the
# objects they stand for, hence the untyped module.)
_proxies: t.Any = flask
_current_request: t.Callable[[], flask.Request] = _proxies.request._get_current_object
_current_g: t.Callable[[], t.Any] = _proxies.g._get_current_object
_current_app: t.Callable[[], flask.Flask] = _proxies.current_app._get_current_object


def _outside_request() -> dict[str, t.Any]:
    """The attributes of the current app context's ``g``, outside requests."""
    try:
        return _current_g().__dict__  # type: ignore[no-any-return]
    except RuntimeError:
        raise RuntimeError(
            "Working outside of application context: the database session belongs"
            " to a request or an app context. Use it in a view, a CLI command, or"
            " inside 'with app.app_context():'."
        ) from None


def app_state(db: SessionORM, app: flask.Flask | None = None) -> AppState:
    """The state ``db`` keeps for ``app`` (default: the current app)."""
    if app is None:
        try:
            app = _current_app()
        except RuntimeError:
            raise RuntimeError(
                "Working outside of application context: pass the app, or use this"
                " inside a request, a CLI command or 'with app.app_context():'."
            ) from None
    state: AppState | None = app.extensions.get(EXTENSION_KEY)
    if state is None or state.db is not db:
        raise RuntimeError(
            f"The Flask app {app.name!r} is not registered with this SessionORM"
            " instance. Did you forget to call 'db.init_app(app)'?"
        )
    return state


def get(db: SessionORM) -> Scope:
    """The current scope of ``db``, created if needed."""
    try:
        holder = _current_request().__dict__
        in_request = True
    except RuntimeError:
        holder = _outside_request()
        in_request = False
    scope: Scope | None = holder.get(KEY)
    if scope is None or scope.state.db is not db:
        scope = Scope(app_state(db), in_request)
        holder[KEY] = scope
    return scope


def peek() -> Scope | None:
    """The current scope if one exists; never creates one, never raises."""
    try:
        return _current_request().__dict__.get(KEY)
    except RuntimeError:
        pass
    try:
        return _current_g().__dict__.get(KEY)  # type: ignore[no-any-return]
    except RuntimeError:
        return None


def teardown_request(exc: BaseException | None) -> None:
    """End the request's scope: roll back what was not committed, close."""
    attributes = _current_request().__dict__
    scope: Scope | None = attributes.get(KEY)
    if scope is not None and not scope.deferred:
        del attributes[KEY]
        _lifecycle.end_scope(scope)


_watch_lock = threading.Lock()


def _watch_app_contexts(app: flask.Flask) -> None:
    """Register :func:`teardown_appcontext` on ``app`` when its first session
    outside a request is created.

    Every teardown function registered on an app runs for every request, used or
    not. Sessions outside requests belong to CLI commands, jobs and tests; a web
    server typically never creates one, and then its requests do not pay for this
    teardown. Flask refuses ``@app.teardown_appcontext`` once the app has served a
    request, so the function is added to the documented list directly, once.
    """
    functions = app.teardown_appcontext_funcs
    if teardown_appcontext not in functions:
        with _watch_lock:
            if teardown_appcontext not in functions:
                functions.append(teardown_appcontext)


def teardown_appcontext(exc: BaseException | None) -> None:
    """End the app context's scope: roll back (with a warning) and close."""
    scope = _current_g().__dict__.pop(KEY, None)
    if scope is not None:
        _lifecycle.end_scope(scope)


def watch_exceptions(app: flask.Flask, db: SessionORM) -> None:
    """Mark the request as failed when its view (or a before_request function)
    raises, even if an error handler turns the exception into a success.

    Flask offers no signal for handled exceptions and the response alone cannot
    tell, so the app's ``handle_user_exception`` is wrapped; it runs only when an
    exception was raised, so requests that succeed pay nothing for it.
    """
    handle = app.handle_user_exception

    def handle_user_exception(e: Exception) -> t.Any:
        if flask.has_request_context():
            get(db).raised = True
        return handle(e)

    setattr(app, "handle_user_exception", handle_user_exception)  # noqa: B010
