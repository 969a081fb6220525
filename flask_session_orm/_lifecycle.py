"""The end of a request and of an app context: commit, roll back, close.

The commit is decided when :meth:`flask.Flask.full_dispatch_request` has
returned (see :func:`._scope.install`): after the view, the error handlers and
every ``after_request`` function, on the response they produced, and before the
response is handed to the WSGI server, so a failed commit still becomes an error
response. The end of the request then rolls back whatever is still uncommitted,
and the end of the app context closes the session; neither ever raises.
"""

from __future__ import annotations

import logging
import types
import typing as t

import flask

from ._session import describe_discarded
from ._session import send_quietly

if t.TYPE_CHECKING:
    import sqlalchemy.orm as orm

    from ._scope import Scope
    from ._session import Session

logger = logging.getLogger("flask_session_orm")

#: Attribute set on a view function by :meth:`.SessionORM.no_autocommit`.
NO_AUTOCOMMIT = "_session_orm_no_autocommit"
#: Whether any view was marked; until one is, the end of a request does not
#: look its view up.
_views_marked = False


def mark_no_autocommit(view: object) -> None:
    """Mark ``view`` (a view function or class) as never committed automatically."""
    global _views_marked
    setattr(view, NO_AUTOCOMMIT, True)
    _views_marked = True


def _opted_out(app: flask.Flask) -> bool:
    """Whether the request's view is marked with :meth:`.SessionORM.no_autocommit`."""
    endpoint = flask.request.endpoint
    if endpoint is None:
        return False
    view = app.view_functions.get(endpoint)
    # A class-based view's function (View.as_view) does not carry the class's
    # attributes; the class is reachable as view_class.
    return getattr(view, NO_AUTOCOMMIT, False) or getattr(
        getattr(view, "view_class", None), NO_AUTOCOMMIT, False
    )


def finish_request(scope: Scope, response: flask.Response) -> flask.Response:
    """Commit the request's session if the request succeeded, else roll back.

    Runs once per request, when the response is final.
    """
    if scope.finished:
        return response
    scope.finished = True
    session = scope.session
    if session is None:
        return response
    if (
        response.status_code >= 400
        or scope.raised
        or scope.rollback_only
        or scope.invalidated
        or not scope.state.config.commit_on_success
        or (_views_marked and _opted_out(scope.state.app))
    ):
        discard(scope, session)
        return _close_after_stream(scope, response)
    if not session.in_transaction():
        # The view committed or rolled back itself and began nothing since.
        # Session.commit() would begin and commit an empty transaction, and
        # session_committed would report a commit that stored nothing.
        return _close_after_stream(scope, response)
    try:
        session.commit()
    except Exception as e:
        discard(scope, session)
        # The client must not receive the success response for data that was
        # not stored: leave Flask's response processing, so that neither this
        # response nor its session cookie is used (see answer_commit_failure).
        raise CommitFailed(e) from e
    return _close_after_stream(scope, response)


class CommitFailed(Exception):
    """The end-of-request commit failed with :attr:`error`; raised out of the
    response processing up to the dispatch, which answers it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def answer_commit_failure(app: flask.Flask, error: Exception) -> flask.Response:
    """Answer a failed commit through the app's error handlers, as if the view
    had raised ``error``.

    With no handler for it this re-raises, and Flask answers 500. A handler's
    response is finalized as Flask finalizes every error response: the
    ``after_request`` functions run on it, and the session cookie is saved.
    """
    # Flask's handle_user_exception re-raises the exception being handled.
    try:
        raise error
    except Exception as e:
        return app.finalize_request(
            app.handle_user_exception(e), from_error_handler=True
        )


def _close_after_stream(scope: Scope, response: flask.Response) -> flask.Response:
    """Keep the session open until a streamed body has been sent.

    Flask 3.1 tears the request down once the view has returned and pushes the
    context again around a ``stream_with_context`` generator, so teardown cannot
    tell when the stream ends. The generator is wrapped instead: the session is
    closed when it is exhausted or closed, and by ``call_on_close`` when the server
    never starts it (HEAD requests, 204 and 304 responses).
    """
    body = response.response
    if not isinstance(body, types.GeneratorType):
        return response
    scope.deferred = True
    response.response = _closing(body, scope)
    response.call_on_close(lambda: end_scope(scope))
    return response


def _closing(body: t.Iterator[t.Any], scope: Scope) -> t.Iterator[t.Any]:
    try:
        yield from body
    finally:
        end_scope(scope)


def discard(scope: Scope, session: orm.Session) -> None:
    """Roll back ``session`` (or invalidate it after a disconnect); never raises."""
    if scope.disconnected:
        invalidate(scope, session)
        return
    try:
        session.rollback()
    except Exception:
        logger.exception("Rolling back the session failed; invalidating it.")
        invalidate(scope, session)


def invalidate(scope: Scope, session: orm.Session) -> None:
    """Discard the session's connections and close it; never raises."""
    scope.invalidated = True
    # The disconnect seen so far concerned this session's connections, which are
    # discarded now; a session the scope opens afterwards is a healthy one, to be
    # rolled back at the end rather than invalidated again.
    scope.disconnected = False
    try:
        session.invalidate()
    except Exception:
        logger.exception("Invalidating the session failed.")
    send_quietly("session_invalidated", scope.state.app, session)


def end_request(scope: Scope) -> None:
    """Roll back what the request left uncommitted; never raises.

    The session itself stays open, on the app context's ``g``, and is closed
    with it (:func:`end_scope`): an object cached in ``g`` stays attached.
    """
    session = scope.session
    if session is None:
        return
    try:
        if session.in_transaction():
            if scope.finished:
                _warn_discarded(scope, session)
            discard(scope, session)
    except Exception:
        logger.exception("Ending the request's database transaction failed.")


def end_scope(scope: Scope) -> None:
    """Roll back what is uncommitted and close the session; never raises."""
    session = scope.session
    scope.session = None
    if session is None:
        return
    try:
        if session.in_transaction():
            if scope.finished or not scope.in_request:
                _warn_discarded(scope, session)
            discard(scope, session)
    except Exception:
        logger.exception("Ending the database session failed.")
    finally:
        try:
            session.close()
        except Exception:
            logger.exception("Closing the database session failed.")


def _warn_discarded(scope: Scope, session: Session) -> None:
    """Log what rolling back ``session`` discards, if anything."""
    discarded = describe_discarded(session)
    if discarded is None:
        return
    if scope.in_request:
        logger.warning(
            "Rolled back %s, done after the request's commit decision (in a"
            " teardown function, a streamed body, or test code in a preserved"
            " request context): only what is done before the response is final"
            " is committed automatically. Call 'db.session.commit()' to keep"
            " changes.",
            discarded,
        )
    else:
        logger.warning(
            "Rolled back %s at the end of the app context: nothing is"
            " committed automatically outside a request. Call"
            " 'db.session.commit()' to keep changes.",
            discarded,
        )
