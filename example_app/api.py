"""The JSON API, under ``/api``.

Every error is JSON too: 400 for invalid input (and whatever the view already
wrote is rolled back, because the status is 400), 404, and 409 when a URL is
already saved, whether that shows at an explicit flush in the view or in the
commit the extension makes after it.
"""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy.exc as sa_exc
import werkzeug.exceptions
from flask.typing import ResponseReturnValue

from . import audit
from . import bookmarks
from . import db

bp = flask.Blueprint("api", __name__, url_prefix="/api")


def _body(kind: type) -> t.Any:
    data = flask.request.get_json(silent=True)
    if not isinstance(data, kind):
        name = "an object" if kind is dict else "a list"
        flask.abort(400, f"The request body must be {name} in JSON.")
    return data


@bp.get("/bookmarks")
def list_bookmarks() -> ResponseReturnValue:
    found = bookmarks.search(flask.request.args.get("q", "").strip())
    return {"bookmarks": [bookmark.to_dict() for bookmark in found]}


@bp.post("/bookmarks")
def create_bookmark() -> ResponseReturnValue:
    bookmark = bookmarks.create(bookmarks.clean(_body(dict)))
    # The answer carries the new id, so the INSERT must run now, not in the
    # commit after the view. A URL that is already saved fails right here, and
    # conflict() answers.
    db.session.flush()
    location = flask.url_for("api.get_bookmark", bookmark_id=bookmark.id)
    return bookmark.to_dict(), 201, {"Location": location}


@bp.get("/bookmarks/<int:bookmark_id>")
def get_bookmark(bookmark_id: int) -> ResponseReturnValue:
    return bookmarks.get_or_404(bookmark_id).to_dict()


@bp.patch("/bookmarks/<int:bookmark_id>")
def update_bookmark(bookmark_id: int) -> ResponseReturnValue:
    bookmark = bookmarks.get_or_404(bookmark_id)
    bookmarks.update(bookmark, bookmarks.clean(_body(dict), partial=True))
    # Not flushed: the UPDATE runs in the extension's commit, after this view.
    # If the new URL is already saved, that commit fails and the client gets
    # conflict()'s 409 instead of this 200.
    return bookmark.to_dict()


@bp.delete("/bookmarks/<int:bookmark_id>")
def delete_bookmark(bookmark_id: int) -> ResponseReturnValue:
    bookmarks.delete(bookmarks.get_or_404(bookmark_id))
    return "", 204


@bp.post("/bookmarks/import")
def import_bookmarks() -> ResponseReturnValue:
    """Save a list of bookmarks, skipping the URLs that are already saved."""
    created, skipped = bookmarks.import_many(_body(list))
    return {"created": [b.to_dict() for b in created], "skipped": skipped}


@bp.post("/bookmarks/import/preview")
@db.no_autocommit
def preview_import() -> ResponseReturnValue:
    """Say what an import would do, without doing it.

    It runs the real import, so the database itself judges every item (unique
    URLs, also against the other items), then throws everything away:
    ``@db.no_autocommit`` makes this view never commit, whatever it returns,
    so no code path in it can forget to roll back.
    """
    created, skipped = bookmarks.import_many(_body(list))
    return {"would_create": [b.url for b in created], "would_skip": skipped}


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    args = flask.request.args
    entries = audit.recent(
        limit=min(args.get("limit", 100, type=int), 1000),
        bookmark_id=args.get("bookmark_id", None, type=int),
    )
    return {"entries": [entry.to_dict() for entry in entries]}


@bp.errorhandler(bookmarks.ValidationError)
def invalid(error: bookmarks.ValidationError) -> ResponseReturnValue:
    body: dict[str, t.Any] = {"error": "invalid", "errors": error.errors}
    if error.index is not None:
        body["index"] = error.index
    return body, 400


@bp.errorhandler(sa_exc.IntegrityError)
def conflict(error: sa_exc.IntegrityError) -> ResponseReturnValue:
    """Answer 409 when the URL is already saved, from a flush in the view or
    from the commit after it (the extension sends a failed commit through the
    app's error handlers).
    """
    if not bookmarks.is_unique_violation(error):
        raise error
    # After a failed flush the session must be rolled back before it is used
    # again; after a failed end-of-request commit this is harmless.
    db.session.rollback()
    body: dict[str, t.Any] = {
        "error": "conflict",
        "message": "A bookmark with this URL is already saved.",
    }
    data = flask.request.get_json(silent=True)
    url = data.get("url") if isinstance(data, dict) else None
    existing = bookmarks.find_by_url(url.strip()) if isinstance(url, str) else None
    if existing is not None:
        body["existing"] = existing.to_dict()
    return body, 409


@bp.errorhandler(werkzeug.exceptions.HTTPException)
def http_error(error: werkzeug.exceptions.HTTPException) -> ResponseReturnValue:
    return {"error": error.name, "message": error.description}, error.code or 500
