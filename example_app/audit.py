"""The audit log: one entry per change to a bookmark, written only once the change
has really been committed.

The audit log lives in another database than the bookmarks, so one transaction
cannot cover both. Writing the entry in the request's own session would be wrong
both ways: it would be committed separately (the bookmark may still fail at its
commit, leaving an entry for a change that never happened), and it could not be
rolled back with the bookmark. :meth:`SessionORM.on_commit` gives the right
order: the entry is written after the bookmark's transaction has committed, and
never if that transaction rolls back (a 4xx or 5xx response, an exception, a
failed commit, or a savepoint rolled back during an import).

The price is the usual one of an after-commit hook: if the process dies between
the two commits, or the audit database is down, the change is kept and its entry
is lost (the extension logs the error). An application that cannot accept that
would store the entry in the main database, in the same transaction (an outbox
table), and copy it to the audit log later.
"""

from __future__ import annotations

import sqlalchemy as sa

from . import db
from .models import AuditEntry
from .models import Bookmark


def record(action: str, bookmark: Bookmark, *, actor: str, detail: str = "") -> None:
    """Write an audit entry about ``bookmark`` after the current transaction commits.

    Call it next to the change itself: if the change is rolled back, so is this.
    """
    db.on_commit(_write, action, bookmark, actor=actor, detail=detail)


def _write(action: str, bookmark: Bookmark, *, actor: str, detail: str) -> None:
    # By now the bookmark's transaction has committed, so a new bookmark has its
    # id. The app sets SESSION_ORM_EXPIRE_ON_COMMIT = False: the committed
    # object's attributes are still loaded and reading them costs no query.
    entry = AuditEntry(
        actor=actor,
        action=action,
        bookmark_id=bookmark.id,
        url=bookmark.url,
        detail=detail,
    )
    # A session of its own, committed here: the request's session has finished
    # its transaction, and nothing would commit a new one. The config routes
    # AuditEntry to the "audit" engine, so this session talks to that database.
    with db.sessionmaker.begin() as session:
        session.add(entry)


def recent(limit: int = 100, bookmark_id: int | None = None) -> list[AuditEntry]:
    """The latest audit entries, newest first."""
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if bookmark_id is not None:
        query = query.where(AuditEntry.bookmark_id == bookmark_id)
    return list(db.session.scalars(query))
