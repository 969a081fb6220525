"""A session object that can be captured at import: ``db.scoped_session``.

Libraries such as Flask-Admin, marshmallow-sqlalchemy, factory_boy and
WTForms-SQLAlchemy take a session once, when the app is set up, and use it for
every request afterwards. ``db.session`` cannot be captured that way: it is the
session of one request or app context. :class:`ScopedSession` is a real
:class:`sqlalchemy.orm.scoped_session` whose registry answers every call with
``db.session`` at that moment, so it follows the extension's scoping rules and
leaves the end of each request (commit or rollback, then close) unchanged.
"""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy.orm as orm
from sqlalchemy.util import ScopedRegistry

from ._session import Session

if t.TYPE_CHECKING:
    from ._extension import SessionORM

_CONFIGURE_HINT = (
    "Sessions are configured by 'SESSION_ORM_SESSION_OPTIONS' (and"
    " 'SESSION_ORM_AUTOFLUSH', 'SESSION_ORM_EXPIRE_ON_COMMIT') or by"
    " SessionORM(session_options=...), read once by 'init_app'."
)


class _ContextRegistry(ScopedRegistry[Session]):
    """The registry of :class:`ScopedSession`: the current context's
    ``db.session``, kept by the extension rather than here.
    """

    # ScopedRegistry keeps sessions in a dict keyed by its scope function; this
    # one keeps nothing, so it does not call the parent constructor.
    def __init__(self, db: SessionORM) -> None:
        self._db = db

    def __call__(self) -> Session:
        try:
            return t.cast(Session, self._db.session)
        except RuntimeError:
            if flask.has_app_context():
                # Not the missing context (an app not registered with db, ...):
                # that error already says what is wrong.
                raise
            raise RuntimeError(
                "'db.scoped_session' was used outside of an application context: it"
                " stands for the session of the current request or app context, and"
                " there is none. Use it in a view, a CLI command, a test request, or"
                " inside 'with app.app_context():'."
            ) from None

    def has(self) -> bool:
        # A session exists, or is created on first use, in every context.
        return flask.has_app_context()

    def set(self, obj: Session) -> None:
        raise RuntimeError(
            "The session of the current request or app context is created by"
            " flask-session-orm; another session cannot be put in its place."
        )

    def clear(self) -> None:
        # The session stays the context's own until the context ends, where
        # the extension closes it; remove() has closed it already.
        pass


class _ContextSessionmaker(orm.sessionmaker[Session]):
    """The ``session_factory`` of :class:`ScopedSession`: makes sessions with the
    current app's :attr:`.SessionORM.sessionmaker`.

    Its ``class_`` is :class:`.Session`, the class of every session of the
    extension, which is what SQLAlchemy's event system listens on when
    ``sqlalchemy.event.listen()`` is given the scoped session.
    """

    def __init__(self, db: SessionORM) -> None:
        super().__init__(class_=Session)
        # sessionmaker made a subclass of its own for class_, to which listeners
        # would be confined; the app's sessionmakers each make another one.
        # Listeners on Session itself reach the sessions of all of them.
        self.class_ = Session
        self._db = db

    def __call__(self, **local_kw: t.Any) -> Session:
        return self._db.sessionmaker(**local_kw)

    def configure(self, **new_kw: t.Any) -> None:
        raise RuntimeError(
            f"'db.scoped_session.session_factory.configure()' is not supported."
            f" {_CONFIGURE_HINT}"
        )


class ScopedSession(orm.scoped_session[Session]):
    """A :class:`~sqlalchemy.orm.scoped_session` that always means the session
    of the current request, or of the current app context outside requests:
    :attr:`.SessionORM.session` at the moment it is used. Get it as
    :attr:`.SessionORM.scoped_session`; do not create it directly.

    .. versionadded:: 0.1.0
    """

    def __init__(self, db: SessionORM) -> None:
        # The parent's constructor would build a registry that creates and
        # keeps sessions itself; this one only asks the extension.
        self.session_factory = _ContextSessionmaker(db)
        self.registry = _ContextRegistry(db)

    def __call__(self, **kw: t.Any) -> Session:
        """Return the session of the current request or app context.

        :raises RuntimeError: Keyword arguments were given: that session is
            created by the extension, with the app's configuration.
        """
        if kw:
            raise RuntimeError(
                "'db.scoped_session()' takes no arguments: the session of the"
                f" current request or app context is created by the extension."
                f" {_CONFIGURE_HINT} For a session of your own, use"
                " 'db.sessionmaker(...)'."
            )
        return self.registry()

    def remove(self) -> None:
        """Close the session of the current request or app context.

        Its transaction is rolled back, its objects are detached and its
        connections go back to the pool. It stays the context's session: used
        again, it begins a new transaction, which the end of a request commits
        as usual (outside requests, commit it yourself). Does nothing outside
        any context.
        """
        if self.registry.has():
            self.registry().close()

    def configure(self, **kwargs: t.Any) -> None:
        """Not supported: the app's configuration makes the sessions.

        :raises RuntimeError: Always.
        """
        raise RuntimeError(
            f"'db.scoped_session.configure()' is not supported. {_CONFIGURE_HINT}"
        )

    @property
    def session(self) -> ScopedSession:
        """This object itself.

        Flask-Admin 2 takes either a session or an object whose ``session``
        attribute is the session (as Flask-SQLAlchemy's ``db``); this object is
        both, so ``ModelView(User, db.scoped_session)`` works either way.
        """
        return self
