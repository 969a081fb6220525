"""Session event listeners registered at import, after the move."""

# [listeners]
import sqlalchemy as sa

from flask_session_orm import Session

INDEX = set()  # stands in for a search engine


def remember_new(session, flush_context):
    names = [obj.name for obj in session.new if hasattr(obj, "name")]
    session.info.setdefault("new_names", []).extend(names)


def index_new(session):
    INDEX.update(session.info.pop("new_names", []))


def forget_new(session):
    session.info.pop("new_names", None)


# Every session of the extension is a flask_session_orm.Session.
sa.event.listen(Session, "after_flush", remember_new)
sa.event.listen(Session, "after_commit", index_new)
sa.event.listen(Session, "after_rollback", forget_new)
# [end listeners]
