"""Flask-SQLAlchemy's query helpers: the ``*_or_404`` functions and page
numbers with OFFSET (``db.paginate``), on the request's session.
"""

from __future__ import annotations

import math
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as orm

_O = t.TypeVar("_O")

#: The page size when neither the call nor the query string gives one, as in
#: Flask-SQLAlchemy.
DEFAULT_PER_PAGE = 20


class HasSession(t.Protocol):
    """What the helpers need from the extension: its current session."""

    @property
    def session(self) -> orm.Session: ...


def get_or_404(
    db: HasSession,
    entity: type[_O],
    ident: t.Any,
    description: str | None,
    kwargs: t.Mapping[str, t.Any],
) -> _O:
    """``session.get()``, or a 404 when there is no such row."""
    value = db.session.get(entity, ident, **kwargs)
    if value is None:
        flask.abort(404, description=description)
    return value


def first_or_404(
    db: HasSession, statement: sa.Select[t.Any], description: str | None
) -> t.Any:
    """The first column of the first row, or a 404 when it is None."""
    value = db.session.execute(statement).scalar()
    if value is None:
        flask.abort(404, description=description)
    return value


def one_or_404(
    db: HasSession, statement: sa.Select[t.Any], description: str | None
) -> t.Any:
    """The first column of the only row, or a 404 for none or several rows."""
    try:
        return db.session.execute(statement).scalar_one()
    except (sa_exc.NoResultFound, sa_exc.MultipleResultsFound):
        flask.abort(404, description=description)


def query_int(name: str, default: int, error_out: bool) -> int:
    """The integer ``name`` of the query string, or ``default`` when it is missing.

    A value that is not an integer is a 404 with ``error_out``, else ``default``.
    """
    raw = flask.request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        if error_out:
            flask.abort(404)
        return default


def page_size(per_page: int | None, max_per_page: int | None, error_out: bool) -> int:
    """The page size: the argument, else the query string's ``per_page``, capped
    by ``max_per_page``; one below 1 is a 404 with ``error_out``, else the default.
    """
    if per_page is None:
        per_page = DEFAULT_PER_PAGE
        if flask.has_request_context():
            per_page = query_int("per_page", DEFAULT_PER_PAGE, error_out)
    if max_per_page is not None:
        per_page = min(per_page, max_per_page)
    if per_page < 1:
        if error_out:
            flask.abort(404)
        per_page = DEFAULT_PER_PAGE
    return per_page


class Pagination:
    """One page of the rows of a ``select`` statement, numbered from 1, made by
    :meth:`SessionORM.paginate`.

    It has the attributes and methods of Flask-SQLAlchemy's ``Pagination``, so
    that templates written for it work unchanged. Iterating over it iterates
    over :attr:`items`. Do not create it yourself.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        db: HasSession,
        select: sa.Select[t.Any],
        *,
        page: int | None,
        per_page: int | None,
        max_per_page: int | None,
        error_out: bool,
        count: bool,
    ) -> None:
        self._db = db
        self._select = select
        if page is None:
            page = 1
            if flask.has_request_context():
                page = query_int("page", 1, error_out)
        per_page = page_size(per_page, max_per_page, error_out)
        if page < 1:
            if error_out:
                flask.abort(404)
            page = 1

        #: The current page number, from 1.
        self.page: int = page
        #: The largest number of items on a page.
        self.per_page: int = per_page
        #: The cap on :attr:`per_page`, or None for none.
        self.max_per_page: int | None = max_per_page

        session = db.session
        query = select.limit(per_page).offset((page - 1) * per_page)
        items = list(session.execute(query).unique().scalars())
        if not items and page != 1 and error_out:
            flask.abort(404)
        #: The items on this page.
        self.items: list[t.Any] = items

        #: The number of items on all pages, or None when counting was off
        #: (``count=False``); a view may set it itself.
        self.total: int | None = _count(session, select) if count else None

    @property
    def first(self) -> int:
        """The number of the first item on this page, from 1; 0 for no items."""
        if not self.items:
            return 0
        return (self.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        """The number of the last item on this page, from 1; 0 for no items."""
        first = self.first
        return max(first, first + len(self.items) - 1)

    @property
    def pages(self) -> int:
        """The number of pages; 0 when there are no items or no :attr:`total`."""
        if not self.total:
            return 0
        return math.ceil(self.total / self.per_page)

    @property
    def has_prev(self) -> bool:
        """Whether there is a page before this one."""
        return self.page > 1

    @property
    def prev_num(self) -> int | None:
        """The number of the previous page, or None on the first page."""
        return self.page - 1 if self.has_prev else None

    @property
    def has_next(self) -> bool:
        """Whether there is a page after this one (False without :attr:`total`)."""
        return self.page < self.pages

    @property
    def next_num(self) -> int | None:
        """The number of the next page, or None on the last page."""
        return self.page + 1 if self.has_next else None

    def prev(self, *, error_out: bool = False) -> Pagination:
        """Query the previous page, with the same page size and :attr:`total`
        (it is not counted again).
        """
        return self._sibling(self.page - 1, error_out)

    def next(self, *, error_out: bool = False) -> Pagination:
        """Query the next page, with the same page size and :attr:`total`
        (it is not counted again).
        """
        return self._sibling(self.page + 1, error_out)

    def _sibling(self, page: int, error_out: bool) -> Pagination:
        other = type(self)(
            self._db,
            self._select,
            page=page,
            per_page=self.per_page,
            max_per_page=self.max_per_page,
            error_out=error_out,
            count=False,
        )
        other.total = self.total
        return other

    def iter_pages(
        self,
        *,
        left_edge: int = 2,
        left_current: int = 2,
        right_current: int = 4,
        right_edge: int = 2,
    ) -> t.Iterator[int | None]:
        """Yield the page numbers to show in a pagination widget, with None
        where numbers are left out.

        With 20 pages, on page 7: ``1, 2, None, 5, 6, 7, 8, 9, 10, 11, None, 19, 20``.

        :param left_edge: How many pages to show from the first page.
        :param left_current: How many pages to show before the current page.
        :param right_current: How many pages to show after the current page.
        :param right_edge: How many pages to show up to the last page.
        """
        end = self.pages + 1  # One past the last page number.
        if end == 1:
            return
        # The first pages, up to left_edge of them.
        left_stop = min(1 + left_edge, end)
        yield from range(1, left_stop)
        if left_stop == end:
            return
        # The pages around the current one, never overlapping the first ones.
        # Page numbers past the last page (a page reached with error_out=False)
        # give an empty middle, after which nothing more is shown, as in
        # Flask-SQLAlchemy.
        middle_start = max(left_stop, self.page - left_current)
        middle_stop = min(self.page + right_current + 1, end)
        if middle_start > left_stop:
            yield None
        yield from range(middle_start, middle_stop)
        if middle_stop == end:
            return
        # The last pages, up to right_edge of them, after the middle ones.
        right_start = max(middle_stop, end - right_edge)
        if right_start > middle_stop:
            yield None
        yield from range(right_start, end)

    def __iter__(self) -> t.Iterator[t.Any]:
        """Iterate over :attr:`items`."""
        return iter(self.items)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} page={self.page} per_page={self.per_page}"
            f" items={len(self.items)} total={self.total}>"
        )


def _count(session: orm.Session, select: sa.Select[t.Any]) -> int:
    """The number of rows of ``select``, without its ordering or eager loads."""
    inner = select.options(orm.lazyload("*")).order_by(None).subquery()
    total = session.execute(sa.select(sa.func.count()).select_from(inner)).scalar()
    return int(total or 0)
