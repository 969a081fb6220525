"""Answers about model instances: which session or engine, deleted, changed."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import _metadata
from . import _scope

if t.TYPE_CHECKING:
    pass


class InspectionMethods:
    """:class:`.SessionORM` methods about model instances."""

    def object_session(self, obj: object) -> orm.Session | None:
        """Return the session that holds ``obj``, or None.

        Inside a request, every object the request loaded or added (pending or
        persistent) is held by the request's :attr:`session`. None means ``obj``
        is transient (never added) or detached (its session was closed, or it was
        expunged, or deleted and committed).

        :param obj: An instance of a mapped class.
        :raises TypeError: ``obj`` is not an instance of a mapped class (a mapped
            class itself is not); the message names what was passed.

        .. versionadded:: 0.1.0
        """
        return _instance_state(obj).session

    def get_bind(self, obj: object) -> sa.Engine | sa.Connection:
        """Return the engine, or connection, that ``obj`` talks to.

        - A model instance: the engine its model is bound to
          (``SESSION_ORM_BINDS``, ``__bind_key__``, else ``"default"``), whether
          the instance is transient, pending or persistent. Inside
          :meth:`isolation` that is the isolation's connection to the engine.
        - A :class:`~sqlalchemy.orm.Session`: its default engine.
        - An :class:`~sqlalchemy.engine.Engine` or a
          :class:`~sqlalchemy.engine.Connection`: itself.

        - A :class:`~sqlalchemy.Table` or a statement (``select(Model)``,
          ``insert(table)``, ...): the engine :meth:`bind_name` names (the
          isolation's connection inside :meth:`isolation`).

        :raises TypeError: ``obj`` is none of these; the message names what was
            passed.

        .. versionadded:: 0.1.0
        """
        if isinstance(obj, (sa.Engine, sa.Connection)):
            return obj
        if isinstance(obj, orm.Session):
            return obj.get_bind()
        state = _inspect_instance(obj)
        if state is None:
            # A mapped class is refused, as a likely slip for an instance;
            # bind_name() answers for classes.
            if isinstance(obj, sa.ClauseElement):
                app_state = _scope.app_state(self)
                name = _metadata.bind_name(app_state, obj)
                if name is not None:
                    return app_state.targets[name]
            raise TypeError(
                "get_bind() takes a model instance, a Session, an Engine, a"
                f" Connection, a Table or a statement, got {_describe(obj)}."
            )
        session = state.session
        if session is not None:
            return session.get_bind(mapper=state.mapper)
        app_state = _scope.app_state(self)
        return app_state.targets[app_state.router.for_mapper(state.mapper)]

    def is_deleted(self, obj: object) -> bool:
        """Return whether ``obj`` is marked deleted in its session.

        True from ``session.delete(obj)`` on, before and after the flush, until
        the transaction ends: a rollback makes the object persistent again, a
        commit detaches it (False both).

        :raises TypeError: ``obj`` is not an instance of a mapped class.

        .. versionadded:: 0.1.0
        """
        state = _instance_state(obj)
        if state.deleted:
            return True
        session = state.session
        return session is not None and obj in session.deleted

    def has_changes(
        self,
        obj: object,
        attrs: str | t.Iterable[str] | None = None,
        exclude: str | t.Iterable[str] | None = None,
    ) -> bool:
        """Return whether ``obj`` has changes not flushed yet.

        A change is a column attribute set to a different value (setting the
        value it has is none), a changed relationship, or, for a new object, an
        attribute it was given. A flush clears them. Nothing is loaded from the
        database to answer.

        :param attrs: Look only at these attributes: one name or several.
        :param exclude: Look at every attribute but these: one name or several.
        :raises ValueError: A name in ``attrs`` or ``exclude`` is not an attribute
            of the model.
        :raises TypeError: ``obj`` is not an instance of a mapped class.

        .. versionadded:: 0.1.0
        """
        state = _instance_state(obj)
        names = set(state.mapper.attrs.keys())
        selected = names if attrs is None else _names("attrs", attrs, names, obj)
        if exclude is not None:
            selected = selected - _names("exclude", exclude, names, obj)
        return any(state.attrs[name].history.has_changes() for name in selected)


def _inspect_instance(obj: object) -> orm.InstanceState[t.Any] | None:
    """The ORM state of ``obj``, or None when it is not a mapped instance."""
    # A mapped class inspects to its Mapper, and an Engine or a Connection to an
    # Inspector, which opens a database connection: none of them is an instance,
    # so they are not inspected at all.
    if isinstance(obj, (type, sa.Engine, sa.Connection)):
        return None
    state = sa.inspect(obj, raiseerr=False)
    return state if isinstance(state, orm.InstanceState) else None


def _instance_state(obj: object) -> orm.InstanceState[t.Any]:
    """The ORM state of ``obj``; TypeError when it is not a mapped instance."""
    state = _inspect_instance(obj)
    if state is None:
        reason = "not an instance" if isinstance(obj, type) else "not mapped"
        raise TypeError(
            f"Expected an instance of a mapped class, got {_describe(obj)}, which"
            f" is {reason}."
        )
    return state


def _describe(obj: object) -> str:
    """Name what was passed: its type, or the class itself."""
    if isinstance(obj, type):
        return f"the class {obj.__name__!r}"
    return repr(type(obj).__name__)


def _names(
    argument: str, value: str | t.Iterable[str], known: set[str], obj: object
) -> set[str]:
    names = {value} if isinstance(value, str) else set(value)
    unknown = names - known
    if unknown:
        raise ValueError(
            f"Argument {argument!r} names {', '.join(sorted(unknown))!s}, not an"
            f" attribute of {type(obj).__name__!r}."
        )
    return names
