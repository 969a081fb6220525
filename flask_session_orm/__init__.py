"""flask-session-orm: one correctly managed SQLAlchemy session per Flask request."""

from __future__ import annotations

from . import signals
from ._extension import SessionORM
from ._session import Session

__all__ = ["Session", "SessionORM", "signals"]
