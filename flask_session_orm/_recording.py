"""Seeing what a request did to the database: recorded queries, N+1 warnings,
the ``Server-Timing`` header and the slow query log.

Nothing here runs unless the app's config asks for it: :func:`install` attaches
the engine and session event listeners, and registers the ``after_request``
function, only for the features that are on. An app with all of them off pays
nothing on its requests, not even a check.

A request's records live on its :class:`flask.ctx.RequestContext`, not on
``g``: with Flask up to 3.1 the test client's requests reuse an app context
pushed before them (pytest-flask pushes one for every test), so ``g`` would mix
several requests. Everywhere else (outside requests, and in a context pushed
inside one, which is a context of its own: see ``_scope``) they live on the app
context's ``g``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import types
import typing as t
import warnings

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask.globals import _cv_app
from flask.globals import _cv_request

from . import _scope
from ._callsite import call_site as _call_site
from ._callsite import short as _short

if t.TYPE_CHECKING:
    from ._config import RecordingConfig
    from ._state import AppState

logger = logging.getLogger("flask_session_orm.queries")

#: The private attribute of the request context (or of ``g``) holding the records.
ATTRIBUTE = "_session_orm_queries"
#: The execution option that marks the statement of a lazy load with its
#: relationship; set by the ``do_orm_execute`` listener.
_LAZY_OPTION = "_session_orm_lazy_load"
#: Where the time a statement started is kept between the two cursor events.
_START = "_session_orm_query_start"


class NPlusOneWarning(UserWarning):
    """One relationship was lazy-loaded, with the same SQL statement, more
    often than ``SESSION_ORM_NPLUSONE_THRESHOLD`` in one request: the "N+1
    queries" pattern, usually a loop over query results that reads a
    relationship of each.

    Turn it into an error in a test suite with pytest's ``filterwarnings``
    (``error::flask_session_orm.NPlusOneWarning``) or the plugin's
    ``--orm-fail-on-nplusone`` option.

    .. versionadded:: 0.1.0
    """


# Shown as flask_session_orm.NPlusOneWarning in reports, the name to filter by.
NPlusOneWarning.__module__ = "flask_session_orm"


@dataclasses.dataclass(frozen=True)
class RecordedQuery:
    """One SQL statement run during the current request (or app context), as
    returned by :meth:`.SessionORM.recorded_queries`.

    .. versionadded:: 0.1.0
    """

    #: The SQL sent to the driver, with its placeholders.
    statement: str
    #: The parameters sent with it, as the driver got them (a sequence of them
    #: for an ``executemany``).
    parameters: t.Any
    #: :func:`time.perf_counter` when the statement was sent to the driver.
    start_time: float
    #: :func:`time.perf_counter` when the driver returned.
    end_time: float
    #: The name of the engine (``"default"``, or a key of
    #: ``SESSION_ORM_ENGINES``).
    engine: str
    #: The file of the call site: the innermost frame that is not part of
    #: SQLAlchemy, this extension, Flask, Werkzeug, Jinja or the standard
    #: library (for code in a template, the template's file).
    filename: str
    #: The line of the call site (for code in a template, the template's line).
    lineno: int
    #: The function of the call site.
    function: str
    #: ``"Model.attribute"`` when the statement is the lazy load of that
    #: relationship, else None.
    relationship: str | None = None

    @property
    def duration(self) -> float:
        """How long the statement took, in seconds."""
        return self.end_time - self.start_time

    @property
    def location(self) -> str:
        """``"file:line (function)"`` of the call site."""
        return f"{self.filename}:{self.lineno} ({self.function})"


@dataclasses.dataclass(frozen=True)
class NPlusOne:
    """One N+1 pattern found in a request (what the warning said)."""

    relationship: str
    statement: str
    filename: str
    lineno: int
    function: str
    message: str


class _Recorder:
    """What the listeners keep for one request or app context."""

    __slots__ = ("count", "found", "lazy_counts", "over", "queries", "seconds")

    def __init__(self) -> None:
        self.queries: list[RecordedQuery] = []
        #: Statements run and their total time, for Server-Timing.
        self.count = 0
        self.seconds = 0.0
        #: Lazy loads by (relationship, statement).
        self.lazy_counts: dict[tuple[orm.RelationshipProperty[t.Any], str], int] = {}
        #: Relationships past the threshold, with the statement, until warned.
        self.over: dict[orm.RelationshipProperty[t.Any], str] = {}
        #: The N+1 patterns warned about, one per relationship.
        self.found: dict[orm.RelationshipProperty[t.Any], NPlusOne] = {}


def _request_context() -> t.Any:
    """The request context of the request being dispatched, or None: outside
    requests, and in a context pushed inside one (an app context, a copied or
    test request context), which are contexts of their own.
    """
    if not _scope.in_request():
        return None
    return _cv_request.get()


def _holder() -> t.Any:
    """The current request context, else the current app context's ``g``."""
    ctx = _request_context()
    if ctx is not None:
        return ctx
    app_ctx = _cv_app.get(None)
    return None if app_ctx is None else app_ctx.g


