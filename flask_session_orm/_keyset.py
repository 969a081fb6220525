"""Keyset (cursor) pagination: pages of an ordered ``select`` found by a WHERE
on the ordering columns instead of an OFFSET, with signed cursors for URLs.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import typing as t
import uuid

import flask
import itsdangerous
import sqlalchemy as sa
import sqlalchemy.sql.operators as operators

from ._pagination import HasSession
from ._pagination import page_size

#: Salt of the cursors' signatures, so that a value signed with the same
#: SECRET_KEY for another purpose (a session cookie) is never a valid cursor.
SALT = "flask_session_orm.keyset"

#: Where a cursor is read from in the query string when none is passed.
AFTER_ARG = "after"
BEFORE_ARG = "before"


class OrderingError(ValueError):
    """The statement's ORDER BY cannot be used for keyset pagination."""


class Key(t.NamedTuple):
    """One ORDER BY term: the expression and whether it is descending."""

    expression: sa.ColumnElement[t.Any]
    descending: bool


def ordering(select: sa.Select[t.Any]) -> list[Key]:
    """The ORDER BY terms of ``select``; OrderingError for what keyset
    pagination cannot compare.
    """
    if not isinstance(select, sa.Select):
        raise TypeError(
            "paginate_keyset() takes a select() statement, got"
            f" {type(select).__name__!r}."
        )
    # Select has no public accessor for its ORDER BY; _order_by_clauses is the
    # attribute SQLAlchemy itself uses (1.4 to 2.1).
    clauses = tuple(getattr(select, "_order_by_clauses", ()))
    if not clauses:
        raise OrderingError(
            "Keyset pagination needs an ordered statement: add"
            " '.order_by(...)' with a unique key (or a key and a unique tiebreaker,"
            " such as the primary key), e.g. 'select(Post).order_by(Post.id)'."
        )
    return [_key(clause) for clause in clauses]


def _key(clause: t.Any) -> Key:
    """One ORDER BY term, checked."""
    descending = False
    expression = clause
    if isinstance(expression, sa.UnaryExpression):
        modifier = expression.modifier
        if modifier is operators.desc_op:
            descending = True
            expression = expression.element
        elif modifier is operators.asc_op:
            expression = expression.element
        elif modifier in (operators.nulls_first_op, operators.nulls_last_op):
            raise OrderingError(
                f"Keyset pagination does not support NULLS FIRST/LAST ({clause}):"
                " order by columns that are NOT NULL."
            )
    # An ORDER BY of a Label object refers to it by name; compare its expression.
    if getattr(expression, "__visit_name__", None) == "label_reference":
        expression = expression.element
    if isinstance(expression, sa.Label):
        expression = expression.element
    if isinstance(expression, sa.Over):
        raise OrderingError(
            f"Keyset pagination cannot compare the window function {str(clause)!r}"
            " in a WHERE: select from a subquery that computes it, and order by"
            " the subquery's column."
        )
    visit_name = getattr(expression, "__visit_name__", None)
    if visit_name in ("textual_label_reference", "textclause"):
        raise OrderingError(
            f"Keyset pagination cannot compare the ORDER BY term {str(clause)!r},"
            " given as a string or text(): order by column objects such as"
            " 'Post.created_at' or 'Post.id.desc()'."
        )
    nested = isinstance(expression, sa.UnaryExpression) and (
        expression.modifier is not None
    )
    if (
        nested
        or not isinstance(expression, sa.ColumnElement)
        or isinstance(expression, (sa.BindParameter, sa.Null))
    ):
        raise OrderingError(
            f"Keyset pagination cannot compare the ORDER BY term {str(clause)!r}:"
            " order by columns, or SQL expressions of columns, ascending or"
            " descending."
        )
    # A NULL compares to nothing, so rows with one would be skipped by every
    # page after the first: refuse a nullable column at once rather than on the
    # page where a NULL happens to end up under a cursor.
    if isinstance(expression, sa.Column) and expression.nullable:
        raise OrderingError(
            f"Keyset pagination needs NOT NULL ordering columns, and"
            f" {str(expression)!r} is nullable: declare it NOT NULL, or order by"
            f" an expression that is never NULL, such as"
            f" 'func.coalesce({expression.key}, ...)'."
        )
    return Key(expression, descending)


