"""Signals sent through a session's life.

Each is a :class:`blinker.Signal` sent with the Flask app as sender and the
:class:`sqlalchemy.orm.Session` as the ``session`` keyword argument, for sessions of
requests, of app contexts and those made with :attr:`.SessionORM.sessionmaker`::

    from flask_session_orm.signals import session_committed

    @session_committed.connect_via(app)
    def log_commit(sender, session, **extra):
        sender.logger.info("committed %r", session)

Each is sent once per event it names, and never otherwise. Receivers of
``session_committed``, ``session_rolled_back`` and ``session_invalidated`` run
inside the commit, rollback or invalidation: an exception they raise is logged
(logger ``flask_session_orm``) and changes neither the outcome nor the response.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import blinker

_signals = blinker.Namespace()

#: Sent when a session is created: in a request or an app context at the first
#: use of :attr:`.SessionORM.session` (a request that never uses it sends
#: nothing), or by :attr:`.SessionORM.sessionmaker`.
session_created = _signals.signal("session-orm-session-created")

#: Sent after a session's (root) transaction is committed, before the
#: :meth:`.SessionORM.on_commit` callbacks run. Releasing a savepoint does not send
#: it, nor does the end of a request that has no transaction in progress (its view
#: committed or rolled back itself and did nothing since).
session_committed = _signals.signal("session-orm-session-committed")

#: Sent after a session's (root) transaction is rolled back, explicitly or at the
#: end of its request or app context; also when the request's commit failed.
#: Rolling back a savepoint does not send it, and neither does closing a session
#: with a transaction open (``Session.close()``, the end of a
#: ``with db.sessionmaker() as session:`` block) or invalidating it.
session_rolled_back = _signals.signal("session-orm-session-rolled-back")

#: Sent after a session is invalidated: its connections were discarded instead of
#: being returned to the pool, by :meth:`.SessionORM.invalidate` or at the end of
#: a request whose connection was lost (a disconnect error). ``session_rolled_back``
#: is not sent for it. Calling ``invalidate()`` on a session yourself does not
#: send it.
session_invalidated = _signals.signal("session-orm-session-invalidated")

#: Sent when a request is about to run again after a retryable error (see
#: :meth:`.SessionORM.retry`), after its transaction was rolled back and before
#: the backoff. Sent with ``attempt=``, the number of the attempt about to start
#: (2 for the first retry), and ``exception=``, the error that ended the previous
#: one. Not sent for the first attempt, nor when the error is not retried.
#:
#: .. versionadded:: 0.1.0
request_retried = _signals.signal("session-orm-request-retried")
