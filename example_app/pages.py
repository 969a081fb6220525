"""The HTML pages: server-rendered forms that Post/Redirect/Get.

A form POST changes data and answers ``303 See Other``; the extension commits
before that redirect leaves the server (3xx counts as success), so the page the
browser loads next already shows the change. A form that does not validate is
shown again with a 400, and anything the view did is rolled back.
"""

from __future__ import annotations

import csv
import io
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from flask.typing import ResponseReturnValue

from . import audit
from . import bookmarks
from . import db
from .models import Bookmark

bp = flask.Blueprint("pages", __name__)


def _index(
    form: t.Mapping[str, str] | None = None,
    errors: t.Mapping[str, str] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    query = flask.request.args.get("q", "").strip()
    # ?nplusone=1 shows the page the slow way, on purpose: each bookmark's tags
    # are loaded by a query of their own when the template reads them. With
    # SESSION_ORM_RECORD_QUERIES on (debug and testing mode), flask-session-orm
    # warns about it (NPlusOneWarning) and names the fix, selectinload.
    load_tags = not flask.request.args.get("nplusone")
    page = flask.render_template(
        "index.html",
        bookmarks=bookmarks.search(query, load_tags=load_tags),
        query=query,
        form=form or {},
        errors=errors or {},
    )
    return page, status


@bp.get("/")
def index() -> ResponseReturnValue:
    return _index()


@bp.post("/bookmarks")
def create() -> ResponseReturnValue:
    try:
        fields, tags = bookmarks.clean_form(flask.request.form)
    except bookmarks.ValidationError as e:
        return _index(flask.request.form, e.errors, 400)
    bookmarks.create(fields, tags)
    # Not flushed here: the INSERT runs in the commit the extension makes on the
    # way out. If the URL is already saved, that commit fails and conflict()
    # below answers instead of this redirect.
    return flask.redirect(flask.url_for("pages.index"), 303)


@bp.route("/bookmarks/<int:bookmark_id>/edit", methods=["GET", "POST"])
def edit(bookmark_id: int) -> ResponseReturnValue:
    bookmark = bookmarks.get_or_404(bookmark_id)
    if flask.request.method == "GET":
        return flask.render_template("edit.html", bookmark=bookmark, form={}, errors={})
    try:
        fields, tags = bookmarks.clean_form(flask.request.form)
    except bookmarks.ValidationError as e:
        page = flask.render_template(
            "edit.html", bookmark=bookmark, form=flask.request.form, errors=e.errors
        )
        return page, 400
    bookmarks.update(bookmark, fields, tags)
    return flask.redirect(flask.url_for("pages.index"), 303)


@bp.post("/bookmarks/<int:bookmark_id>/delete")
def delete(bookmark_id: int) -> ResponseReturnValue:
    bookmarks.delete(bookmarks.get_or_404(bookmark_id))
    return flask.redirect(flask.url_for("pages.index"), 303)


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    return flask.render_template("audit.html", entries=audit.recent())


@bp.get("/bookmarks.csv")
def export_csv() -> flask.Response:
    def rows() -> t.Iterator[str]:
        # The rows are read while the response streams, yield_per fetching
        # them in batches, so a large export is never held in memory.
        # db.session works in a generator wrapped in stream_with_context, and
        # is closed when the stream ends. Query here, not in the view: the
        # view's own session may already be closed when the body is sent (Flask
        # 3.1 tears the request down before streaming and sets it up again).
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "url", "title", "note", "created_at"])
        query = sa.select(Bookmark).order_by(Bookmark.id)
        query = query.execution_options(yield_per=500)
        for bookmark in db.session.scalars(query):
            created = bookmark.created_at.isoformat(timespec="seconds")
            writer.writerow(
                [bookmark.id, bookmark.url, bookmark.title, bookmark.note, created]
            )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return flask.Response(
        flask.stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=bookmarks.csv"},
    )


@bp.errorhandler(sa_exc.IntegrityError)
def conflict(error: sa_exc.IntegrityError) -> ResponseReturnValue:
    """Show the form again, with a 409, when its URL is already saved.

    This runs for an IntegrityError raised in a view and also for one raised by
    the commit the extension makes after the view returned: that commit failure
    goes through the app's error handlers, so the browser gets this page instead
    of the redirect, and nothing was stored.
    """
    if not bookmarks.is_unique_violation(error):
        raise error
    # After a failed flush the session must be rolled back before it is used
    # again. (After a failed end-of-request commit the extension already did;
    # rolling back again is harmless.)
    db.session.rollback()
    form = flask.request.form
    url = form.get("url", "").strip()
    existing = bookmarks.find_by_url(url)
    message = "This link is already saved"
    if existing is not None:
        message += f" as \u201c{existing.title}\u201d"
    errors = {"url": message + "."}
    view_args = flask.request.view_args or {}
    if flask.request.endpoint == "pages.edit":
        bookmark = db.session.get(Bookmark, view_args["bookmark_id"])
        if bookmark is not None:
            page = flask.render_template(
                "edit.html", bookmark=bookmark, form=form, errors=errors
            )
            return page, 409
    return _index(form, errors, 409)