def after_rows(
    keys: t.Sequence[Key], values: t.Sequence[t.Any]
) -> sa.ColumnElement[bool]:
    """The WHERE that keeps the rows ordered after the row whose keys are
    ``values``: (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., with < for a
    descending key.
    """
    terms: list[sa.ColumnElement[bool]] = []
    equal: list[sa.ColumnElement[bool]] = []
    for key, value in zip(keys, values, strict=True):
        beyond = key.expression < value if key.descending else key.expression > value
        terms.append(sa.and_(*equal, beyond))
        equal.append(key.expression == value)
    condition = sa.or_(*terms)
    if len(keys) > 1:
        # The same rows, said again with the first key alone (k1 >= v1), so
        # that the database can start an index range scan at the cursor: not
        # every planner sees that through the OR.
        first = keys[0]
        value = values[0]
        start = (
            first.expression <= value if first.descending else first.expression >= value
        )
        condition = sa.and_(start, condition)
    return condition


def reversed_keys(keys: t.Sequence[Key]) -> list[Key]:
    """The same ordering, the other way round."""
    return [Key(key.expression, not key.descending) for key in keys]


def order_by(keys: t.Sequence[Key]) -> list[sa.ColumnElement[t.Any]]:
    """ORDER BY terms for ``keys``."""
    return [
        key.expression.desc() if key.descending else key.expression.asc()
        for key in keys
    ]


