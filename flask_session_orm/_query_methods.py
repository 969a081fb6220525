"""Flask-SQLAlchemy's query helpers and keyset pagination, as SessionORM methods."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import _keyset
from . import _pagination

if t.TYPE_CHECKING:
    pass

_O = t.TypeVar("_O")


class QueryMethods:
    """:class:`.SessionORM` methods that run a query for a view."""

    if t.TYPE_CHECKING:

        @property
        def session(self) -> orm.Session: ...

    def get_or_404(
        self,
        entity: type[_O],
        ident: t.Any,
        *,
        description: str | None = None,
        **kwargs: t.Any,
    ) -> _O:
        """Like :meth:`session.get() <sqlalchemy.orm.Session.get>`, but abort with
        ``404 Not Found`` instead of returning None.

        :param entity: The model class.
        :param ident: Its primary key.
        :param description: A message for the error page.
        :param kwargs: More arguments for ``session.get()``.

        .. versionadded:: 0.1.0
        """
        return _pagination.get_or_404(self, entity, ident, description, kwargs)

    def first_or_404(
        self, statement: sa.Select[t.Any], *, description: str | None = None
    ) -> t.Any:
        """Like :meth:`Result.scalar() <sqlalchemy.engine.Result.scalar>`, but
        abort with ``404 Not Found`` instead of returning None.

        :param statement: The ``select`` statement to execute.
        :param description: A message for the error page.

        .. versionadded:: 0.1.0
        """
        return _pagination.first_or_404(self, statement, description)

    def one_or_404(
        self, statement: sa.Select[t.Any], *, description: str | None = None
    ) -> t.Any:
        """Like :meth:`Result.scalar_one() <sqlalchemy.engine.Result.scalar_one>`,
        but abort with ``404 Not Found`` instead of raising for no row or for
        several rows.

        :param statement: The ``select`` statement to execute.
        :param description: A message for the error page.

        .. versionadded:: 0.1.0
        """
        return _pagination.one_or_404(self, statement, description)

    def paginate(
        self,
        select: sa.Select[t.Any],
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = None,
        error_out: bool = True,
        count: bool = True,
    ) -> _pagination.Pagination:
        """Return one page of ``select``'s results, by page number, as a
        :class:`~flask_session_orm.Pagination`; Flask-SQLAlchemy's signature and
        behaviour.

        The page is fetched with LIMIT and OFFSET; the items are
        ``session.execute(...).unique().scalars()``, so select a model, as in
        ``select(User).order_by(User.id)``. For large tables, see
        :meth:`paginate_keyset`.

        :param select: The ``select`` statement; order it, or pages are not stable.
        :param page: The page number, from 1. Default: the ``page`` query-string
            argument in a request, else 1.
        :param per_page: The largest number of items on a page. Default: the
            ``per_page`` query-string argument in a request, else 20.
        :param max_per_page: A cap on ``per_page`` (for values from the query
            string); None for none.
        :param error_out: Abort with ``404 Not Found`` for a page or page size
            that is not an integer or is below 1, and for an empty page other
            than the first. False: use 1 and 20 instead, and return the empty page.
        :param count: Count the results with a second query, for
            :attr:`~flask_session_orm.Pagination.total` and
            :attr:`~flask_session_orm.Pagination.pages`. False leaves ``total``
            None.

        .. versionadded:: 0.1.0
        """
        return _pagination.Pagination(
            self,
            select,
            page=page,
            per_page=per_page,
            max_per_page=max_per_page,
            error_out=error_out,
            count=count,
        )

    def paginate_keyset(
        self,
        select: sa.Select[t.Any],
        *,
        per_page: int | None = None,
        max_per_page: int | None = None,
        after: str | None = None,
        before: str | None = None,
        error_out: bool = True,
    ) -> _keyset.KeysetPagination:
        """Return the page of ``select``'s results after (or before) a cursor, as
        a :class:`~flask_session_orm.KeysetPagination`, without an OFFSET.

        ``select`` must be ordered by a unique key, or by columns ending with
        one (``order_by(Post.created_at.desc(), Post.id.desc())``), ascending or
        descending. The page is found with a WHERE on those columns, so an index
        on them makes every page as fast as the first. See :doc:`pagination`.

        :param select: The ordered ``select`` statement.
        :param per_page: The largest number of items on a page. Default: the
            ``per_page`` query-string argument in a request, else 20.
        :param max_per_page: A cap on ``per_page``; None for none.
        :param after: A :attr:`~flask_session_orm.KeysetPagination.next_cursor`:
            return the page after it.
        :param before: A :attr:`~flask_session_orm.KeysetPagination.prev_cursor`:
            return the page before it. When neither is given, in a request,
            they are read from the ``after`` and ``before`` query-string
            arguments; an empty string means the first page.
        :param error_out: Abort with ``400 Bad Request`` for a cursor that is
            not valid (altered, for another ordering, signed with another
            ``SECRET_KEY``) or for both arguments in the query string, and with
            ``404 Not Found`` for a bad page size or an empty page reached
            through a cursor. False: the first page, the default page size, the
            empty page.
        :raises ValueError: ``select`` is not ordered, or by something that
            cannot be compared (a string, ``text()``, NULLS FIRST/LAST, a window
            function, a nullable column); both ``after`` and ``before`` were
            passed; the row a cursor is made from has NULL in an ordering
            expression.
        :raises TypeError: ``select`` is not a ``select()`` statement.
        :raises RuntimeError: The app has no ``SECRET_KEY`` to sign cursors with.

        .. versionadded:: 0.1.0
        """
        return _keyset.paginate_keyset(
            self,
            select,
            per_page=per_page,
            max_per_page=max_per_page,
            after=after,
            before=before,
            error_out=error_out,
        )
