"""The app's metadata as Flask-Migrate sees it: one MetaData per engine, the
engines by Flask-SQLAlchemy's keys, and DDL run on the engine of each table.
"""

from __future__ import annotations

import threading
import typing as t
import weakref

import sqlalchemy as sa
import sqlalchemy.orm as orm

from . import _scope
from ._binds import DEFAULT

if t.TYPE_CHECKING:
    from ._state import AppState

#: What names a MetaData: itself, or a declarative base class (or an
#: :class:`~sqlalchemy.orm.registry`) whose ``metadata`` it is.
MetadataSource: t.TypeAlias = "sa.MetaData | type[t.Any] | orm.registry"


def to_metadata_list(
    argument: str, value: MetadataSource | t.Iterable[MetadataSource]
) -> list[sa.MetaData]:
    """The MetaData objects ``value`` names; TypeError naming ``argument``."""
    if isinstance(value, (sa.MetaData, type, orm.registry)):
        items: list[t.Any] = [value]
    elif isinstance(value, t.Iterable) and not isinstance(value, (str, bytes)):
        items = list(value)
    else:
        items = [value]
    result: list[sa.MetaData] = []
    for item in items:
        metadata = item if isinstance(item, sa.MetaData) else None
        if metadata is None and isinstance(item, (type, orm.registry)):
            found = getattr(item, "metadata", None)
            metadata = found if isinstance(found, sa.MetaData) else None
        if metadata is None:
            raise TypeError(
                f"The SessionORM argument {argument!r} takes a declarative base"
                " class, a MetaData, or a list of them, got"
                f" {_describe(item)}."
            )
        if not any(metadata is known for known in result):
            result.append(metadata)
    return result


def _describe(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__!r}, which has no MetaData 'metadata'"
    return f"{value!r} (type {type(value).__name__})"


def no_metadata_error(what: str) -> RuntimeError:
    """The error for asking for metadata when none was registered."""
    return RuntimeError(
        f"{what} needs the metadata of the app's models, and none is registered"
        " with this SessionORM. Pass the declarative base class (or its"
        " MetaData) as SessionORM(metadata=Base), or call"
        " db.register_metadata(Base) once the base class is defined."
    )


class Engines(t.Mapping[str, sa.Engine]):
    """The engines of one app by name, read-only.

    ``None`` also looks up the ``"default"`` engine, as Flask-SQLAlchemy's
    ``db.engines`` does (Flask-Migrate's multi-database ``env.py`` asks for
    ``db.engines.get(None)``); iterating gives the names only.
    """

    __slots__ = ("_engines",)

    def __init__(self, engines: t.Mapping[str, sa.Engine]) -> None:
        self._engines = engines

    def __getitem__(self, name: str | None) -> sa.Engine:
        return self._engines[DEFAULT if name is None else name]

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._engines)

    def __len__(self) -> int:
        return len(self._engines)

    def __repr__(self) -> str:
        return f"<Engines {list(self._engines)!r}>"


class Metadatas(t.Mapping["str | None", sa.MetaData]):
    """One :class:`~sqlalchemy.MetaData` per engine of one app, read-only.

    Keyed as Flask-SQLAlchemy keys ``db.metadatas``: ``None`` for the
    ``"default"`` engine (``"default"`` is accepted too), the engine's name for
    the others. Every engine has an entry, empty when no table is routed to it.
    """

    __slots__ = ("_by_engine",)

    def __init__(self, by_engine: dict[str, sa.MetaData]) -> None:
        self._by_engine = by_engine

    def __getitem__(self, name: str | None) -> sa.MetaData:
        return self._by_engine[DEFAULT if name is None else name]

    def __iter__(self) -> t.Iterator[str | None]:
        for name in self._by_engine:
            yield None if name == DEFAULT else name

    def __len__(self) -> int:
        return len(self._by_engine)

    def __repr__(self) -> str:
        tables = {
            key: sorted(metadata.tables)
            for key, metadata in zip(self, self._by_engine.values(), strict=True)
        }
        return f"<Metadatas {tables!r}>"


# The split metadata of each app, with what it was computed from: recomputed
# when a MetaData is registered or gains or loses a table (models imported
# later), reused otherwise.
_cache: weakref.WeakKeyDictionary[
    AppState, tuple[list[tuple[sa.MetaData, tuple[sa.Table, ...]]], Metadatas]
] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def metadatas(state: AppState, sources: t.Sequence[sa.MetaData]) -> Metadatas:
    """The tables of ``sources`` split by the engine each is routed to in the
    app of ``state``, as copies in one new MetaData per engine.
    """
    key = [(metadata, tuple(metadata.tables.values())) for metadata in sources]
    with _cache_lock:
        cached = _cache.get(state)
        if cached is not None and _same(cached[0], key):
            return cached[1]
        result = _split(state, sources)
        _cache[state] = (key, result)
        return result


def _same(
    old: list[tuple[sa.MetaData, tuple[sa.Table, ...]]],
    new: list[tuple[sa.MetaData, tuple[sa.Table, ...]]],
) -> bool:
    # By identity: a table replaced by another of the same name is a change.
    return len(old) == len(new) and all(
        a is c and len(b) == len(d) and all(x is y for x, y in zip(b, d, strict=True))
        for (a, b), (c, d) in zip(old, new, strict=True)
    )


