"""get_or_404, first_or_404, one_or_404 and paginate, as in Flask-SQLAlchemy.

Each helper runs inside real requests made with the test client, on every
backend; where Flask-SQLAlchemy defines the answer, the test compares with its
own ``SelectPagination`` run on the same session.
"""

from __future__ import annotations

import datetime
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask_sqlalchemy.pagination import SelectPagination

from flask_session_orm import Pagination
from flask_session_orm import SessionORM

ROWS = 53


class Base(orm.DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "page_test_row"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)
    score: orm.Mapped[int]
    created: orm.Mapped[datetime.datetime]
    note: orm.Mapped[str | None] = orm.mapped_column(sa.String(50))
    tags: orm.Mapped[list[Tag]] = orm.relationship(order_by="Tag.id")


class Tag(Base):
    __tablename__ = "page_test_tag"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    row_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Row.id))
    label: orm.Mapped[str] = orm.mapped_column(sa.String(20))


def make_rows() -> list[Row]:
    """ROWS rows: unique ids, names and times; scores repeat (0 to 6); row i has
    i % 3 tags.
    """
    start = datetime.datetime(2024, 1, 1, 12, 0, 0)
    return [
        Row(
            id=i,
            name=f"row-{i:03}",
            score=i % 7,
            # A permutation of the ids, so that this order is not the id order.
            created=start + datetime.timedelta(minutes=(i * 19) % ROWS),
            note=None if i % 5 == 0 else f"note {i}",
            tags=[Tag(label=f"tag {n}") for n in range(i % 3)],
        )
        for i in range(1, ROWS + 1)
    ]


@pytest.fixture
def rows(app: flask.Flask, db: SessionORM) -> t.Iterator[None]:
    """The table of ROWS rows, for the test only."""
    yield from table_of_rows(app, db)


def table_of_rows(app: flask.Flask, db: SessionORM) -> t.Iterator[None]:
    """Create the table with ROWS rows, yield, drop it."""
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
        with db.sessionmaker() as session:
            session.add_all(make_rows())
            session.commit()
    yield
    if flask.has_request_context():
        db.session.close()
    with app.app_context():
        db.drop_all(Base)


def summary(pagination: t.Any) -> dict[str, t.Any]:
    """Every attribute of a Pagination (ours or Flask-SQLAlchemy's)."""
    return {
        "ids": [row.id for row in pagination],
        "page": pagination.page,
        "per_page": pagination.per_page,
        "total": pagination.total,
        "pages": pagination.pages,
        "first": pagination.first,
        "last": pagination.last,
        "has_prev": pagination.has_prev,
        "has_next": pagination.has_next,
        "prev_num": pagination.prev_num,
        "next_num": pagination.next_num,
        "iter_pages": list(pagination.iter_pages()),
    }


ORDERED = sa.select(Row).order_by(Row.id)


@pytest.fixture
def client(app: flask.Flask, db: SessionORM, rows: None) -> flask.testing.FlaskClient:
    """A client for an app with views that use each helper."""

    @app.get("/rows/<int:ident>")
    def get_row(ident: int) -> str:
        return db.get_or_404(Row, ident, description=f"No row {ident} here.").name

    @app.get("/first")
    def first() -> str:
        low = flask.request.args.get("min", 0, type=int)
        statement = sa.select(Row).where(Row.id >= low).order_by(Row.id)
        return db.first_or_404(statement, description="Nothing that high.").name

    @app.get("/one")
    def one() -> str:
        score = flask.request.args.get("score", type=int)
        statement = sa.select(Row).where(Row.score == score, Row.id < 8)
        return db.one_or_404(statement, description="Not exactly one.").name

    @app.get("/page")
    def page() -> dict[str, t.Any]:
        options: dict[str, t.Any] = {}
        if "max" in flask.request.args:
            options["max_per_page"] = flask.request.args.get("max", type=int)
        if "lenient" in flask.request.args:
            options["error_out"] = False
        if "nocount" in flask.request.args:
            options["count"] = False
        return summary(db.paginate(ORDERED, **options))

    return app.test_client()


def test_get_or_404(client: flask.testing.FlaskClient) -> None:
    """get_or_404 returns the row, or a 404 whose page shows the description."""
    assert client.get("/rows/5").text == "row-005"
    response = client.get("/rows/999")
    assert response.status_code == 404
    assert "No row 999 here." in response.text


