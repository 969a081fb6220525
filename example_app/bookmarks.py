"""What can be done with bookmarks, shared by the HTML pages, the JSON API and the
CLI. Nothing here commits: inside a request the extension commits when the view
succeeds; the CLI commits explicitly.
"""

from __future__ import annotations

import typing as t
import urllib.parse

import flask
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as orm

from . import audit
from . import db
from .models import Bookmark
from .models import Tag

#: The fields a client may set, and their maximum lengths.
FIELDS = {"url": 500, "title": 200, "note": 5000}
#: How many tags a bookmark may have, and how long each may be.
MAX_TAGS = 10
TAG_LENGTH = 40


class ValidationError(Exception):
    """The input is not a valid bookmark; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, str], index: int | None = None) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
        #: Position of the bad item in an import, if it came from one.
        self.index = index


def clean(data: t.Mapping[str, t.Any], *, partial: bool = False) -> dict[str, str]:
    """Check form or JSON input and return the fields to store.

    :param partial: Only the fields present are checked (a PATCH).
    :raises ValidationError: Something is missing or wrong.
    """
    errors: dict[str, str] = {}
    fields: dict[str, str] = {}
    for name, max_length in FIELDS.items():
        if name not in data:
            if partial:
                continue
            value: t.Any = ""
        else:
            value = data[name]
        if not isinstance(value, str):
            errors[name] = "Must be text."
            continue
        value = value.strip()
        if len(value) > max_length:
            errors[name] = f"At most {max_length} characters."
        fields[name] = value
    if "url" in fields and "url" not in errors:
        parts = urllib.parse.urlsplit(fields["url"])
        if not fields["url"]:
            errors["url"] = "A URL is required."
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            errors["url"] = "Enter a full http:// or https:// URL."
    if "title" in fields and not fields["title"]:
        if partial:
            errors["title"] = "A title cannot be empty."
        else:
            fields["title"] = fields.get("url", "")[: FIELDS["title"]]
    if errors:
        raise ValidationError(errors)
    return fields


def clean_tags(text: t.Any) -> list[str]:
    """Turn "python, Flask ,web" into ["flask", "python", "web"].

    :raises ValidationError: Not text, too many tags, or one too long.
    """
    if not isinstance(text, str):
        raise ValidationError({"tags": "Must be text."})
    names = sorted({name.strip().lower() for name in text.split(",") if name.strip()})
    if len(names) > MAX_TAGS:
        raise ValidationError({"tags": f"At most {MAX_TAGS} tags."})
    if any(len(name) > TAG_LENGTH for name in names):
        raise ValidationError({"tags": f"At most {TAG_LENGTH} characters a tag."})
    return names


def clean_form(form: t.Mapping[str, t.Any]) -> tuple[dict[str, str], list[str]]:
    """Check the HTML form: its bookmark fields and its tags, all errors at once.

    :raises ValidationError: Something is missing or wrong.
    """
    errors: dict[str, str] = {}
    fields: dict[str, str] = {}
    tags: list[str] = []
    try:
        fields = clean(form)
    except ValidationError as e:
        errors.update(e.errors)
    try:
        tags = clean_tags(form.get("tags", ""))
    except ValidationError as e:
        errors.update(e.errors)
    if errors:
        raise ValidationError(errors)
    return fields, tags


def set_tags(bookmark: Bookmark, names: t.Sequence[str]) -> None:
    """Give ``bookmark`` exactly these tags, keeping the rows of those it has."""
    current = {tag.name: tag for tag in bookmark.tags}
    bookmark.tags = [current.get(name) or Tag(name=name) for name in names]


def actor() -> str:
    """Who is making the change, for the audit log."""
    if flask.has_request_context():
        # A real team service would name the logged-in user here.
        return flask.request.remote_addr or "unknown"
    return "cli"


def search(text: str = "", *, load_tags: bool = True) -> list[Bookmark]:
    """Bookmarks whose title, URL or note contains ``text``, newest first.

    :param load_tags: Load the bookmarks' tags with them, in one more query
        (``selectinload``). False leaves them to be loaded when first read: one
        query per bookmark, the "N+1 queries" problem that the extension warns
        about (the front page does it on purpose with ``?nplusone=1``).
    """
    query = sa.select(Bookmark).order_by(Bookmark.id.desc())
    if load_tags:
        query = query.options(orm.selectinload(Bookmark.tags))
    if text:
        query = query.where(
            sa.or_(
                Bookmark.title.icontains(text, autoescape=True),
                Bookmark.url.icontains(text, autoescape=True),
                Bookmark.note.icontains(text, autoescape=True),
            )
        )
    return list(db.session.scalars(query))


def get_or_404(bookmark_id: int) -> Bookmark:
    bookmark = db.session.get(Bookmark, bookmark_id)
    if bookmark is None:
        flask.abort(404, f"There is no bookmark {bookmark_id}.")
    return bookmark


def find_by_url(url: str) -> Bookmark | None:
    return db.session.scalar(sa.select(Bookmark).where(Bookmark.url == url))


def create(fields: t.Mapping[str, str], tags: t.Sequence[str] = ()) -> Bookmark:
    """Add a bookmark to the session (it is inserted at the next flush or commit)."""
    bookmark = Bookmark(**fields)
    set_tags(bookmark, tags)
    db.session.add(bookmark)
    audit.record("created", bookmark, actor=actor())
    return bookmark


def update(
    bookmark: Bookmark,
    fields: t.Mapping[str, str],
    tags: t.Sequence[str] | None = None,
) -> list[str]:
    """Apply ``fields`` (and ``tags``, unless None) to ``bookmark``; return the
    names of those that changed.

    Saving a form without changing anything writes no audit entry.
    """
    if tags is not None:
        # First: reading the current tags runs a query, whose autoflush would
        # write (and so clear the changes of) any field set before it.
        set_tags(bookmark, tags)
    for name, value in fields.items():
        setattr(bookmark, name, value)
    changed = [
        name for name in (*FIELDS, "tags") if db.has_changes(bookmark, attrs=name)
    ]
    if changed:
        audit.record("updated", bookmark, actor=actor(), detail=", ".join(changed))
    return changed


def delete(bookmark: Bookmark) -> None:
    db.session.delete(bookmark)
    audit.record("deleted", bookmark, actor=actor())


def import_many(
    items: t.Sequence[t.Any],
) -> tuple[list[Bookmark], list[dict[str, str]]]:
    """Add every item that is not saved yet; return (created, skipped).

    Each item goes in its own savepoint, so a URL that is already saved (or twice
    in the list) skips that item only, and the audit entry registered for it is
    dropped with the savepoint. An invalid item raises :class:`ValidationError`
    after the items before it were inserted: the view answers 400 and the
    extension rolls all of them back.
    """
    created: list[Bookmark] = []
    skipped: list[dict[str, str]] = []
    for index, item in enumerate(items):
        if not isinstance(item, t.Mapping):
            raise ValidationError({"item": "Each item must be an object."}, index)
        try:
            fields = clean(item)
        except ValidationError as e:
            raise ValidationError(e.errors, index) from None
        try:
            with db.session.begin_nested():
                bookmark = create(fields)
        except sa_exc.IntegrityError as e:
            if not is_unique_violation(e):
                raise
            skipped.append({"url": fields["url"], "reason": "already saved"})
        else:
            created.append(bookmark)
    return created, skipped


def is_unique_violation(error: sa_exc.IntegrityError) -> bool:
    """Whether ``error`` is a unique constraint violation, on any backend."""
    orig = error.orig
    # MySQL and MariaDB: error number 1062, ER_DUP_ENTRY. (Checked first: recent
    # PyMySQL versions also carry a SQLSTATE, the generic 23000.)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return bool(args[0] == 1062)
    # PostgreSQL: SQLSTATE 23505 (psycopg 3 names it sqlstate, psycopg2 pgcode).
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    # SQLite: the message is all there is on every Python version.
    return "UNIQUE constraint failed" in str(orig)