class KeysetPagination:
    """One page of the rows of an ordered ``select`` statement, made by
    :meth:`SessionORM.paginate_keyset`.

    Iterating over it iterates over :attr:`items`. Link to the neighbouring
    pages with :attr:`next_cursor` (as ``after=``) and :attr:`prev_cursor` (as
    ``before=``). Do not create it yourself.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        items: list[t.Any],
        *,
        per_page: int,
        next_cursor: str | None,
        prev_cursor: str | None,
    ) -> None:
        #: The items on this page, in the statement's order.
        self.items: list[t.Any] = items
        #: The largest number of items on a page.
        self.per_page: int = per_page
        #: The cursor of the next page, for ``after=``; None on the last page.
        self.next_cursor: str | None = next_cursor
        #: The cursor of the previous page, for ``before=``; None on the first.
        self.prev_cursor: str | None = prev_cursor

    @property
    def has_next(self) -> bool:
        """Whether there is a page after this one."""
        return self.next_cursor is not None

    @property
    def has_prev(self) -> bool:
        """Whether there is a page before this one."""
        return self.prev_cursor is not None

    def __iter__(self) -> t.Iterator[t.Any]:
        """Iterate over :attr:`items`."""
        return iter(self.items)

    def __len__(self) -> int:
        """The number of :attr:`items`."""
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} items={len(self.items)}"
            f" has_prev={self.has_prev} has_next={self.has_next}>"
        )


def paginate_keyset(
    db: HasSession,
    select: sa.Select[t.Any],
    *,
    per_page: int | None,
    max_per_page: int | None,
    after: str | None,
    before: str | None,
    error_out: bool,
) -> KeysetPagination:
    """The page of ``select`` after the cursor ``after`` or before ``before``."""
    keys = ordering(select)
    if after and before:
        raise ValueError("Pass 'after' or 'before' to paginate_keyset(), not both.")
    if after is None and before is None and flask.has_request_context():
        after = flask.request.args.get(AFTER_ARG)
        before = flask.request.args.get(BEFORE_ARG)
        if after and before:
            if error_out:
                flask.abort(
                    400,
                    description=f"Give '{AFTER_ARG}' or '{BEFORE_ARG}', not both.",
                )
            after = before = None
    per_page = page_size(per_page, max_per_page, error_out)
    serializer = _serializer(keys)
    # An empty cursor is no cursor: the first page.
    backwards = bool(before)
    cursor = before if backwards else after or None
    values: list[t.Any] | None = None
    if cursor is not None:
        values = _load(serializer, cursor, len(keys))
        if values is None:
            if error_out:
                flask.abort(400, description="The pagination cursor is not valid.")
            cursor = None
            backwards = False

    walk = reversed_keys(keys) if backwards else keys
    query = select.order_by(None).order_by(*order_by(walk))
    if values is not None:
        condition = after_rows(walk, values)
        # A grouped statement may be ordered by an aggregate (count(*) DESC),
        # which WHERE cannot use; HAVING can compare aggregates and the grouped
        # columns alike.
        grouped = bool(getattr(select, "_group_by_clauses", ()))
        query = query.having(condition) if grouped else query.where(condition)
    # The keys are selected as extra columns, so that the cursors can be made
    # from any ordering expression, not only from attributes of the items.
    labels = [key.expression.label(f"_keyset_{i}") for i, key in enumerate(keys)]
    query = query.add_columns(*labels).limit(per_page + 1)
    fetched = db.session.execute(query).unique().all()

    more = len(fetched) > per_page
    rows = list(fetched[:per_page])
    if backwards:
        rows.reverse()
    if not rows and values is not None and error_out:
        flask.abort(404)
    items = [row[0] for row in rows]
    row_keys = [tuple(row[len(row) - len(keys) :]) for row in rows]

    # Coming from a cursor, there is a page on the side the cursor came from.
    has_next = (not backwards and more) or (backwards and bool(rows))
    has_prev = (backwards and more) or (
        not backwards and values is not None and bool(rows)
    )
    return KeysetPagination(
        items,
        per_page=per_page,
        next_cursor=_dump(serializer, keys, row_keys[-1]) if has_next else None,
        prev_cursor=_dump(serializer, keys, row_keys[0]) if has_prev else None,
    )


# -- cursors -------------------------------------------------------------------


def _serializer(keys: t.Sequence[Key]) -> itsdangerous.URLSafeSerializer:
    """The signer of this ordering's cursors, with the app's secret key."""
    app = flask.current_app
    if not app.secret_key:
        raise RuntimeError(
            "Keyset pagination signs its cursors with the app's 'SECRET_KEY', which"
            " is not set. Set app.config['SECRET_KEY'] to a long random value."
        )
    # Fallback keys still verify cursors made before the key was rotated; the
    # current key, last, signs. (SECRET_KEY_FALLBACKS is Flask 3.1's.)
    signing_keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key]
    secrets = [s.encode() if isinstance(s, str) else bytes(s) for s in signing_keys]
    # The ordering is part of the salt: a cursor of one listing is refused by
    # another listing, whose keys it would not fit.
    shape = ",".join(
        f"{key.expression}:{'desc' if key.descending else 'asc'}" for key in keys
    )
    return itsdangerous.URLSafeSerializer(secrets, salt=f"{SALT}:{shape}")


def _dump(
    serializer: itsdangerous.URLSafeSerializer,
    keys: t.Sequence[Key],
    values: t.Sequence[t.Any],
) -> str:
    """The URL-safe, signed cursor for a row whose keys are ``values``."""
    encoded = []
    for key, value in zip(keys, values, strict=True):
        if value is None:
            raise ValueError(
                f"Keyset pagination reached a NULL in the ordering term"
                f" {str(key.expression)!r}: order by columns that are NOT NULL (a"
                " NULL cannot be compared to find the next page)."
            )
        encoded.append(_encode(value, key))
    return serializer.dumps(encoded)


def _load(
    serializer: itsdangerous.URLSafeSerializer, cursor: str, size: int
) -> list[t.Any] | None:
    """The key values of ``cursor``, or None when it is not a valid cursor."""
    try:
        data = serializer.loads(cursor)
    except itsdangerous.BadData:
        return None
    # A valid signature means that this module wrote the data, for this
    # ordering; the checks below only guard against a change of this format.
    if not isinstance(data, list) or len(data) != size:
        return None
    try:
        return [_decode(value) for value in data]
    except (TypeError, ValueError, KeyError):
        return None


# JSON has no type for these values: they are written as {"<tag>": "<text>"}.
_TAGGED: dict[
    str, tuple[type[t.Any], t.Callable[[t.Any], str], t.Callable[[str], t.Any]]
] = {
    "dt": (
        datetime.datetime,
        datetime.datetime.isoformat,
        datetime.datetime.fromisoformat,
    ),
    "d": (datetime.date, datetime.date.isoformat, datetime.date.fromisoformat),
    "t": (datetime.time, datetime.time.isoformat, datetime.time.fromisoformat),
    "dec": (decimal.Decimal, str, decimal.Decimal),
    "uuid": (uuid.UUID, str, uuid.UUID),
    "b": (
        bytes,
        lambda value: base64.urlsafe_b64encode(value).decode(),
        base64.urlsafe_b64decode,
    ),
}


def _encode(value: t.Any, key: Key) -> t.Any:
    """``value`` as JSON data."""
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # repr() keeps every digit and writes inf and nan, which JSON cannot.
        return {"f": repr(value)}
    for tag, (kind, dump, _) in _TAGGED.items():
        # datetime is a date: it is tried first, as the dict is ordered.
        if isinstance(value, kind):
            return {tag: dump(value)}
    raise TypeError(
        f"Keyset pagination cannot put a {type(value).__name__!r} value of the"
        f" ordering term {str(key.expression)!r} in a cursor. Supported: int, str,"
        " bool, float, Decimal, datetime, date, time, UUID and bytes."
    )


def _decode(data: t.Any) -> t.Any:
    """The value that :func:`_encode` wrote as ``data``."""
    if isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, dict) and len(data) == 1:
        ((tag, text),) = data.items()
        if tag == "f":
            return float(text)
        return _TAGGED[tag][2](text)
    raise ValueError("not a cursor value")
