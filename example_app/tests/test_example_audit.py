"""The audit log: an entry is written only after the change it describes commits."""

from __future__ import annotations

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from example_app import audit
from example_app.models import AuditEntry
from example_app.models import Bookmark

from .conftest import audit_log
from .conftest import bookmark_urls

# "app" is named so that every test runs once per backend even when it takes
# only orm_session: the plugin looks the app fixture up by name at run time,
# which does not parametrize the test.
pytestmark = pytest.mark.usefixtures("app", "orm_isolation")

A = "https://a.example/"


def test_entry_written_after_commit(orm_session: orm.Session) -> None:
    """A recorded change is audited once its transaction commits, with its id."""
    bookmark = Bookmark(url=A, title="A")
    orm_session.add(bookmark)
    audit.record("created", bookmark, actor="tester", detail="by hand")
    assert audit_log(orm_session) == []
    orm_session.commit()
    entry = orm_session.scalars(sa.select(AuditEntry)).one()
    assert (entry.action, entry.actor, entry.detail) == ("created", "tester", "by hand")
    assert (entry.bookmark_id, entry.url) == (bookmark.id, A)


def test_no_entry_after_rollback(orm_session: orm.Session) -> None:
    """A recorded change that is rolled back leaves no audit entry, even once a
    later transaction commits.
    """
    bookmark = Bookmark(url=A, title="A")
    orm_session.add(bookmark)
    audit.record("created", bookmark, actor="tester")
    orm_session.flush()
    orm_session.rollback()
    orm_session.commit()
    assert bookmark_urls(orm_session) == []
    assert audit_log(orm_session) == []


def test_seed_command_commits_outside_a_request(
    app: flask.Flask, orm_session: orm.Session
) -> None:
    """``flask seed`` commits its bookmarks itself and they are audited; a second
    run adds nothing.
    """
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert result.output == "Added 3 bookmark(s).\n"
    assert len(bookmark_urls(orm_session)) == 3
    assert [entry[0] for entry in audit_log(orm_session)] == ["created"] * 3
    result = runner.invoke(args=["seed"])
    assert result.output == "Added 0 bookmark(s).\n"
    assert len(audit_log(orm_session)) == 3