def test_get_or_404_passes_arguments(
    app: flask.Flask, db: SessionORM, rows: None
) -> None:
    """Extra keyword arguments go to session.get(), as in Flask-SQLAlchemy 3.1."""

    @app.get("/partial/<int:ident>")
    def partial(ident: int) -> list[str]:
        row = db.get_or_404(Row, ident, options=[orm.load_only(Row.name)])
        return sorted(sa.inspect(row).unloaded)

    assert app.test_client().get("/partial/3").json == [
        "created",
        "note",
        "score",
        "tags",
    ]


def test_first_or_404(client: flask.testing.FlaskClient) -> None:
    """first_or_404 returns the first row, or a 404 with the description."""
    assert client.get("/first?min=50").text == "row-050"
    response = client.get("/first?min=100")
    assert response.status_code == 404
    assert "Nothing that high." in response.text


def test_one_or_404(client: flask.testing.FlaskClient) -> None:
    """one_or_404 returns the only row; none or several rows are a 404."""
    assert client.get("/one?score=3").text == "row-003"
    none = client.get("/one?score=99")
    assert none.status_code == 404
    assert "Not exactly one." in none.text


def test_one_or_404_several(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """one_or_404 answers 404, with the description, for more than one row."""

    @app.get("/several")
    def several() -> str:
        return db.one_or_404(
            sa.select(Row).where(Row.score == 1), description="Too many."
        ).name

    response = app.test_client().get("/several")
    assert response.status_code == 404
    assert "Too many." in response.text


def test_paginate_query_string(client: flask.testing.FlaskClient) -> None:
    """page and per_page come from the query string."""
    assert client.get("/page?page=2&per_page=10").json == {
        "ids": list(range(11, 21)),
        "page": 2,
        "per_page": 10,
        "total": ROWS,
        "pages": 6,
        "first": 11,
        "last": 20,
        "has_prev": True,
        "has_next": True,
        "prev_num": 1,
        "next_num": 3,
        "iter_pages": [1, 2, 3, 4, 5, 6],
    }


def test_paginate_defaults(client: flask.testing.FlaskClient) -> None:
    """Without arguments a request gets page 1 of 20 items."""
    data = client.get("/page").json
    assert (data["page"], data["per_page"], data["ids"]) == (1, 20, list(range(1, 21)))


def test_paginate_last_page(client: flask.testing.FlaskClient) -> None:
    """The last page holds the rest and has no next page."""
    data = client.get("/page?page=3").json
    assert data["ids"] == list(range(41, ROWS + 1))
    assert (data["first"], data["last"], data["has_next"]) == (41, ROWS, False)
    assert data["next_num"] is None


@pytest.mark.parametrize(
    "query",
    [
        "page=abc",
        "page=",
        "page=0",
        "page=-2",
        "page=1.5",
        "per_page=x",
        "per_page=0",
        "per_page=-1",
        "page=4",  # Past the last page of 20.
    ],
)
def test_paginate_bad_values_404(client: flask.testing.FlaskClient, query: str) -> None:
    """A page or page size that is not a positive integer, or an empty page, is 404."""
    assert client.get(f"/page?{query}").status_code == 404


@pytest.mark.parametrize(
    ("query", "page", "per_page", "count"),
    [
        ("page=abc", 1, 20, 20),
        ("page=0", 1, 20, 20),
        ("per_page=x", 1, 20, 20),
        ("per_page=0", 1, 20, 20),
        ("page=2&per_page=-5", 2, 20, 20),
        ("page=9", 9, 20, 0),
    ],
)
def test_paginate_error_out_false(
    client: flask.testing.FlaskClient, query: str, page: int, per_page: int, count: int
) -> None:
    """With error_out=False bad values become the defaults and an empty page is 200."""
    response = client.get(f"/page?lenient&{query}")
    assert response.status_code == 200
    data = response.json
    assert (data["page"], data["per_page"], len(data["ids"])) == (page, per_page, count)


def test_paginate_max_per_page(client: flask.testing.FlaskClient) -> None:
    """max_per_page caps the page size asked for in the query string."""
    data = client.get("/page?per_page=500&max=25").json
    assert (data["per_page"], len(data["ids"]), data["pages"]) == (25, 25, 3)
    # Without a cap, a large page size is taken as given, as by Flask-SQLAlchemy.
    assert client.get("/page?per_page=500").json["per_page"] == 500


def statements(db: SessionORM, parameters: list[t.Any] | None = None) -> list[str]:
    """A list that receives the SQL of every statement the current app's default
    engine runs from now on (and ``parameters`` their parameters).
    """
    seen: list[str] = []

    def record(*args: t.Any) -> None:
        seen.append(args[2])
        if parameters is not None:
            parameters.append(args[3])

    sa.event.listen(db.engine, "before_cursor_execute", record)
    return seen


def test_paginate_no_count(
    app: flask.Flask, client: flask.testing.FlaskClient, db: SessionORM
) -> None:
    """count=False runs no count query and leaves total None and no next page."""
    with app.app_context():
        seen = statements(db)
    data = client.get("/page?nocount&page=2").json
    assert (data["total"], data["pages"], data["has_next"]) == (None, 0, False)
    assert data["ids"] == list(range(21, 41))
    assert data["iter_pages"] == []
    assert not [sql for sql in seen if "count(" in sql.lower()]
    client.get("/page?page=2")
    assert [sql for sql in seen if "count(" in sql.lower()]


def test_paginate_next_prev(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """next() and prev() query the neighbouring pages, keeping total uncounted."""

    @app.get("/walk")
    def walk() -> dict[str, t.Any]:
        seen = statements(db)
        pagination = db.paginate(ORDERED, page=2, per_page=10)
        counted = len(seen)
        after = pagination.next()
        before = pagination.prev()
        return {
            "next": summary(after),
            "prev": [row.id for row in before],
            "queries": len(seen) - counted,
        }

    data = app.test_client().get("/walk").json
    assert data["next"]["ids"] == list(range(21, 31))
    assert (data["next"]["page"], data["next"]["total"]) == (3, ROWS)
    assert data["prev"] == list(range(1, 11))
    assert data["queries"] == 2  # The two pages' items, no count.


def test_paginate_joined_collection(
    app: flask.Flask, db: SessionORM, rows: None
) -> None:
    """A joined eager load of a collection gives whole pages of distinct rows."""

    @app.get("/tagged")
    def tagged() -> dict[str, t.Any]:
        statement = sa.select(Row).options(orm.joinedload(Row.tags)).order_by(Row.id)
        pagination = db.paginate(statement, per_page=10)
        return {
            "tags": {row.id: len(row.tags) for row in pagination},
            "total": pagination.total,
        }

    data = app.test_client().get("/tagged?page=2").json
    assert data == {"tags": {str(i): i % 3 for i in range(11, 21)}, "total": ROWS}


def test_paginate_columns(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """A statement of columns gives the first column of each row, as scalars()."""
    with app.test_request_context("/?page=2&per_page=3"):
        statement = sa.select(Row.name, Row.score).order_by(Row.id)
        pagination = db.paginate(statement)
        assert pagination.items == ["row-004", "row-005", "row-006"]
        assert pagination.total == ROWS
        db.session.close()


def test_paginate_outside_request(
    app: flask.Flask, db: SessionORM, rows: None, outside_requests: None
) -> None:
    """Outside a request the defaults are page 1 of 20, as in Flask-SQLAlchemy."""
    with app.app_context():
        pagination = db.paginate(ORDERED)
        assert isinstance(pagination, Pagination)
        assert (pagination.page, pagination.per_page) == (1, 20)
        assert [row.id for row in pagination.items] == list(range(1, 21))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "page=2",
        "page=3&per_page=7",
        "per_page=53",
        "per_page=54",
        "page=5&per_page=2",
        "page=27&per_page=2",
        "page=abc&per_page=3",
        "page=0",
        "per_page=0",
        "page=99",
        "per_page=1000",
    ],
)
def test_paginate_matches_flask_sqlalchemy(
    app: flask.Flask, db: SessionORM, rows: None, query: str
) -> None:
    """For the same request, every attribute equals Flask-SQLAlchemy's."""

    @app.get("/both")
    def both() -> dict[str, t.Any]:
        options = {"max_per_page": 50, "error_out": False}
        ours = db.paginate(ORDERED, **options)
        theirs = SelectPagination(select=ORDERED, session=db.session, **options)
        return {"ours": summary(ours), "theirs": summary(theirs)}

    data = app.test_client().get(f"/both?{query}").json
    assert data["ours"] == data["theirs"]


ITER_PAGES_OPTIONS: list[dict[str, int]] = [
    {},
    {"left_edge": 0, "left_current": 0, "right_current": 0, "right_edge": 0},
    {"left_edge": 1, "left_current": 1, "right_current": 1, "right_edge": 1},
    {"left_edge": 3, "left_current": 0, "right_current": 0, "right_edge": 3},
    {"left_edge": 0, "left_current": 5, "right_current": 5, "right_edge": 0},
    {"left_edge": 10, "left_current": 10, "right_current": 10, "right_edge": 10},
]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_iter_pages_matches_flask_sqlalchemy(
    app: flask.Flask, db: SessionORM, rows: None
) -> None:
    """iter_pages() yields what Flask-SQLAlchemy's does, for a table of cases."""
    cases = 0
    with app.test_request_context():
        for per_page in (1, 3, 10, 20):
            for page in range(1, 62, 3):
                options = {"page": page, "per_page": per_page, "error_out": False}
                ours = db.paginate(ORDERED, count=False, **options)
                theirs = SelectPagination(
                    select=ORDERED, session=db.session, count=False, **options
                )
                for total in (0, 1, 2, 7, 20, 53, 100, 1000):
                    ours.total = theirs.total = total
                    for kwargs in ITER_PAGES_OPTIONS:
                        expected = list(theirs.iter_pages(**kwargs))
                        assert list(ours.iter_pages(**kwargs)) == expected, (
                            f"page {page} of {per_page}, total {total}, {kwargs}"
                        )
                        cases += 1
    assert cases == 4 * 21 * 8 * len(ITER_PAGES_OPTIONS)


def test_iter_pages_example(app: flask.Flask, db: SessionORM, rows: None) -> None:
    """The documented example: page 7 of 20 pages."""
    with app.test_request_context():
        pagination = db.paginate(ORDERED, page=7, per_page=1, count=False)
        pagination.total = 20
        assert list(pagination.iter_pages()) == [
            *(1, 2, None),
            *range(5, 12),
            *(None, 19, 20),
        ]


# A template written for Flask-SQLAlchemy's Pagination, as in its documentation.
TEMPLATE = """\
<ul>
{%- for row in pagination %}
  <li>{{ row.name }}</li>
{%- endfor %}
</ul>
<p>Showing {{ pagination.first }} - {{ pagination.last }} of {{ pagination.total }}</p>
<nav>
{%- if pagination.has_prev %}
  <a href="{{ url_for(request.endpoint, page=pagination.prev_num) }}">Previous</a>
{%- endif %}
{%- for page in pagination.iter_pages() %}
  {%- if page %}
    {%- if page != pagination.page %}
  <a href="{{ url_for(request.endpoint, page=page) }}">{{ page }}</a>
    {%- else %}
  <strong>{{ page }}</strong>
    {%- endif %}
  {%- else %}
  <span class="ellipsis">…</span>
  {%- endif %}
{%- endfor %}
{%- if pagination.has_next %}
  <a href="{{ url_for(request.endpoint, page=pagination.next_num) }}">Next</a>
{%- endif %}
</nav>
<p>{{ pagination.page }} of {{ pagination.pages }}, {{ pagination.per_page }} a page</p>
"""


@pytest.mark.parametrize("query", ["", "page=2", "page=9&per_page=3", "per_page=60"])
def test_template_renders_unchanged(
    app: flask.Flask, db: SessionORM, rows: None, query: str
) -> None:
    """A template written for Flask-SQLAlchemy renders the same HTML."""

    @app.get("/ours")
    def ours() -> str:
        return flask.render_template_string(TEMPLATE, pagination=db.paginate(ORDERED))

    @app.get("/theirs")
    def theirs() -> str:
        pagination = SelectPagination(
            select=ORDERED, session=db.session, max_per_page=None
        )
        return flask.render_template_string(TEMPLATE, pagination=pagination)

    client = app.test_client()
    html = client.get(f"/ours?{query}").text
    # The links differ by the endpoint's URL only.
    assert html == client.get(f"/theirs?{query}").text.replace("/theirs", "/ours")
    assert "<li>row-" in html
    if query == "page=9&per_page=3":
        assert '<a href="/ours?page=8">Previous</a>' in html
        assert "<strong>9</strong>" in html
        assert '<span class="ellipsis">…</span>' in html