def _split(state: AppState, sources: t.Sequence[sa.MetaData]) -> Metadatas:
    first = sources[0]
    by_engine: dict[str, sa.MetaData] = {}
    # The default engine first, as Flask-SQLAlchemy orders its keys.
    for name in sorted(state.engines, key=lambda name: name != DEFAULT):
        # The naming convention decides the names of constraints and indexes
        # that were given none; the copies must get the names the originals
        # would get, or autogenerate would see renamed constraints.
        by_engine[name] = sa.MetaData(
            naming_convention=first.naming_convention, info=dict(first.info)
        )
    for source in sources:
        for table in source.sorted_tables:
            name = state.router.for_table(table)
            target = by_engine.get(name)
            if target is None:
                # Only "default" can be missing: binds to unknown engines are
                # refused earlier.
                raise RuntimeError(
                    f"The table {table.key!r} has no bind, so it belongs to the"
                    f" engine {name!r}, which is not configured. The engines"
                    f" that exist are: {', '.join(sorted(state.engines))}. Bind"
                    " it with 'SESSION_ORM_BINDS' or __bind_key__."
                )
            if table.key in target.tables:
                raise RuntimeError(
                    f"The table {table.key!r} is defined in two registered"
                    f" MetaData objects, both routed to the engine {name!r}:"
                    " register each table once."
                )
            _check_foreign_keys(state, table, name)
            table.to_metadata(target)
    return Metadatas(by_engine)


def _check_foreign_keys(state: AppState, table: sa.Table, name: str) -> None:
    # A copy whose foreign key names a table of another engine cannot be
    # compared or created (SQLAlchemy cannot resolve it in the copy's MetaData,
    # and the database cannot reach the other one): say so in the model's terms.
    for foreign_key in table.foreign_keys:
        try:
            referred = foreign_key.column.table
        except sa.exc.NoReferencedTableError:
            continue  # SQLAlchemy's own error says it better.
        if isinstance(referred, sa.Table):
            other = state.router.for_table(referred)
            if other != name:
                raise RuntimeError(
                    f"The table {table.key!r} (engine {name!r}) has a foreign key"
                    f" to {referred.key!r} (engine {other!r}): a database cannot"
                    " hold a foreign key to a table of another database. Route"
                    " both tables to one engine, or drop the ForeignKey (a"
                    " relationship() can still join them with primaryjoin and"
                    " foreign())."
                )


def bind_name(state: AppState, obj: object) -> str | None:
    """The name of the engine ``obj`` is routed to, or None when ``obj`` is
    not something that is routed (a table, a model class or instance, a mapper,
    a Core statement).
    """
    router = state.router
    if isinstance(obj, sa.Table):
        return router.for_table(obj)
    if isinstance(obj, (sa.Engine, sa.Connection)):
        return None
    if isinstance(obj, (type, orm.Mapper)):
        mapper = sa.inspect(obj, raiseerr=False)
        return router.for_mapper(mapper) if isinstance(mapper, orm.Mapper) else None
    if isinstance(obj, sa.ClauseElement):
        # An ORM statement (select(Model), delete(Model)) names its entity the
        # way Session.execute() reads it to pass the mapper to get_bind().
        subject = obj._propagate_attrs.get("plugin_subject")
        entity = getattr(subject, "mapper", None)
        if isinstance(entity, orm.Mapper):
            return router.for_mapper(entity)
        return router.for_clause(obj)
    if isinstance(obj, orm.Session):
        return None
    instance = sa.inspect(obj, raiseerr=False)
    if isinstance(instance, orm.InstanceState):
        return router.for_mapper(instance.mapper)
    return None


def run_ddl(state: AppState, sources: t.Sequence[sa.MetaData], *, create: bool) -> None:
    """Create or drop the tables of ``sources``, each on its engine."""
    _check_no_open_transaction(state, "create_all" if create else "drop_all")
    targets = state.targets
    for source in sources:
        groups: dict[str, list[sa.Table]] = {}
        for table in source.sorted_tables:
            groups.setdefault(state.router.for_table(table), []).append(table)
        for name, tables in groups.items():
            if create:
                source.create_all(targets[name], tables=tables)
            else:
                source.drop_all(targets[name], tables=tables)


def _check_no_open_transaction(state: AppState, method: str) -> None:
    # The DDL runs on connections of its own. A transaction of the current
    # session holds locks (PostgreSQL and MariaDB take them even for a SELECT)
    # that make DROP TABLE, and CREATE TABLE with a foreign key to a table it
    # used, wait for that transaction, which waits for the DDL: a hang, not an
    # error. Inside db.isolation() the DDL and the session share one
    # connection, so there is nothing to wait for.
    if state.isolation is not None:
        return
    scope = _scope.peek()
    if scope is None or scope.state is not state:
        return
    session = scope.session
    if session is not None and session.in_transaction():
        raise RuntimeError(
            f"db.{method}() was called while db.session has a transaction in"
            " progress. Its locks would make the DDL wait for ever on PostgreSQL"
            " and MariaDB. End the transaction first: db.session.commit() to keep"
            " its changes, or db.session.close() to discard them."
        )
