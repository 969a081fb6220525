"""flask-session-orm: one correctly managed SQLAlchemy session per Flask request."""

from __future__ import annotations

import importlib
import typing as t

if t.TYPE_CHECKING:
    from . import signals
    from ._config import FlaskSQLAlchemyConfigWarning
    from ._extension import SessionORM
    from ._keyset import KeysetPagination
    from ._pagination import Pagination
    from ._recording import NPlusOneWarning
    from ._recording import RecordedQuery
    from ._session import Session

__all__ = [
    "FlaskSQLAlchemyConfigWarning",
    "KeysetPagination",
    "NPlusOneWarning",
    "Pagination",
    "RecordedQuery",
    "Session",
    "SessionORM",
    "signals",
]

# pytest imports the plugin (flask_session_orm.pytest_plugin), and so this
# package, at the start of every run in every environment where the package is
# installed. The public names are therefore imported on first use, so that a run
# that does not use the extension does not pay for importing Flask and SQLAlchemy.
_PUBLIC = {
    "FlaskSQLAlchemyConfigWarning": "._config",
    "KeysetPagination": "._keyset",
    "NPlusOneWarning": "._recording",
    "Pagination": "._pagination",
    "RecordedQuery": "._recording",
    "Session": "._session",
    "SessionORM": "._extension",
    "signals": ".signals",
}


def __getattr__(name: str) -> t.Any:
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name, __name__)
    value = module if name == "signals" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
