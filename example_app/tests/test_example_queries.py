"""The front page's deliberate N+1 (``?nplusone=1``) and its fix, tags."""

from __future__ import annotations

import flask.testing
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from example_app.models import Bookmark
from example_app.models import Tag
from flask_session_orm import NPlusOneWarning

pytestmark = pytest.mark.usefixtures("app", "orm_isolation")


def add_bookmarks(session: orm.Session, count: int) -> None:
    """Store ``count`` bookmarks tagged "a" and "b".

    Through the test's session, not through requests: the test client's
    requests share one session here (they run in the app context pytest-flask
    pushed for the test), which would still hold the tags they created, and
    then nothing would need loading.
    """
    for i in range(count):
        tags = [Tag(name="a"), Tag(name="b")]
        session.add(Bookmark(url=f"https://{i}.example/", title=f"Site {i}", tags=tags))
    session.commit()


def test_nplusone_page_warns(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """With ?nplusone=1 the front page loads each bookmark's tags on its own,
    and the extension warns, naming the view, the relationship, the template
    line and the fix.
    """
    add_bookmarks(orm_session, 6)
    with pytest.warns(NPlusOneWarning) as record:
        page = client.get("/?nplusone=1").text
    (warning,) = record
    message = str(warning.message)
    assert "Bookmark.tags was lazy-loaded more than 5 times" in message
    assert "in the view 'pages.index' (GET /)" in message
    assert "templates/index.html:" in message
    assert "selectinload(Bookmark.tags)" in message
    assert page.count('<span class="tag">a</span>') == 6


def test_front_page_loads_tags_with_selectinload(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Without the flag the same page shows the same tags, and nothing warns
    (warnings are errors in this test suite).
    """
    add_bookmarks(orm_session, 6)
    page = client.get("/").text
    assert page.count('<span class="tag">a</span>') == 6
    assert page.count('<span class="tag">b</span>') == 6


def test_tags_are_cleaned_and_edited(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Tags are stored lowercase, once each, and replaced by the edit form."""
    data = {"url": "https://t.example/", "title": "T", "tags": "Web, python,web"}
    assert client.post("/bookmarks", data=data).status_code == 303
    names = sa.select(Tag.name).order_by(Tag.name)
    assert list(orm_session.scalars(names)) == ["python", "web"]
    bookmark_id = orm_session.scalar(sa.select(Tag.bookmark_id).limit(1))
    edit = client.get(f"/bookmarks/{bookmark_id}/edit").text
    assert 'value="python, web"' in edit
    data["tags"] = "flask"
    response = client.post(f"/bookmarks/{bookmark_id}/edit", data=data)
    assert response.status_code == 303
    orm_session.expire_all()
    assert list(orm_session.scalars(names)) == ["flask"]


def test_too_many_tags(client: flask.testing.FlaskClient) -> None:
    """More than ten tags is a form error, shown with the other errors."""
    data = {"url": "nope", "tags": ",".join(f"t{i}" for i in range(11))}
    response = client.post("/bookmarks", data=data)
    assert response.status_code == 400
    assert "At most 10 tags." in response.text
    assert "Enter a full http:// or https:// URL." in response.text
