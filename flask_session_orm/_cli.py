"""The ``flask db-shell`` command and the ``flask shell`` context."""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy as sa
from sqlalchemy.orm import mapperlib

if t.TYPE_CHECKING:
    from ._extension import SessionORM


def init_cli(app: flask.Flask, db: SessionORM) -> None:
    """Register the shell context for ``app``."""

    def shell_context() -> dict[str, t.Any]:
        namespace: dict[str, t.Any] = {"db": db, "sa": sa}
        for registry in mapperlib._all_registries():
            for mapper in registry.mappers:
                namespace.setdefault(mapper.class_.__name__, mapper.class_)
        return namespace

    app.shell_context_processor(shell_context)