def _recorder(create: bool) -> _Recorder | None:
    """The current context's recorder; None outside any context."""
    holder = _holder()
    if holder is None:
        return None
    recorder: _Recorder | None = getattr(holder, ATTRIBUTE, None)
    if recorder is None and create:
        recorder = _Recorder()
        setattr(holder, ATTRIBUTE, recorder)
    return recorder


# -- where a statement came from ------------------------------------------------


def _where() -> str:
    """Name the current view for messages, or say there is no request."""
    ctx = _request_context()
    if ctx is not None:
        request = ctx.request
        endpoint = request.endpoint
        what = f"the view {endpoint!r}" if endpoint else "the request"
        return f"{what} ({request.method} {request.path})"
    app_ctx = _cv_app.get(None)
    if app_ctx is not None:
        return f"an app context of {app_ctx.app.name!r}, outside requests"
    return "no app context"


def _relationship_name(prop: orm.RelationshipProperty[t.Any]) -> str:
    return f"{prop.parent.class_.__name__}.{prop.key}"


# -- the listeners --------------------------------------------------------------


class _EngineListener:
    """The cursor events of one engine: time, record, log slow statements."""

    def __init__(self, config: RecordingConfig, name: str) -> None:
        self.config = config
        self.name = name
        # The recorder is needed for records and for Server-Timing's totals.
        self.keeps_totals = config.record or config.server_timing

    def before_cursor_execute(
        self,
        conn: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        # The execution context exists once per statement; the few statements
        # SQLAlchemy runs without one use the connection's info.
        if context is not None:
            setattr(context, _START, time.perf_counter())
        else:
            conn.info[_START] = time.perf_counter()

    def after_cursor_execute(
        self,
        conn: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        end = time.perf_counter()
        if context is not None:
            start = getattr(context, _START, end)
        else:
            start = conn.info.pop(_START, end)
        duration = end - start
        config = self.config
        call_site: tuple[str, int, str, types.FrameType | None] | None = None
        recorder = _recorder(True) if self.keeps_totals else None
        if recorder is not None:
            recorder.count += 1
            recorder.seconds += duration
            if config.record:
                call_site = _call_site(sys._getframe(1))
                prop = None
                if context is not None:
                    prop = context.execution_options.get(_LAZY_OPTION)
                name = None
                if prop is not None:
                    name = _relationship_name(prop)
                    self._count_lazy_load(recorder, prop, statement)
                recorder.queries.append(
                    RecordedQuery(
                        statement=statement,
                        parameters=parameters,
                        start_time=start,
                        end_time=end,
                        engine=self.name,
                        filename=call_site[0],
                        lineno=call_site[1],
                        function=call_site[2],
                        relationship=name,
                    )
                )
        slow = config.slow_query_seconds
        if slow is not None and duration >= slow:
            if call_site is None:
                call_site = _call_site(sys._getframe(1))
            self._log_slow(statement, parameters, duration, call_site)

    def _count_lazy_load(
        self,
        recorder: _Recorder,
        prop: orm.RelationshipProperty[t.Any],
        statement: str,
    ) -> None:
        threshold = self.config.nplusone_threshold
        key = (prop, statement)
        count = recorder.lazy_counts.get(key, 0) + 1
        recorder.lazy_counts[key] = count
        if threshold is not None and count >= threshold:
            # The warning is given by the next lazy load of this relationship,
            # before it runs: raising it from a cursor event would break the
            # statement that just ran.
            recorder.over.setdefault(prop, statement)

    def _log_slow(
        self,
        statement: str,
        parameters: t.Any,
        duration: float,
        call_site: tuple[str, int, str, types.FrameType | None],
    ) -> None:
        # Parameters may hold personal data: only when configured.
        shown = f"\nParameters: {parameters!r}" if self.config.log_parameters else ""
        logger.warning(
            "Slow query: %.3f s on the engine %r in %s, at %s:%d (%s):\n%s%s",
            duration,
            self.name,
            _where(),
            _short(call_site[0]),
            call_site[1],
            call_site[2],
            statement,
            shown,
            extra={
                "session_orm_duration": duration,
                "session_orm_engine": self.name,
                "session_orm_statement": statement,
                "session_orm_location": f"{call_site[0]}:{call_site[1]}",
            },
        )


class _SessionListener:
    """The ``do_orm_execute`` event: mark lazy loads, warn about N+1."""

    def __init__(self, config: RecordingConfig) -> None:
        self.threshold = config.nplusone_threshold

    def do_orm_execute(self, state: orm.ORMExecuteState) -> None:
        # Load options, and so lazy loads, exist for ORM SELECTs only (the
        # property raises for a text(), INSERT, UPDATE or DELETE statement).
        if not state.is_select or state.lazy_loaded_from is None:
            return
        path = state.loader_strategy_path
        prop = path[-1] if path is not None and len(path) else None
        if not isinstance(prop, orm.RelationshipProperty):
            return
        # Carried to the cursor events with the statement, so that the record
        # (and nothing else, not an autoflush's INSERT) is marked as this load.
        state.update_execution_options(**{_LAZY_OPTION: prop})
        if self.threshold is None:
            return
        recorder = _recorder(False)
        if recorder is None or prop in recorder.found:
            return
        statement = recorder.over.get(prop)
        if statement is not None:
            self._warn(recorder, prop, statement, sys._getframe(1))

    def _warn(
        self,
        recorder: _Recorder,
        prop: orm.RelationshipProperty[t.Any],
        statement: str,
        frame: types.FrameType,
    ) -> None:
        name = _relationship_name(prop)
        filename, lineno, function, site_frame = _call_site(frame)
        message = (
            f"N+1 queries: {name} was lazy-loaded more than {self.threshold} times"
            f" with the same SQL statement in {_where()}, last at"
            f" {_short(filename)}:{lineno} ({function}). Load it together with the"
            f" {prop.parent.class_.__name__} objects instead, in the query that"
            f" loads them: .options(selectinload({name})). (The threshold is"
            " 'SESSION_ORM_NPLUSONE_THRESHOLD'.)"
        )
        recorder.found[prop] = NPlusOne(
            relationship=name,
            statement=statement,
            filename=filename,
            lineno=lineno,
            function=function,
            message=message,
        )
        module = "<unknown>"
        if site_frame is not None:
            module = site_frame.f_globals.get("__name__", module)
        # Reported at the app's line, once per request and relationship (no
        # registry: the next request warns again).
        warnings.warn_explicit(message, NPlusOneWarning, filename, lineno, module)


def _add_server_timing(response: flask.Response) -> flask.Response:
    """Tell the browser how much of the request was spent in the database."""
    recorder = _recorder(False)
    count, seconds = (
        (0, 0.0) if recorder is None else (recorder.count, recorder.seconds)
    )
    plural = "statement" if count == 1 else "statements"
    response.headers.add(
        "Server-Timing", f'db;dur={seconds * 1000:.3f};desc="{count} SQL {plural}"'
    )
    return response


# -- wiring and public helpers --------------------------------------------------


def install(state: AppState) -> None:
    """Attach what the app's config turned on; nothing when it is all off."""
    config = state.config.recording
    if not config.active:
        return
    for name, engine in state.engines.items():
        attach_engine(config, engine, name)
    if config.record:
        listener = _SessionListener(config)
        sa.event.listen(state.sessionmaker, "do_orm_execute", listener.do_orm_execute)
    if config.server_timing:
        state.app.after_request(_add_server_timing)


def attach_engine(config: RecordingConfig, engine: sa.Engine, name: str) -> None:
    """Time (and record) the statements of ``engine``, known as ``name``."""
    if not config.active:
        return
    listener = _EngineListener(config, name)
    sa.event.listen(engine, "before_cursor_execute", listener.before_cursor_execute)
    sa.event.listen(engine, "after_cursor_execute", listener.after_cursor_execute)


def recorded_queries(state: AppState) -> list[RecordedQuery]:
    """The statements of the current request or app context, oldest first."""
    if not state.config.recording.record:
        raise RuntimeError(
            f"Query recording is off for the Flask app {state.app.name!r}. Set"
            " 'SESSION_ORM_RECORD_QUERIES = True' in its config (it is on by"
            " default only when the app is in debug or testing mode at"
            " 'init_app')."
        )
    recorder = _recorder(False)
    return [] if recorder is None else list(recorder.queries)


def nplusone_found() -> list[NPlusOne]:
    """The N+1 patterns warned about in the current request or app context."""
    recorder = _recorder(False)
    return [] if recorder is None else list(recorder.found.values())
