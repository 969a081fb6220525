"""The ``flask db-shell`` command and the ``flask shell`` context.

``flask db-shell`` starts the database's own client (see :mod:`._dbshell`), or with
``-c`` runs one statement through the engine and prints its result.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import typing as t
import unicodedata

import click
import flask
import sqlalchemy as sa
from flask.cli import with_appcontext
from sqlalchemy.orm import mapperlib

from . import _scope
from ._binds import DEFAULT
from ._config import hide_password
from ._dbshell import client_command
from ._dbshell import run_client

if t.TYPE_CHECKING:
    from ._extension import SessionORM
    from ._state import AppState


# -- flask db-shell -c "SQL" -----------------------------------------------------


def execute(state: AppState, name: str, sql: str) -> tuple[list[str] | None, t.Any]:
    """Run ``sql`` on the engine ``name`` in a transaction committed on success.

    :return: ``(columns, rows)`` for a statement that returns rows, else
        ``(None, rowcount)``.
    :raises click.ClickException: The statement failed; a one-line message.
    """
    url = state.engines[name].url
    try:
        with contextlib.ExitStack() as stack:
            target = state.targets[name]
            if isinstance(target, sa.Connection):
                # db.isolation() is active (a test): stay inside its transaction.
                connection = target
                stack.enter_context(connection.begin_nested())
            else:
                connection = stack.enter_context(target.connect())
                stack.enter_context(connection.begin())
            # Sent as written: no bind parameters, so ":name" and "%" are plain text.
            result = connection.exec_driver_sql(
                sql, execution_options={"no_parameters": True}
            )
            if result.returns_rows:
                outcome: tuple[list[str] | None, t.Any] = (
                    list(result.keys()),
                    [tuple(row) for row in result],
                )
            else:
                outcome = (None, result.rowcount)
    except Exception as e:
        raise click.ClickException(describe_error(e, url)) from None
    return outcome


def describe_error(error: BaseException, url: sa.URL) -> str:
    """One line about a failed statement: the driver's own words, no password."""
    # A DBAPIError wraps the driver's exception, whose message is the useful part.
    original = getattr(error, "orig", None)
    source = original if isinstance(original, BaseException) else error
    args = source.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        # MySQL drivers carry (error code, message).
        text = f"{args[1]} (error {args[0]})"
    else:
        text = str(source)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    message = hide_password(f"{type(source).__name__}: {line}".rstrip(": "))
    password = url.password
    if password:
        message = message.replace(str(password), "***")
    return message


_NUMBERS = (int, float, decimal.Decimal)


def _cell(value: t.Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    text = str(value)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide characters take two."""
    wide = sum(unicodedata.east_asian_width(char) in "WF" for char in text)
    return len(text) + wide - sum(map(bool, map(unicodedata.combining, text)))


def _pad(text: str, width: int, align: str) -> str:
    fill = width - _width(text)
    if align == "right":
        return " " * fill + text
    if align == "center":
        return " " * (fill // 2) + text + " " * (fill - fill // 2)
    return text + " " * fill


def format_table(columns: t.Sequence[str], rows: t.Sequence[t.Sequence[t.Any]]) -> str:
    """Rows as an aligned text table with a header and the row count."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([_width(str(column)), *(_width(row[i]) for row in cells)])
        for i, column in enumerate(columns)
    ]
    aligns = []
    for i in range(len(columns)):
        # Numbers align right, as in psql: a column of them, NULLs aside.
        kinds = {type(row[i]) for row in rows if row[i] is not None}
        numeric = bool(kinds) and all(k in _NUMBERS for k in kinds)
        aligns.append("right" if numeric else "left")
    lines = [
        " | ".join(
            _pad(str(c), w, "center") for c, w in zip(columns, widths, strict=True)
        ),
        "-+-".join("-" * width for width in widths),
    ]
    lines += [" | ".join(map(_pad, row, widths, aligns)) for row in cells]
    lines = [
        f" {line} ".rstrip() if i != 1 else f"-{line}-" for i, line in enumerate(lines)
    ]
    count = len(rows)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines)


