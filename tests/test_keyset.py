"""paginate_keyset: pages found by a WHERE on the ordering columns, with signed
cursors, in real requests on every backend.
"""

from __future__ import annotations

import base64
import re
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import KeysetPagination
from flask_session_orm import SessionORM

from .test_pagination import ROWS
from .test_pagination import Row
from .test_pagination import Tag
from .test_pagination import statements
from .test_pagination import table_of_rows

ORDERINGS: dict[str, list[t.Any]] = {
    "id": [Row.id],
    "id-desc": [Row.id.desc()],
    "name-desc": [sa.desc(Row.name)],
    "score-id": [Row.score, Row.id],
    "score-desc-id": [Row.score.desc(), Row.id.asc()],
    "created-desc-id": [Row.created.desc(), Row.id],
    "created-desc-id-desc": [Row.created.desc(), Row.id.desc()],
    "score-created-id": [Row.score.desc(), Row.created, Row.id.desc()],
    "expression": [(Row.score * 100 + Row.id).desc()],
}


@pytest.fixture
def app(app: flask.Flask) -> flask.Flask:
    app.config["SECRET_KEY"] = "keyset tests"
    return app


@pytest.fixture
def rows(app: flask.Flask, db: SessionORM) -> t.Iterator[None]:
    """The table of ROWS rows of test_pagination, for the test only."""
    yield from table_of_rows(app, db)


@pytest.fixture
def client(app: flask.Flask, db: SessionORM, rows: None) -> flask.testing.FlaskClient:
    """A client for an app whose /rows/<ordering> view pages with keyset."""

    @app.get("/rows/<ordering>")
    def list_rows(ordering: str) -> dict[str, t.Any]:
        options: dict[str, t.Any] = {}
        if "lenient" in flask.request.args:
            options["error_out"] = False
        if "max" in flask.request.args:
            options["max_per_page"] = flask.request.args.get("max", type=int)
        statement = sa.select(Row).order_by(*ORDERINGS[ordering])
        page = db.paginate_keyset(statement, **options)
        return {
            "ids": [row.id for row in page],
            "next": page.next_cursor,
            "prev": page.prev_cursor,
            "has_next": page.has_next,
            "has_prev": page.has_prev,
            "per_page": page.per_page,
        }

    return app.test_client()


def offset_order(app: flask.Flask, db: SessionORM, ordering: str) -> list[int]:
    """The ids in the ordering, read page by page with OFFSET (db.paginate)."""
    statement = sa.select(Row).order_by(*ORDERINGS[ordering])
    with app.test_request_context():
        pagination = db.paginate(statement, per_page=10)
        ids = [row.id for row in pagination]
        while pagination.has_next:
            pagination = pagination.next()
            ids.extend(row.id for row in pagination)
        db.session.close()
    return ids


@pytest.mark.parametrize("ordering", list(ORDERINGS))
def test_walk_matches_offset(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient, ordering: str
) -> None:
    """Forward then backward through the whole table gives the OFFSET order."""
    expected = offset_order(app, db, ordering)
    assert sorted(expected) == list(range(1, ROWS + 1))

    page = client.get(f"/rows/{ordering}?per_page=10").json
    assert (page["has_prev"], page["prev"]) == (False, None)
    forward = list(page["ids"])
    pages = 1
    while page["has_next"]:
        page = client.get(f"/rows/{ordering}?per_page=10&after={page['next']}").json
        assert page["has_prev"] is True
        forward.extend(page["ids"])
        pages += 1
    assert forward == expected
    assert pages == 6
    assert page["next"] is None

    backward = list(page["ids"])
    while page["has_prev"]:
        page = client.get(f"/rows/{ordering}?per_page=10&before={page['prev']}").json
        assert page["has_next"] is True
        assert len(page["ids"]) == 10
        backward[:0] = page["ids"]
    assert backward == expected
    assert page["prev"] is None


