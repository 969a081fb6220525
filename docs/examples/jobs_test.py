"""Testing the background jobs page's application: jobs run inline."""

import os

import jobs
import pytest
import sqlalchemy as sa


@pytest.fixture
def app(tmp_path):
    url = os.environ.get("DATABASE_URL", f"sqlite:///{tmp_path}/test.db")
    app = jobs.create_app({"TESTING": True, "SESSION_ORM_DATABASE_URL": url})
    with app.app_context():
        jobs.db.create_all(jobs.Base)
    yield app
    with app.app_context():
        jobs.db.drop_all(jobs.Base)
        jobs.db.engine.dispose()


# [inline]
@pytest.fixture
def inline_jobs(monkeypatch):
    """Run jobs in the test's thread, right after the commit, instead of in a
    thread of their own: inside orm_isolation they share the test's connection."""
    monkeypatch.setattr(jobs, "start_thread", lambda func, *args: func(*args))


def test_report_is_built(app, orm_isolation, inline_jobs):
    response = app.test_client().post("/reports")
    assert response.status_code == 202
    with app.app_context():
        report = jobs.db.session.get(jobs.Report, response.json["id"])
        assert report.status == "done"


# [end inline]


def test_nothing_left(app, orm_isolation):
    with app.app_context():
        count = jobs.db.session.scalar(sa.select(sa.func.count(jobs.Report.id)))
        assert count == 0
