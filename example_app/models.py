"""The models: bookmarks in the main database, the audit log in its own.

Nothing in this module says which database a model lives in. The app's config
does: ``SESSION_ORM_BINDS`` maps :class:`AuditModel` (and so every model derived
from it) to the ``audit`` engine, and everything else goes to ``default``. An
operator can move the audit log to another server without touching this code.
"""

from __future__ import annotations

import datetime
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as orm

# Table names carry an "example_" prefix so that the example can share a database
# with other applications (and with this project's own test suite).
PREFIX = "example_"


def utcnow() -> datetime.datetime:
    """The current UTC time, without tzinfo (stored the same way on every backend)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Base(orm.DeclarativeBase):
    pass


class Bookmark(Base):
    """A link saved by the team. A URL is saved once: the database enforces it."""

    __tablename__ = f"{PREFIX}bookmark"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    url: orm.Mapped[str] = orm.mapped_column(sa.String(500), unique=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    note: orm.Mapped[str] = orm.mapped_column(sa.Text, default="")
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    #: Loaded when first read (SQLAlchemy's default, "lazy loading"): a page
    #: listing bookmarks loads them with the bookmarks instead (see
    #: bookmarks.search), or it would run one query per bookmark.
    tags: orm.Mapped[list[Tag]] = orm.relationship(
        back_populates="bookmark", cascade="all, delete-orphan", order_by="Tag.name"
    )

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "url": self.url,
            "title": self.title,
            "note": self.note,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
        }


class Tag(Base):
    """A word that groups bookmarks; each bookmark has its own tag rows."""

    __tablename__ = f"{PREFIX}tag"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    bookmark_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey(Bookmark.id, ondelete="CASCADE"), index=True
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    bookmark: orm.Mapped[Bookmark] = orm.relationship(back_populates="tags")


class AuditModel(Base):
    """Base class of the models stored in the audit database.

    The ``SESSION_ORM_BINDS`` entry ``"example_app.models:AuditModel": "audit"``
    in the app's config routes all of them to the ``audit`` engine.
    """

    __abstract__ = True


class AuditEntry(AuditModel):
    """One change to a bookmark that was committed: who, what, when.

    It lives in another database than the bookmark, so it can hold no foreign
    key to it: the bookmark's id and URL are copied.
    """

    __tablename__ = f"{PREFIX}audit_entry"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    actor: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    action: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    bookmark_id: orm.Mapped[int]
    url: orm.Mapped[str] = orm.mapped_column(sa.String(500))
    detail: orm.Mapped[str] = orm.mapped_column(sa.Text, default="")

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(timespec="seconds") + "Z",
            "actor": self.actor,
            "action": self.action,
            "bookmark_id": self.bookmark_id,
            "url": self.url,
            "detail": self.detail,
        }
