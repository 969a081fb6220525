"""A `Flask-DebugToolbar <https://flask-debugtoolbar.readthedocs.io/>`_ panel
that shows the SQL statements of the request, where they came from, and the N+1
patterns found in it.

Flask-DebugToolbar's own SQLAlchemy panel reads Flask-SQLAlchemy's recorded
queries only; list this one instead, in the app's config::

    DEBUG_TB_PANELS = [
        ...,
        "flask_session_orm.debugtoolbar.QueriesPanel",
    ]

It shows what :meth:`.SessionORM.recorded_queries` returns, so
``SESSION_ORM_RECORD_QUERIES`` must be on (it is in debug mode).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing as t
import weakref

import flask
import jinja2
from flask_debugtoolbar.panels import DebugPanel
from flask_debugtoolbar.utils import format_fname
from flask_debugtoolbar.utils import format_sql

from . import _recording
from ._recording import RecordedQuery

if t.TYPE_CHECKING:
    from ._state import AppState

# The toolbar's own CSS classes, so that the table looks like its other panels.
_TEMPLATE = """\
{% if not recording %}
  <p>Query recording is off for this app: set
  <code>SESSION_ORM_RECORD_QUERIES = True</code> in its config (it is on by
  default in debug and testing mode).</p>
{% else %}
  {% for found in nplusone %}
    <p style="color: #a40000"><strong>N+1:</strong> {{ found.message }}</p>
  {% endfor %}
  <p>{{ queries|length }} statement{{ "" if queries|length == 1 else "s" }},
  {{ "%.2f"|format(total * 1000) }} ms in the database.</p>
  <table class="flDebugTablesorter">
    <thead>
      <tr>
        <th>#</th>
        <th>ms</th>
        <th>Engine</th>
        <th>Called from</th>
        <th>Statement</th>
      </tr>
    </thead>
    <tbody>
      {% for query in queries %}
        <tr class="{{ loop.cycle('flDebugOdd', 'flDebugEven') }}">
          <td>{{ loop.index }}</td>
          <td>{{ "%.3f"|format(query.duration * 1000) }}</td>
          <td>{{ query.engine }}</td>
          <td title="{{ query.filename }}:{{ query.lineno }}">
            {{ query.short }}:{{ query.lineno }}<br>{{ query.function }}
            {% if query.relationship %}<br>lazy load of
              <code>{{ query.relationship }}</code>{% endif %}
          </td>
          <td class="flDebugSyntax">
            <div class="flDebugSqlWrap">
              <div class="flDebugSql">{{ query.sql }}</div>
            </div>
            {% if query.parameters %}<div>parameters:
              <code>{{ query.parameters }}</code></div>{% endif %}
          </td>
        </tr>
      {% endfor %}
    </tbody>
  </table>
{% endif %}
"""

_templates: weakref.WeakKeyDictionary[jinja2.Environment, jinja2.Template] = (
    weakref.WeakKeyDictionary()
)


def _state() -> AppState | None:
    """The extension's state for the current app, if it has one."""
    state = flask.current_app.extensions.get("session_orm")
    return t.cast("AppState | None", state)


class QueriesPanel(DebugPanel):
    """The Flask-DebugToolbar panel "SQL queries": every statement of the
    request with its duration, engine, parameters and the line of the app that
    ran it, lazy loads marked with their relationship, and the
    :class:`.NPlusOneWarning` messages of the request.

    .. versionadded:: 0.1.0
    """

    name = "SessionORMQueries"
    has_content = True

    def _recording(self) -> bool:
        state = _state()
        return state is not None and state.config.recording.record

    def _queries(self) -> list[RecordedQuery]:
        recorder = _recording._recorder(False)
        return [] if recorder is None else list(recorder.queries)

    def nav_title(self) -> str:
        return "SQL queries"

    def nav_subtitle(self) -> str:
        if not self._recording():
            return "recording off"
        queries = self._queries()
        total = sum(query.duration for query in queries)
        plural = "statement" if len(queries) == 1 else "statements"
        text = f"{len(queries)} {plural} in {total * 1000:.1f} ms"
        found = len(_recording.nplusone_found())
        if found:
            text += f", {found} N+1"
        return text

    def title(self) -> str:
        return "SQL queries of this request"

    def url(self) -> str:
        return ""

    def content(self) -> str:
        template = _templates.get(self.jinja_env)
        if template is None:
            template = self.jinja_env.from_string(_TEMPLATE)
            _templates[self.jinja_env] = template
        queries = self._queries()
        rows = [
            {
                "duration": query.duration,
                "engine": query.engine,
                "filename": query.filename,
                "short": format_fname(query.filename),
                "lineno": query.lineno,
                "function": query.function,
                "relationship": query.relationship,
                "sql": format_sql(query.statement, query.parameters),
                "parameters": repr(query.parameters) if query.parameters else "",
            }
            for query in queries
        ]
        return template.render(
            recording=self._recording(),
            queries=rows,
            total=sum(query.duration for query in queries),
            nplusone=_recording.nplusone_found(),
        )
