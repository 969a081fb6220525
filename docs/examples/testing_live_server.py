import json
import urllib.request

import flask
import pytest
from myapp import Base
from myapp import db


@pytest.fixture
def empty_tables(app):
    """Delete every row after the test: the live server's commits are real."""
    yield
    with app.app_context(), db.sessionmaker.begin() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())


def test_add_note_over_http(live_server, empty_tables):
    request = urllib.request.Request(
        live_server.url(flask.url_for("add_note")),
        data=json.dumps({"text": "over HTTP"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    notes_url = live_server.url(flask.url_for("list_notes"))
    with urllib.request.urlopen(notes_url) as response:
        assert json.load(response) == ["over HTTP"]