def test_joined_collection(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """With a joined eager load of a collection, pages hold distinct, whole rows."""
    statement = (
        sa.select(Row)
        .options(orm.joinedload(Row.tags))
        .order_by(Row.created.desc(), Row.id)
    )
    with app.test_request_context():
        page = db.paginate_keyset(statement, per_page=7)
        seen = {row.id: len(row.tags) for row in page}
        while page.has_next:
            page = db.paginate_keyset(statement, per_page=7, after=page.next_cursor)
            assert len(page.items) == 7 or not page.has_next
            seen.update((row.id, len(row.tags)) for row in page)
        db.session.close()
    assert list(seen) == offset_order(app, db, "created-desc-id")
    assert seen == {i: i % 3 for i in range(1, ROWS + 1)}


def test_grouped_statement(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """A grouped statement ordered by an aggregate pages with HAVING, both ways."""
    count = sa.func.count(Row.id)
    statement = (
        sa.select(Row.score, count.label("n"))
        .group_by(Row.score)
        .order_by(count.desc(), Row.score)
    )
    with app.test_request_context():
        pages = [db.paginate_keyset(statement, per_page=2)]
        while pages[-1].has_next:
            after = pages[-1].next_cursor
            pages.append(db.paginate_keyset(statement, per_page=2, after=after))
        back = [pages[-1]]
        while back[0].has_prev:
            before = back[0].prev_cursor
            back.insert(0, db.paginate_keyset(statement, per_page=2, before=before))
        db.session.close()
    # Scores 1 to 4 have eight rows each, 0, 5 and 6 seven.
    expected = [1, 2, 3, 4, 0, 5, 6]
    assert [score for page in pages for score in page] == expected
    assert [score for page in back for score in page] == expected
    assert [len(page) for page in back] == [2, 2, 2, 1]


def test_page_sizes(client: flask.testing.FlaskClient) -> None:
    """per_page comes from the query string, capped by max_per_page; 20 by default."""
    assert client.get("/rows/id").json["ids"] == list(range(1, 21))
    assert client.get("/rows/id?per_page=5").json["ids"] == [1, 2, 3, 4, 5]
    assert client.get("/rows/id?per_page=50&max=7").json["per_page"] == 7
    assert client.get("/rows/id?per_page=0").status_code == 404
    assert client.get("/rows/id?per_page=x&lenient").json["per_page"] == 20


def test_whole_table_on_one_page(client: flask.testing.FlaskClient) -> None:
    """A page that holds every row has neither a next nor a previous page."""
    page = client.get("/rows/id?per_page=100").json
    assert len(page["ids"]) == ROWS
    assert (page["next"], page["prev"]) == (None, None)


def test_no_offset(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """A page after a cursor is a WHERE on the ordering columns, with no OFFSET."""
    statement = sa.select(Row).order_by(Row.score.desc(), Row.id)
    with app.test_request_context():
        first = db.paginate_keyset(statement, per_page=10)
        parameters: list[t.Any] = []
        seen = statements(db, parameters)
        second = db.paginate_keyset(statement, per_page=10, after=first.next_cursor)
        (sql,) = seen
        offset = db.paginate(statement, page=2, per_page=10, count=False)
        assert [row.id for row in second] == [row.id for row in offset]
        db.session.close()
    offsets = re.findall(r"OFFSET\s+(\S+)", sql.upper())
    if offsets:
        # SQLite's dialect always writes "LIMIT ? OFFSET ?"; the offset is 0.
        assert (offsets, parameters[0][-1]) == (["?"], 0)
    assert re.search(r"WHERE .*score", sql, re.S)
    assert "LIMIT" in sql.upper()


def test_cursor_is_url_safe(client: flask.testing.FlaskClient) -> None:
    """A cursor, even of a datetime key, is made of URL-safe characters only."""
    cursor = client.get("/rows/created-desc-id-desc?per_page=3").json["next"]
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", cursor)


def tamper(cursor: str) -> list[str]:
    """Altered versions of ``cursor``: its signature, and its data re-encoded."""
    payload, signature = cursor.rsplit(".", 1)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged = base64.urlsafe_b64encode(b"[40]").decode().rstrip("=")
    return [
        f"{payload}.{flipped}",
        f"{forged}.{signature}",
        payload,
        "garbage",
        "..",
    ]


def test_tampered_cursor_rejected(client: flask.testing.FlaskClient) -> None:
    """An altered cursor is a 400 saying so; error_out=False shows the first page."""
    cursor = client.get("/rows/id?per_page=10").json["next"]
    assert client.get(f"/rows/id?after={cursor}").status_code == 200
    for bad in tamper(cursor):
        for name in ("after", "before"):
            response = client.get(f"/rows/id?{name}={bad}")
            assert response.status_code == 400, bad
            assert "The pagination cursor is not valid." in response.text
            lenient = client.get(f"/rows/id?lenient&per_page=10&{name}={bad}")
            assert lenient.json["ids"] == list(range(1, 11))


def test_cursor_of_another_ordering_rejected(
    client: flask.testing.FlaskClient,
) -> None:
    """A cursor made for one ordering is refused by another one."""
    cursor = client.get("/rows/id?per_page=10").json["next"]
    assert client.get(f"/rows/id-desc?after={cursor}").status_code == 400
    other = client.get("/rows/score-id?per_page=10").json["next"]
    assert client.get(f"/rows/score-desc-id?after={other}").status_code == 400


def test_cursor_after_key_rotation(
    app: flask.Flask, client: flask.testing.FlaskClient
) -> None:
    """A cursor signed with a key now in SECRET_KEY_FALLBACKS is still accepted."""
    cursor = client.get("/rows/id?per_page=10").json["next"]
    app.config["SECRET_KEY"] = "rotated"
    assert client.get(f"/rows/id?after={cursor}").status_code == 400
    app.config["SECRET_KEY_FALLBACKS"] = ["keyset tests"]
    page = client.get(f"/rows/id?per_page=10&after={cursor}").json
    assert page["ids"] == list(range(11, 21))
    # New cursors are signed with the new key.
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get(f"/rows/id?after={page['next']}").json["ids"][0] == 21


def test_both_cursors(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """after and before together: a 400 from the query string, a ValueError in code."""
    cursor = client.get("/rows/id?per_page=10").json["next"]
    response = client.get(f"/rows/id?after={cursor}&before={cursor}")
    assert response.status_code == 400
    assert "Give &#39;after&#39; or &#39;before&#39;, not both." in response.text
    lenient = client.get(f"/rows/id?lenient&per_page=3&after={cursor}&before={cursor}")
    assert lenient.json["ids"] == [1, 2, 3]
    with (
        app.test_request_context(),
        pytest.raises(ValueError, match="'after' or 'before'.*not both"),
    ):
        db.paginate_keyset(sa.select(Row).order_by(Row.id), after=cursor, before=cursor)


def test_empty_cursor_is_first_page(client: flask.testing.FlaskClient) -> None:
    """An empty after= is the first page."""
    page = client.get("/rows/id?per_page=4&after=").json
    assert (page["ids"], page["has_prev"]) == ([1, 2, 3, 4], False)


def test_empty_page_after_cursor(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """Rows deleted past a cursor: a 404, or an empty page with error_out=False."""
    cursor = client.get("/rows/id?per_page=50").json["next"]
    with app.app_context(), db.sessionmaker() as session:
        session.execute(sa.delete(Tag).where(Tag.row_id > 50))
        session.execute(sa.delete(Row).where(Row.id > 50))
        session.commit()
    assert client.get(f"/rows/id?after={cursor}").status_code == 404
    page = client.get(f"/rows/id?lenient&after={cursor}").json
    assert page == {
        "ids": [],
        "next": None,
        "prev": None,
        "has_next": False,
        "has_prev": False,
        "per_page": 20,
    }


def test_result_object(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """The page is a KeysetPagination: iterable, sized, with items."""
    with app.test_request_context():
        page = db.paginate_keyset(sa.select(Row).order_by(Row.id), per_page=3)
        assert isinstance(page, KeysetPagination)
        assert [row.id for row in page] == [row.id for row in page.items] == [1, 2, 3]
        assert len(page) == 3
        assert repr(page) == "<KeysetPagination items=3 has_prev=False has_next=True>"
        db.session.close()


# -- errors that do not depend on the database --------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("ordering", "message"),
    [
        ([], r"needs an ordered statement: add '\.order_by\(\.\.\.\)'"),
        (["name"], r"'name', given as a string or text\(\)"),
        ([sa.text("id DESC")], r"'id DESC', given as a string or text\(\)"),
        (
            [Row.score.desc().nulls_last(), Row.id],
            r"does not support NULLS FIRST/LAST .*NOT NULL",
        ),
        ([sa.literal(1)], r"cannot compare the ORDER BY term ':param_1'"),
        (
            [Row.note, Row.id],
            r"NOT NULL ordering columns, and 'page_test_row.note' is nullable: .*"
            r"'func.coalesce\(note, \.\.\.\)'",
        ),
        (
            [sa.func.row_number().over(order_by=Row.id)],
            r"cannot compare the window function .*subquery",
        ),
    ],
)
def test_unsupported_ordering(
    app: flask.Flask, db: SessionORM, ordering: list[t.Any], message: str
) -> None:
    """An unordered statement or an ordering that cannot be compared is a ValueError."""
    statement = sa.select(Row).order_by(*ordering)
    with app.test_request_context(), pytest.raises(ValueError, match=message):
        db.paginate_keyset(statement)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_not_a_select(app: flask.Flask, db: SessionORM) -> None:
    """A UNION is not a select(): a TypeError names what was passed."""
    union = sa.union(sa.select(Row.id), sa.select(Row.id)).order_by("id")
    with (
        app.test_request_context(),
        pytest.raises(
            TypeError, match="takes a select\\(\\) statement, got 'CompoundSelect'"
        ),
    ):
        db.paginate_keyset(union)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_null_in_ordering_expression(
    app: flask.Flask, db: SessionORM, rows: None
) -> None:
    """A NULL in an ordering expression cannot become a cursor: a ValueError."""
    statement = sa.select(Row).order_by(sa.func.lower(Row.note), Row.id)
    with (
        app.test_request_context(),
        pytest.raises(ValueError, match=r"NULL in the ordering term 'lower\(.*note"),
    ):
        db.paginate_keyset(statement, per_page=5)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_secret_key(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """Without SECRET_KEY there is nothing to sign cursors with: a RuntimeError."""
    app.config["SECRET_KEY"] = None
    with (
        app.test_request_context(),
        pytest.raises(RuntimeError, match="'SECRET_KEY', which is not set"),
    ):
        db.paginate_keyset(sa.select(Row).order_by(Row.id))
