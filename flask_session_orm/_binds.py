"""Which engine a model, a table or a statement uses."""

from __future__ import annotations

import importlib
import threading
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as orm
from sqlalchemy.orm import mapperlib
from sqlalchemy.sql import visitors

DEFAULT = "default"


class Router:
    """Map mappers and tables to engine names.

    Answers are cached per mapper and per table: routing sits on the path of every
    statement, and the answer for a given model never changes for the app's life.
    """

    def __init__(self, engine_names: t.Collection[str], binds: t.Mapping[str, str]):
        self._engine_names = frozenset(engine_names)
        self._class_paths = {k: v for k, v in binds.items() if ":" in k}
        self._table_names = {k: v for k, v in binds.items() if ":" not in k}
        self._classes: dict[type, str] | None = None
        self._lock = threading.Lock()
        self._by_mapper: dict[t.Any, str] = {}
        self._by_table: dict[sa.FromClause, str] = {}

    def for_mapper(self, mapper: t.Any) -> str:
        """The engine name of a mapper (or a mapped class or alias)."""
        try:
            return self._by_mapper[mapper]
        except KeyError:
            pass
        name = self._route_mapper(sa.inspect(mapper).mapper)
        self._by_mapper[mapper] = name
        return name

    def for_table(self, table: sa.FromClause) -> str:
        """The engine name of a table: as its model routes, or by its name."""
        try:
            return self._by_table[table]
        except KeyError:
            pass
        name = self._route_table(table)
        self._by_table[table] = name
        return name

    def for_clause(self, clause: sa.ClauseElement) -> str:
        """The engine name of a Core statement: that of the first table it names."""
        for element in visitors.iterate(clause):
            if isinstance(element, sa.Table):
                return self.for_table(element)
        return DEFAULT

    def _resolved_classes(self) -> dict[type, str]:
        # Class paths are imported at first use, not in init_app: the models'
        # module commonly imports the extension object, so it may not be
        # importable yet while the app is being set up.
        if self._classes is None:
            with self._lock:
                if self._classes is None:
                    self._classes = {
                        _import_class(path): name
                        for path, name in self._class_paths.items()
                    }
        return self._classes

    def _route_mapper(self, mapper: orm.Mapper[t.Any]) -> str:
        classes = self._resolved_classes()
        for cls in mapper.class_.__mro__:
            if cls in classes:
                return classes[cls]
        for table in (mapper.local_table, *mapper.tables):
            name = self._table_bind(table)
            if name is not None:
                return name
        key = getattr(mapper.class_, "__bind_key__", None)
        if key is None:
            return DEFAULT
        if not isinstance(key, str) or key not in self._engine_names:
            raise ValueError(
                f"The model {_class_path(mapper.class_)!r} has __bind_key__ = {key!r},"
                f" which is not a configured engine. The engines that exist are:"
                f" {', '.join(sorted(self._engine_names))}."
            )
        return key

    def _table_bind(self, table: sa.FromClause) -> str | None:
        if not self._table_names or not isinstance(table, sa.Table):
            return None
        return self._table_names.get(table.fullname) or self._table_names.get(
            table.name
        )

    def _route_table(self, table: sa.FromClause) -> str:
        name = self._table_bind(table)
        if name is not None:
            return name
        mapper = _mapper_for_table(table)
        if mapper is not None:
            return self.for_mapper(mapper)
        return DEFAULT


def _mapper_for_table(table: sa.FromClause) -> orm.Mapper[t.Any] | None:
    """The mapper whose own table is ``table``, if any."""
    for registry in mapperlib._all_registries():
        for mapper in registry.mappers:
            if mapper.local_table is table:
                return mapper
    return None


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        obj: t.Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"Config key 'SESSION_ORM_BINDS' names {path!r}, which cannot be"
            f" imported: {e}."
        ) from e
    if not isinstance(obj, type):
        raise ValueError(
            f"Config key 'SESSION_ORM_BINDS' names {path!r}, which is not a class."
        )
    return obj