def _json_value(value: t.Any) -> t.Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        # A number when that loses nothing, else the exact text.
        if value == value.to_integral_value():
            return int(value)
        if decimal.Decimal(repr(float(value))) == value:
            return float(value)
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def format_json(columns: t.Sequence[str], rows: t.Sequence[t.Sequence[t.Any]]) -> str:
    """Rows as a JSON array of objects, one per row, keyed by column name."""
    return json.dumps(
        [dict(zip(columns, row, strict=True)) for row in rows],
        default=_json_value,
        ensure_ascii=False,
        indent=2,
    )


def _affected(count: int, as_json: bool) -> str:
    # Drivers report -1 when they do not know (DDL on PostgreSQL and SQLite).
    if as_json:
        return json.dumps({"rowcount": count if count >= 0 else None})
    return f"{count} row{'' if count == 1 else 's'} affected" if count >= 0 else "OK"


# -- registration ----------------------------------------------------------------


def make_command(db: SessionORM) -> click.Command:
    """The ``db-shell`` command of ``db``."""

    @click.command("db-shell")
    @click.option(
        "--bind",
        default=DEFAULT,
        show_default=True,
        metavar="NAME",
        help="The engine to connect to, by its name in SESSION_ORM_ENGINES.",
    )
    @click.option(
        "-c",
        "--command",
        "sql",
        metavar="SQL",
        help="Run this one statement through the engine (no client program"
        " needed), print its rows or its affected row count, commit if it"
        " succeeded.",
    )
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="With -c: print the rows as a JSON array of objects.",
    )
    @click.argument(
        "client_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- CLIENT_ARGS...]"
    )
    @with_appcontext
    def db_shell(
        bind: str, sql: str | None, as_json: bool, client_args: tuple[str, ...]
    ) -> None:
        """Open the database's own client for an engine: psql for PostgreSQL,
        mariadb (or mysql) for MariaDB and MySQL, sqlite3 for SQLite.

        Host, port, user, database, socket and TLS settings come from the
        engine's URL and its query string; the password is passed in the
        client's environment, never on its command line. Arguments after "--"
        go to the client. The command exits with the client's exit status.

        \b
        Examples:
          flask db-shell
          flask db-shell --bind reports
          flask db-shell -- -c "SELECT count(*) FROM users"   (psql's own -c)
          flask db-shell -c "SELECT * FROM users" --json
        """
        state = _scope.app_state(db)
        if bind not in state.engines:
            raise click.BadParameter(
                f"No engine named {bind!r}. The engines that exist are:"
                f" {', '.join(sorted(state.engines))}.",
                param_hint="'--bind'",
            )
        if sql is None:
            if as_json:
                raise click.UsageError("'--json' works with '-c SQL' only.")
            status = run_client(client_command(state, bind, client_args))
            click.get_current_context().exit(status)
        if client_args:
            raise click.UsageError(
                "'-c SQL' runs the statement without a client program, so it takes"
                f" no client arguments (got {' '.join(client_args)!r})."
            )
        if not sql.strip():
            raise click.BadParameter("The statement is empty.", param_hint="'-c'")
        columns, rows = execute(state, bind, sql)
        if columns is None:
            click.echo(_affected(rows, as_json))
        else:
            click.echo((format_json if as_json else format_table)(columns, rows))

    return db_shell


def shell_context(db: SessionORM, app: flask.Flask) -> dict[str, t.Any]:
    """``db``, ``sa`` and the mapped model classes that ``app`` can route to one of
    its engines, by class name.
    """
    state = _scope.app_state(db, app)
    mappers = sorted(
        (
            mapper
            for registry in mapperlib._all_registries()
            for mapper in registry.mappers
        ),
        # Deterministic when two modules map classes of the same name.
        key=lambda mapper: (mapper.class_.__name__, mapper.class_.__module__),
    )
    namespace: dict[str, t.Any] = {}
    for mapper in mappers:
        try:
            state.router.for_mapper(mapper)
        except ValueError:
            # Bound to an engine this app does not have: unusable here.
            continue
        namespace.setdefault(mapper.class_.__name__, mapper.class_)
    namespace.update(db=db, sa=sa)
    return namespace


def init_cli(app: flask.Flask, db: SessionORM) -> None:
    """Register the ``db-shell`` command and the shell context on ``app``."""
    app.cli.add_command(make_command(db))
    app.shell_context_processor(lambda: shell_context(db, app))
