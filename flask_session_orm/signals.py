"""Signals sent through a session's life.

Each is a :class:`blinker.Signal` sent with the Flask app as sender and the
:class:`sqlalchemy.orm.Session` as the ``session`` keyword argument, for sessions of
requests, of app contexts and those made with :attr:`.SessionORM.sessionmaker`::

    from flask_session_orm.signals import session_committed

    @session_committed.connect_via(app)
    def log_commit(sender, session, **extra):
        sender.logger.info("committed %r", session)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import blinker

_signals = blinker.Namespace()

#: Sent when a session is created.
session_created = _signals.signal("session-orm-session-created")

#: Sent after a session's (root) transaction is committed, before the
#: :meth:`.SessionORM.on_commit` callbacks run. Releasing a savepoint does not send it.
session_committed = _signals.signal("session-orm-session-committed")

#: Sent after a session's (root) transaction is rolled back, explicitly or at the
#: end of its request or app context. Rolling back a savepoint does not send it.
session_rolled_back = _signals.signal("session-orm-session-rolled-back")

#: Sent after a session is invalidated: its connections were discarded instead of
#: being returned to the pool, by :meth:`.SessionORM.invalidate` or after a
#: disconnect.
session_invalidated = _signals.signal("session-orm-session-invalidated")
