"""The HTML pages: Post/Redirect/Get forms, their errors, the export."""

from __future__ import annotations

import csv
import io

import flask.testing
import pytest
import sqlalchemy.orm as orm

from .conftest import audit_log
from .conftest import bookmark_urls

# "app" is named so that every test runs once per backend even when it takes
# only orm_session: the plugin looks the app fixture up by name at run time,
# which does not parametrize the test.
pytestmark = pytest.mark.usefixtures("app", "orm_isolation")

A = "https://a.example/"
B = "https://b.example/"


def add(client: flask.testing.FlaskClient, url: str, title: str = "") -> None:
    response = client.post("/bookmarks", data={"url": url, "title": title})
    assert response.status_code == 303, response.text


def oldest_id(client: flask.testing.FlaskClient) -> int:
    bookmarks = client.get("/api/bookmarks").json["bookmarks"]  # type: ignore[index]
    return int(bookmarks[-1]["id"])


def test_index_without_bookmarks(client: flask.testing.FlaskClient) -> None:
    """The front page says there is nothing yet and offers the form."""
    response = client.get("/")
    assert response.status_code == 200
    assert "No bookmarks yet" in response.text
    assert 'action="/bookmarks"' in response.text


def test_create_redirects_then_lists(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """A valid form is stored and answered with a 303 to the list, which shows it."""
    response = client.post("/bookmarks", data={"url": A, "title": "Site A"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert bookmark_urls(orm_session) == [A]
    page = client.get("/").text
    assert "Site A" in page
    assert A in page


def test_create_defaults_title_to_url(client: flask.testing.FlaskClient) -> None:
    """A bookmark saved without a title shows its URL as title."""
    add(client, A)
    assert f">{A}</a>" in client.get("/").text


def test_create_invalid_form(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """An invalid URL shows the form again with a 400, keeping what was typed."""
    response = client.post(
        "/bookmarks", data={"url": "not a link", "title": "T", "note": "keep me"}
    )
    assert response.status_code == 400
    assert "Enter a full http:// or https:// URL." in response.text
    assert "keep me" in response.text
    assert bookmark_urls(orm_session) == []
    assert audit_log(orm_session) == []


def test_create_duplicate_is_a_form_error(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """A URL already saved fails at the commit after the view: the form comes
    back with a 409 naming the saved bookmark, and no audit entry is written.
    """
    add(client, A, "First")
    response = client.post("/bookmarks", data={"url": A, "title": "Second"})
    assert response.status_code == 409
    assert "This link is already saved as \u201cFirst\u201d." in response.text
    assert 'value="Second"' in response.text
    assert bookmark_urls(orm_session) == [A]
    assert audit_log(orm_session) == [("created", A, "")]


def test_edit_form_shows_current_values(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """The edit page is a form filled with the bookmark's values."""
    add(client, A, "Site A")
    response = client.get(f"/bookmarks/{oldest_id(client)}/edit")
    assert response.status_code == 200
    assert f'value="{A}"' in response.text
    assert 'value="Site A"' in response.text


def test_edit_saves_and_audits_changed_fields(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Saving the edit form stores the change, redirects, and audits which fields
    changed.
    """
    add(client, A, "Old")
    bookmark_id = oldest_id(client)
    response = client.post(
        f"/bookmarks/{bookmark_id}/edit", data={"url": B, "title": "New", "note": ""}
    )
    assert response.status_code == 303
    assert bookmark_urls(orm_session) == [B]
    assert audit_log(orm_session)[-1] == ("updated", B, "url, title")


def test_edit_unchanged_writes_no_audit_entry(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Saving the edit form without changing anything writes no audit entry."""
    add(client, A, "Same")
    bookmark_id = oldest_id(client)
    response = client.post(
        f"/bookmarks/{bookmark_id}/edit", data={"url": A, "title": "Same", "note": ""}
    )
    assert response.status_code == 303
    assert audit_log(orm_session) == [("created", A, "")]


def test_edit_to_a_saved_url_is_a_form_error(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Changing a URL to one already saved fails at the commit: the edit form
    comes back with a 409, and neither the change nor its audit entry is stored.
    """
    add(client, A)
    add(client, B)
    bookmark_id = oldest_id(client)
    response = client.post(
        f"/bookmarks/{bookmark_id}/edit", data={"url": B, "title": "T", "note": ""}
    )
    assert response.status_code == 409
    assert "This link is already saved" in response.text
    assert "Edit bookmark" in response.text
    assert bookmark_urls(orm_session) == [A, B]
    assert [entry[0] for entry in audit_log(orm_session)] == ["created", "created"]


def test_edit_invalid_form(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """An invalid edit shows the form again with a 400 and changes nothing."""
    add(client, A, "Title")
    bookmark_id = oldest_id(client)
    response = client.post(
        f"/bookmarks/{bookmark_id}/edit", data={"url": "", "title": "x", "note": ""}
    )
    assert response.status_code == 400
    assert "A URL is required." in response.text
    assert bookmark_urls(orm_session) == [A]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/bookmarks/999/edit"), ("POST", "/bookmarks/999/delete")],
)
def test_missing_bookmark(
    client: flask.testing.FlaskClient, method: str, path: str
) -> None:
    """Editing or deleting a bookmark that does not exist is a 404."""
    assert client.open(path, method=method).status_code == 404


def test_delete(client: flask.testing.FlaskClient, orm_session: orm.Session) -> None:
    """The delete button removes the bookmark, redirects, and audits it."""
    add(client, A)
    bookmark_id = oldest_id(client)
    response = client.post(f"/bookmarks/{bookmark_id}/delete")
    assert response.status_code == 303
    assert bookmark_urls(orm_session) == []
    assert audit_log(orm_session) == [("created", A, ""), ("deleted", A, "")]


def test_search(client: flask.testing.FlaskClient) -> None:
    """The search box filters on title, URL and note, with % taken literally."""
    add(client, A, "Flask docs")
    add(client, B, "100% coverage")
    page = client.get("/", query_string={"q": "flask"}).text
    assert "Flask docs" in page
    assert "100% coverage" not in page
    page = client.get("/", query_string={"q": "0%"}).text
    assert "100% coverage" in page
    assert "Flask docs" not in page
    assert "No bookmark matches" in client.get("/?q=nothing").text


def test_csv_export_streams_every_bookmark(client: flask.testing.FlaskClient) -> None:
    """The CSV export streams one row per bookmark, read while streaming."""
    add(client, A, "Site, A")
    add(client, B, "Site B")
    response = client.get("/bookmarks.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.is_streamed
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["id", "url", "title", "note", "created_at"]
    assert [row[1:3] for row in rows[1:]] == [[A, "Site, A"], [B, "Site B"]]


def test_audit_page_lists_committed_changes(
    client: flask.testing.FlaskClient,
) -> None:
    """The audit page shows the committed changes, newest first."""
    add(client, A)
    client.post("/bookmarks", data={"url": A})  # a 409: not audited
    client.post(f"/bookmarks/{oldest_id(client)}/delete")
    page = client.get("/audit").text
    assert page.count("<td>created</td>") == 1
    assert page.index("<td>deleted</td>") < page.index("<td>created</td>")
