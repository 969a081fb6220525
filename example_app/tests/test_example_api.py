"""The JSON API: CRUD, its errors, the import and its preview."""

from __future__ import annotations

import typing as t

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
C = "https://c.example/"


def create(client: flask.testing.FlaskClient, url: str, **fields: str) -> t.Any:
    response = client.post("/api/bookmarks", json={"url": url, **fields})
    assert response.status_code == 201, response.json
    return response.json


def test_create_answers_201_with_location(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """POST stores the bookmark and answers 201, its JSON and where to find it."""
    response = client.post("/api/bookmarks", json={"url": A, "title": "A", "note": "n"})
    assert response.status_code == 201
    body = response.json
    assert body is not None
    assert (body["url"], body["title"], body["note"]) == (A, "A", "n")
    assert response.headers["Location"] == f"/api/bookmarks/{body['id']}"
    assert client.get(response.headers["Location"]).json == body
    assert bookmark_urls(orm_session) == [A]
    assert audit_log(orm_session) == [("created", A, "")]


def test_create_invalid(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """Invalid fields are a 400 naming each of them, and nothing is stored."""
    response = client.post(
        "/api/bookmarks", json={"url": "ftp://x", "title": 3, "note": "x" * 5001}
    )
    assert response.status_code == 400
    assert response.json == {
        "error": "invalid",
        "errors": {
            "url": "Enter a full http:// or https:// URL.",
            "title": "Must be text.",
            "note": "At most 5000 characters.",
        },
    }
    assert bookmark_urls(orm_session) == []


@pytest.mark.parametrize("body", ["not json", "[1, 2]"])
def test_create_needs_a_json_object(
    client: flask.testing.FlaskClient, body: str
) -> None:
    """A body that is not a JSON object is a 400 in JSON."""
    response = client.post("/api/bookmarks", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json == {
        "error": "Bad Request",
        "message": "The request body must be an object in JSON.",
    }


def test_create_duplicate_is_a_409(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """A URL already saved fails at the view's flush: 409 with the saved bookmark,
    nothing stored, no audit entry.
    """
    first = create(client, A, title="First")
    response = client.post("/api/bookmarks", json={"url": A, "title": "Second"})
    assert response.status_code == 409
    assert response.json == {
        "error": "conflict",
        "message": "A bookmark with this URL is already saved.",
        "existing": first,
    }
    assert bookmark_urls(orm_session) == [A]
    assert audit_log(orm_session) == [("created", A, "")]


def test_list_and_search(client: flask.testing.FlaskClient) -> None:
    """GET lists bookmarks newest first; ``q`` filters them."""
    create(client, A, title="Alpha")
    create(client, B, title="Beta", note="the second")
    urls = [b["url"] for b in client.get("/api/bookmarks").json["bookmarks"]]  # type: ignore[index]
    assert urls == [B, A]
    found = client.get("/api/bookmarks?q=SECOND").json["bookmarks"]  # type: ignore[index]
    assert [b["title"] for b in found] == ["Beta"]


def test_get_missing(client: flask.testing.FlaskClient) -> None:
    """A bookmark that does not exist is a 404 in JSON."""
    response = client.get("/api/bookmarks/999999")
    assert response.status_code == 404
    assert response.json == {
        "error": "Not Found",
        "message": "There is no bookmark 999999.",
    }


def test_patch_updates_given_fields(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """PATCH changes only the fields given and audits them."""
    bookmark = create(client, A, title="Old", note="kept")
    response = client.patch(f"/api/bookmarks/{bookmark['id']}", json={"title": "New"})
    assert response.status_code == 200
    assert response.json == {**bookmark, "title": "New"}
    assert client.get(f"/api/bookmarks/{bookmark['id']}").json == response.json
    assert audit_log(orm_session)[-1] == ("updated", A, "title")


def test_patch_to_a_saved_url_is_a_409(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """A PATCH to a URL already saved fails in the commit after the view: the
    client gets 409, not the 200 the view returned, and nothing changes.
    """
    bookmark = create(client, A)
    other = create(client, B)
    response = client.patch(f"/api/bookmarks/{bookmark['id']}", json={"url": B})
    assert response.status_code == 409
    assert response.json["existing"] == other  # type: ignore[index]
    assert bookmark_urls(orm_session) == [A, B]
    assert [entry[0] for entry in audit_log(orm_session)] == ["created", "created"]


def test_patch_empty_title(client: flask.testing.FlaskClient) -> None:
    """A PATCH cannot empty the title."""
    bookmark = create(client, A, title="T")
    response = client.patch(f"/api/bookmarks/{bookmark['id']}", json={"title": " "})
    assert response.status_code == 400
    assert response.json["errors"] == {"title": "A title cannot be empty."}  # type: ignore[index]
    assert client.get(f"/api/bookmarks/{bookmark['id']}").json == bookmark


def test_delete(client: flask.testing.FlaskClient, orm_session: orm.Session) -> None:
    """DELETE answers 204; the bookmark is gone and the deletion audited."""
    bookmark = create(client, A)
    response = client.delete(f"/api/bookmarks/{bookmark['id']}")
    assert response.status_code == 204
    assert client.get(f"/api/bookmarks/{bookmark['id']}").status_code == 404
    assert client.delete(f"/api/bookmarks/{bookmark['id']}").status_code == 404
    assert audit_log(orm_session) == [("created", A, ""), ("deleted", A, "")]


def test_import_skips_saved_urls(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """An import saves the new URLs and skips those already saved or repeated;
    a skipped item's audit entry is dropped with its savepoint.
    """
    create(client, A)
    response = client.post(
        "/api/bookmarks/import",
        json=[{"url": B, "title": "B"}, {"url": A}, {"url": C}, {"url": B}],
    )
    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert [b["url"] for b in body["created"]] == [B, C]
    assert body["skipped"] == [
        {"url": A, "reason": "already saved"},
        {"url": B, "reason": "already saved"},
    ]
    assert bookmark_urls(orm_session) == [A, B, C]
    assert audit_log(orm_session) == [
        ("created", A, ""),
        ("created", B, ""),
        ("created", C, ""),
    ]


def test_import_with_an_invalid_item_stores_nothing(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """An invalid item makes the import a 400 that names it, and the items
    inserted before it are rolled back with their audit entries.
    """
    response = client.post(
        "/api/bookmarks/import", json=[{"url": A}, {"url": B}, {"url": "nope"}]
    )
    assert response.status_code == 400
    assert response.json == {
        "error": "invalid",
        "errors": {"url": "Enter a full http:// or https:// URL."},
        "index": 2,
    }
    assert bookmark_urls(orm_session) == []
    assert audit_log(orm_session) == []


def test_import_needs_a_list(client: flask.testing.FlaskClient) -> None:
    """An import body that is not a JSON list, or holds a non-object, is a 400."""
    response = client.post("/api/bookmarks/import", json={"url": A})
    assert response.status_code == 400
    assert response.json["message"] == "The request body must be a list in JSON."  # type: ignore[index]
    response = client.post("/api/bookmarks/import", json=[{"url": A}, "x"])
    assert response.status_code == 400
    assert response.json["index"] == 1  # type: ignore[index]


def test_preview_stores_nothing(
    client: flask.testing.FlaskClient, orm_session: orm.Session
) -> None:
    """The import preview reports what an import would do and, its view never
    committing, stores nothing and writes no audit entry.
    """
    create(client, A)
    response = client.post(
        "/api/bookmarks/import/preview", json=[{"url": A}, {"url": B}, {"url": B}]
    )
    assert response.status_code == 200
    assert response.json == {
        "would_create": [B],
        "would_skip": [
            {"url": A, "reason": "already saved"},
            {"url": B, "reason": "already saved"},
        ],
    }
    assert bookmark_urls(orm_session) == [A]
    assert audit_log(orm_session) == [("created", A, "")]


def test_audit_api(client: flask.testing.FlaskClient) -> None:
    """The audit API lists committed changes newest first, by bookmark if asked."""
    a = create(client, A)
    b = create(client, B)
    client.delete(f"/api/bookmarks/{a['id']}")
    entries = client.get("/api/audit").json["entries"]  # type: ignore[index]
    assert [(e["action"], e["bookmark_id"]) for e in entries] == [
        ("deleted", a["id"]),
        ("created", b["id"]),
        ("created", a["id"]),
    ]
    assert {e["actor"] for e in entries} == {"127.0.0.1"}
    entries = client.get(f"/api/audit?bookmark_id={a['id']}&limit=1").json["entries"]  # type: ignore[index]
    assert [(e["action"], e["bookmark_id"]) for e in entries] == [("deleted", a["id"])]
