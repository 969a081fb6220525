"""Turn ``app.config`` into engine and sessionmaker arguments, validating all of it.

Everything here is a pure function of the config mapping (plus the app's instance
path), so it can be tested without an app and every error is raised by ``init_app``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
import typing as t
import warnings

import sqlalchemy as sa
import sqlalchemy.orm as orm
import sqlalchemy.pool as sa_pool

PREFIX = "SESSION_ORM_"

#: Every key this extension reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "SESSION_ORM_DATABASE_URL": None,
    "SESSION_ORM_ENGINES": {},
    "SESSION_ORM_ENGINE_OPTIONS": {},
    "SESSION_ORM_BINDS": {},
    "SESSION_ORM_EXPIRE_ON_COMMIT": True,
    "SESSION_ORM_AUTOFLUSH": True,
    "SESSION_ORM_SESSION_OPTIONS": {},
    "SESSION_ORM_COMMIT_ON_SUCCESS": True,
    "SESSION_ORM_ECHO": False,
    # Seeing the queries (_recording.py). None: on when the app is in debug or
    # testing mode when init_app runs.
    "SESSION_ORM_RECORD_QUERIES": None,
    "SESSION_ORM_NPLUSONE_THRESHOLD": 5,
    "SESSION_ORM_SERVER_TIMING": False,
    "SESSION_ORM_SLOW_QUERY_SECONDS": None,
    "SESSION_ORM_LOG_QUERY_PARAMETERS": False,
    "SESSION_ORM_RETRY_ATTEMPTS": 1,
    "SESSION_ORM_RETRY_BACKOFF": 0.02,
    "SESSION_ORM_RETRY_BACKOFF_MAX": 1.0,
    "SESSION_ORM_PING_IDLE_AFTER": 1.0,
    # Read replicas (_replicas.py).
    "SESSION_ORM_REPLICAS": {},
    "SESSION_ORM_REPLICA_METHODS": ("GET", "HEAD", "OPTIONS"),
    "SESSION_ORM_REPLICA_STICKY_SECONDS": 10.0,
    "SESSION_ORM_REPLICA_MAX_LAG_SECONDS": 10.0,
    "SESSION_ORM_REPLICA_CHECK_SECONDS": 0.05,
    "SESSION_ORM_REPLICA_RETRY_SECONDS": 5.0,
    "SESSION_ORM_REPLICA_COOKIE": "session_orm_rw",
}

# Session arguments the extension owns: routing and binding are done by the
# extension's Session subclass, so letting a user set them would silently break it.
_RESERVED_SESSION_OPTIONS = frozenset({"bind", "binds", "class_"})
_SESSION_PARAMETERS = frozenset(inspect.signature(orm.Session.__init__).parameters) - {
    "self"
}

# Matches the password part of a URL written inside any text, for error messages
# that quote a driver's or SQLAlchemy's own words.
_PASSWORD_IN_TEXT = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]*(?=@)")


#: Flask-SQLAlchemy's keys that configure databases, with what replaces each.
#: (``SQLALCHEMY_TRACK_MODIFICATIONS`` and ``SQLALCHEMY_RECORD_QUERIES`` configure
#: no database and are left alone.)
FLASK_SQLALCHEMY_KEYS: dict[str, str] = {
    "SQLALCHEMY_DATABASE_URI": "'SESSION_ORM_DATABASE_URL'",
    "SQLALCHEMY_BINDS": (
        "'SESSION_ORM_ENGINES' (and 'SESSION_ORM_BINDS' or __bind_key__ for the models)"
    ),
    "SQLALCHEMY_ENGINE_OPTIONS": "'SESSION_ORM_ENGINE_OPTIONS'",
    "SQLALCHEMY_ECHO": "'SESSION_ORM_ECHO'",
    "SQLALCHEMY_POOL_SIZE": "'SESSION_ORM_ENGINE_OPTIONS' {'pool_size': ...}",
    "SQLALCHEMY_POOL_TIMEOUT": "'SESSION_ORM_ENGINE_OPTIONS' {'pool_timeout': ...}",
    "SQLALCHEMY_POOL_RECYCLE": "'SESSION_ORM_ENGINE_OPTIONS' {'pool_recycle': ...}",
    "SQLALCHEMY_MAX_OVERFLOW": "'SESSION_ORM_ENGINE_OPTIONS' {'max_overflow': ...}",
}


class FlaskSQLAlchemyConfigWarning(UserWarning):
    """The app's config has a Flask-SQLAlchemy key that configures a database,
    which flask-session-orm ignores.

    Issued once by :meth:`.SessionORM.init_app`, naming each such key and the
    key that replaces it. A key whose value is ``None``, empty or ``False``
    (what Flask-SQLAlchemy sets as its defaults) configures nothing and is not
    named.

    .. versionadded:: 0.1.0
    """


class ConfigKeyError(KeyError):
    """A KeyError whose message prints as written, not as a quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# Everything up to the last '@' before the path, since a raw '@' may be part of
# the password.
_ANY_PASSWORD = re.compile(r":[^/]*@")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """What is needed to create one engine."""

    name: str
    #: The config key it came from, for messages.
    key: str
    url: sa.URL
    options: dict[str, t.Any]
    #: Ping a pooled connection at checkout when it was idle longer than this
    #: many seconds; None: the idle ping is not installed (SQLite, an explicit
    #: ``pool_pre_ping``, or the key set to None or 0).
    ping_idle_after: float | None = None
    #: The options as configured, before the backend's defaults: what a
    #: replica of this engine inherits.
    configured: dict[str, t.Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RecordingConfig:
    """What the app wants to see of its queries; all off by default."""

    #: Keep every statement of a request for ``db.recorded_queries()``.
    record: bool = False
    #: Warn when one relationship is lazy-loaded more often in one request
    #: (with ``record`` only); None: never.
    nplusone_threshold: int | None = None
    #: Add a ``Server-Timing`` header to responses.
    server_timing: bool = False
    #: Log statements that take longer; None: never.
    slow_query_seconds: float | None = None
    #: Put the parameters of slow statements in the log.
    log_parameters: bool = False

    @property
    def active(self) -> bool:
        """Whether any of it needs the engines' events."""
        return self.record or self.server_timing or self.slow_query_seconds is not None


@dataclasses.dataclass(frozen=True)
class ReplicaConfig:
    """Where reads may go, and when."""

    #: Primary engine name -> the replicas' engine configs, in config order.
    engines: dict[str, tuple[EngineConfig, ...]]
    #: Request methods whose reads may start on a replica (upper case).
    methods: frozenset[str]
    #: How long a client's committed writes pin its reads to the primary: on
    #: PostgreSQL until a replica has replayed them or this much time passed.
    sticky_seconds: float
    #: Skip a replica that is this many seconds behind; None: never skip for lag.
    max_lag_seconds: float | None
    #: How long a replica's replay position and lag are cached.
    check_seconds: float
    #: How long a replica that failed is skipped before it is tried again.
    retry_seconds: float
    #: The name of the cookie that carries a client's write positions.
    cookie: str


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated configuration of one app."""

    engines: dict[str, EngineConfig]
    binds: dict[str, str]
    session_options: dict[str, t.Any]
    commit_on_success: bool
    recording: RecordingConfig = RecordingConfig()
    #: How many times a request runs at most (1: no retry), unless its view says.
    retry_attempts: int = 1
    #: The first retry's backoff in seconds; it doubles for each further one.
    retry_backoff: float = 0.02
    #: The longest backoff in seconds.
    retry_backoff_max: float = 1.0
    #: None when no replica is configured.
    replicas: ReplicaConfig | None = None


def hide_password(text: str) -> str:
    """Replace every URL password written in ``text`` with ``***``."""
    return _PASSWORD_IN_TEXT.sub(r"\g<head>***", text)


def render_url(url: sa.URL) -> str:
    """Render a URL for a message, never with its password."""
    return url.render_as_string(hide_password=True)


def read_config(
    config: t.Mapping[str, t.Any],
    *,
    instance_path: str,
    engine_defaults: t.Mapping[str, t.Any] | None = None,
    session_defaults: t.Mapping[str, t.Any] | None = None,
) -> Config:
    """Validate the ``SESSION_ORM_*`` keys of ``config`` and build a :class:`Config`.

    :param config: The app's config.
    :param instance_path: Where relative SQLite paths are placed.
    :param engine_defaults: ``create_engine`` options given to the constructor.
    :param session_defaults: ``sessionmaker`` options given to the constructor.
    """
    _check_unknown_keys(config)
    echo = _get_bool(config, "SESSION_ORM_ECHO")
    ping_idle_after = _get_optional_seconds(
        config,
        "SESSION_ORM_PING_IDLE_AFTER",
        " Use None to never ping, 0 to ping at every checkout.",
    )
    commit_on_success = _get_bool(config, "SESSION_ORM_COMMIT_ON_SUCCESS")
    common = dict(_check_options("engine_options", engine_defaults or {}))
    common.update(_get_dict(config, "SESSION_ORM_ENGINE_OPTIONS"))
    engines = _read_engines(config, common, echo, ping_idle_after, instance_path)
    binds = _read_binds(config, engines)
    session_options = _read_session_options(config, session_defaults or {})
    _warn_flask_sqlalchemy_keys(config)
    retry_attempts = check_attempts(
        "Config key 'SESSION_ORM_RETRY_ATTEMPTS'",
        config.get(
            "SESSION_ORM_RETRY_ATTEMPTS", DEFAULTS["SESSION_ORM_RETRY_ATTEMPTS"]
        ),
    )
    retry_backoff = _get_seconds(config, "SESSION_ORM_RETRY_BACKOFF")
    retry_backoff_max = _get_seconds(config, "SESSION_ORM_RETRY_BACKOFF_MAX")
    if retry_backoff_max < retry_backoff:
        raise ValueError(
            "Config key 'SESSION_ORM_RETRY_BACKOFF_MAX' must not be less than"
            f" 'SESSION_ORM_RETRY_BACKOFF' ({retry_backoff!r}), got"
            f" {retry_backoff_max!r}."
        )
    return Config(
        engines=engines,
        binds=binds,
        session_options=session_options,
        commit_on_success=commit_on_success,
        recording=_read_recording(config),
        retry_attempts=retry_attempts,
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
        replicas=_read_replicas(config, engines, echo, instance_path),
    )


def _read_recording(config: t.Mapping[str, t.Any]) -> RecordingConfig:
    key = "SESSION_ORM_RECORD_QUERIES"
    record = config.get(key, DEFAULTS[key])
    if record is None:
        # Read once, like every key: app.debug and app.testing are these two
        # config values, so 'flask run --debug' (which sets DEBUG before the app
        # is created) turns recording on, and app.run(debug=True) after
        # init_app does not.
        record = bool(config.get("DEBUG")) or bool(config.get("TESTING"))
    elif not isinstance(record, bool):
        raise TypeError(
            f"Config key {key!r} must be True, False or None (on in debug and"
            f" testing mode), got {_describe(record)}."
        )
    key = "SESSION_ORM_NPLUSONE_THRESHOLD"
    threshold = config.get(key, DEFAULTS[key])
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1
    ):
        raise ValueError(
            f"Config key {key!r} must be a whole number of lazy loads, 1 or more,"
            f" or None to turn the N+1 warning off, got {_describe(threshold)}."
        )
    key = "SESSION_ORM_SLOW_QUERY_SECONDS"
    slow = config.get(key, DEFAULTS[key])
    if slow is not None and (
        isinstance(slow, bool) or not isinstance(slow, (int, float)) or not slow >= 0
    ):
        raise ValueError(
            f"Config key {key!r} must be a number of seconds, 0 or more, or None"
            f" to log no slow query, got {_describe(slow)}."
        )
    return RecordingConfig(
        record=record,
        nplusone_threshold=threshold if record else None,
        server_timing=_get_bool(config, "SESSION_ORM_SERVER_TIMING"),
        slow_query_seconds=None if slow is None else float(slow),
        log_parameters=_get_bool(config, "SESSION_ORM_LOG_QUERY_PARAMETERS"),
    )


def _warn_flask_sqlalchemy_keys(config: t.Mapping[str, t.Any]) -> None:
    # A leftover Flask-SQLAlchemy key is not an error: an app may run both
    # extensions while it moves. But a test config whose SQLALCHEMY_DATABASE_URI
    # points at a throw-away database, while SESSION_ORM_DATABASE_URL still
    # names the real one, must not go unnoticed.
    found = [
        key
        for key in FLASK_SQLALCHEMY_KEYS
        if config.get(key) not in (None, False, "", {})
    ]
    if not found:
        return
    keys = "; ".join(f"{key!r} (use {FLASK_SQLALCHEMY_KEYS[key]})" for key in found)
    warnings.warn(
        f"The app's config sets Flask-SQLAlchemy's {keys}. flask-session-orm"
        " ignores Flask-SQLAlchemy's keys: move the setting to the replacement"
        " and remove the old key.",
        FlaskSQLAlchemyConfigWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package."""
    level = 1
    frame = sys._getframe(1)
    package = __name__.rpartition(".")[0]
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != package and not name.startswith(package + "."):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return 1


def _check_unknown_keys(config: t.Mapping[str, t.Any]) -> None:
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(DEFAULTS))
            raise ConfigKeyError(
                f"Unknown config key {key!r}.{hint} The keys flask-session-orm"
                f" reads are: {known}."
            )


def _describe(value: t.Any) -> str:
    """Show a bad value in a message: its repr, with any URL password hidden."""
    text = repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{hide_password(text)} (type {type(value).__name__})"


def _get_bool(config: t.Mapping[str, t.Any], key: str) -> bool:
    value = config.get(key, DEFAULTS[key])
    if not isinstance(value, bool):
        raise TypeError(
            f"Config key {key!r} must be True or False, got {_describe(value)}."
        )
    return value


def check_attempts(what: str, value: t.Any) -> int:
    """Validate a number of attempts; ``what`` names the key or argument."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {_describe(value)}.")
    if value < 1:
        raise ValueError(
            f"{what} must be at least 1 (1 runs a request once, without retry),"
            f" got {value!r}."
        )
    return value


def _get_seconds(config: t.Mapping[str, t.Any], key: str) -> float:
    if config.get(key, DEFAULTS[key]) is None:
        raise TypeError(f"Config key {key!r} must be a number of seconds, not None.")
    return t.cast(float, _get_optional_seconds(config, key))


def _get_optional_seconds(
    config: t.Mapping[str, t.Any], key: str, hint: str = ""
) -> float | None:
    value = config.get(key, DEFAULTS[key])
    if value is None:
        return None
    # bool is an int: True would silently mean one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Config key {key!r} must be a number of seconds or None, got"
            f" {_describe(value)}."
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Config key {key!r} must be a finite number of seconds, 0 or more,"
            f" got {value!r}.{hint}"
        )
    return float(value)


def _get_dict(config: t.Mapping[str, t.Any], key: str) -> dict[str, t.Any]:
    value = config.get(key, DEFAULTS[key])
    if value is None:
        return {}
    return _check_options(key, value)


def _check_options(what: str, value: t.Any) -> dict[str, t.Any]:
    if not isinstance(value, t.Mapping):
        raise TypeError(f"{_name(what)} must be a dict, got {_describe(value)}.")
    for option in value:
        if not isinstance(option, str):
            raise TypeError(
                f"{_name(what)} must have string keys, got {_describe(option)}."
            )
    return dict(value)


def _name(what: str) -> str:
    """Quote a config key, or name a constructor argument."""
    if what.startswith(PREFIX):
        return f"Config key {what!r}"
    return f"The SessionORM argument {what!r}"


def _parse_url(key: str, value: t.Any) -> sa.URL:
    if isinstance(value, sa.URL):
        return value
    if isinstance(value, str):
        try:
            return sa.make_url(value)
        except Exception:
            # SQLAlchemy's message quotes the whole string, password included.
            # Not parseable, so where the password is cannot be known: mask
            # anything that looks like ':secret@'.
            shown = _ANY_PASSWORD.sub(":***@", value)
            raise ValueError(
                f"{_name(key)} is not a valid database URL: {shown!r}."
                " Expected 'dialect+driver://user:password@host/database'."
            ) from None
    raise TypeError(
        f"{_name(key)} must be a URL string or a sqlalchemy URL, got"
        f" {_describe(value)}."
    )


def _engine_config(
    name: str,
    key: str,
    value: t.Any,
    common: t.Mapping[str, t.Any],
    echo: bool,
    ping_idle_after: float | None,
    instance_path: str,
) -> EngineConfig:
    """One engine's config from a URL string, a URL, or ``{"url": ..., **options}``."""
    options: dict[str, t.Any] = {}
    if isinstance(value, t.Mapping):
        options = _check_options(key, value)
        if "url" not in options:
            raise ValueError(
                f"Config key {key!r} is a dict without a 'url' entry: give the"
                " engine's URL as {'url': ..., **create_engine options}."
            )
        value = options.pop("url")
    parsed = _parse_url(key, value)
    merged = {**common, **options}
    if echo:
        merged.setdefault("echo", True)
    configured = dict(merged)
    parsed, merged, idle = _apply_backend_defaults(
        key, parsed, merged, instance_path, ping_idle_after
    )
    return EngineConfig(
        name=name,
        key=key,
        url=parsed,
        options=merged,
        ping_idle_after=idle,
        configured=configured,
    )


def _read_engines(
    config: t.Mapping[str, t.Any],
    common: dict[str, t.Any],
    echo: bool,
    ping_idle_after: float | None,
    instance_path: str,
) -> dict[str, EngineConfig]:
    raw = config.get("SESSION_ORM_ENGINES", DEFAULTS["SESSION_ORM_ENGINES"])
    if raw is None:
        raw = {}
    if not isinstance(raw, t.Mapping):
        raise TypeError(
            "Config key 'SESSION_ORM_ENGINES' must be a dict of engine name to URL,"
            f" got {_describe(raw)}."
        )
    specs: dict[str, tuple[str, t.Any]] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            raise TypeError(
                "Config key 'SESSION_ORM_ENGINES' must have non-empty string engine"
                f" names, got {_describe(name)}."
            )
        specs[name] = (f"SESSION_ORM_ENGINES[{name!r}]", value)
    url = config.get("SESSION_ORM_DATABASE_URL")
    if url is not None:
        if "default" in specs:
            raise ValueError(
                "Both 'SESSION_ORM_DATABASE_URL' and 'SESSION_ORM_ENGINES[\"default\"]'"
                " are set; they name the same engine. Set only one of them."
            )
        specs = {"default": ("SESSION_ORM_DATABASE_URL", url), **specs}
    if not specs:
        hint = ""
        if "SQLALCHEMY_DATABASE_URI" in config:
            hint = (
                " 'SQLALCHEMY_DATABASE_URI' is set: that is Flask-SQLAlchemy's key;"
                " this extension reads 'SESSION_ORM_DATABASE_URL'."
            )
        raise RuntimeError(
            "No database is configured: set 'SESSION_ORM_DATABASE_URL' (or"
            f" 'SESSION_ORM_ENGINES') in the app's config before calling"
            f" 'init_app'.{hint}"
        )
    return {
        name: _engine_config(
            name, key, value, common, echo, ping_idle_after, instance_path
        )
        for name, (key, value) in specs.items()
    }


def is_sqlite_memory(url: sa.URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in database
    )


def _apply_backend_defaults(
    key: str,
    url: sa.URL,
    options: dict[str, t.Any],
    instance_path: str,
    ping_idle_after: float | None,
) -> tuple[sa.URL, dict[str, t.Any], float | None]:
    """The URL and options with the backend's defaults, and the idle-ping
    threshold that applies to the engine (None for none).
    """
    idle: float | None = None
    try:
        backend = url.get_backend_name()
    except Exception:
        raise ValueError(f"{_name(key)} has no dialect: {render_url(url)!r}.") from None
    if backend == "sqlite":
        database = url.database or ""
        if is_sqlite_memory(url):
            # One connection for the engine's lifetime, shared by every thread:
            # otherwise each connection would open its own, empty database.
            if "poolclass" not in options and "pool" not in options:
                options["poolclass"] = sa_pool.StaticPool
                connect_args = dict(options.get("connect_args", {}))
                connect_args.setdefault("check_same_thread", False)
                options["connect_args"] = connect_args
        elif not database.startswith("file:") and not os.path.isabs(database):
            os.makedirs(instance_path, exist_ok=True)
            url = url.set(database=os.path.join(instance_path, database))
    else:
        # A pooled connection may have been closed by the server (restart, idle
        # timeout, failover); checking it at checkout turns that into a fresh
        # connection instead of a failed request. Those deaths happen to idle
        # connections, so by default only a connection idle for longer than
        # SESSION_ORM_PING_IDLE_AFTER is checked: a busy app pays no round
        # trip. An explicit pool_pre_ping, True (always) or False (never),
        # wins over the key.
        if "pool_pre_ping" not in options:
            if ping_idle_after == 0:
                options["pool_pre_ping"] = True
            else:
                idle = ping_idle_after
        if backend in ("mysql", "mariadb"):
            # MySQL closes idle connections after 'wait_timeout' (8 hours).
            options.setdefault("pool_recycle", 3600)
    return url, options, idle


def _read_binds(
    config: t.Mapping[str, t.Any], engines: t.Mapping[str, EngineConfig]
) -> dict[str, str]:
    binds = _get_dict(config, "SESSION_ORM_BINDS")
    for target, engine in binds.items():
        if not isinstance(engine, str):
            raise TypeError(
                f"Config key 'SESSION_ORM_BINDS' maps {target!r} to"
                f" {_describe(engine)}; the value must be an engine name."
            )
        if ":" in target:
            module, _, qualname = target.partition(":")
            if not module or not qualname:
                raise ValueError(
                    f"Config key 'SESSION_ORM_BINDS' has the key {target!r}; a model"
                    " is named 'package.module:ClassName', a table by its name."
                )
        if engine not in engines:
            raise ValueError(
                f"Config key 'SESSION_ORM_BINDS' binds {target!r} to the unknown"
                f" engine {engine!r}. The engines that exist are:"
                f" {', '.join(sorted(engines))}."
            )
    return binds


def _read_session_options(
    config: t.Mapping[str, t.Any], defaults: t.Mapping[str, t.Any]
) -> dict[str, t.Any]:
    options = dict(_check_options("session_options", defaults))
    configured = _get_dict(config, "SESSION_ORM_SESSION_OPTIONS")
    options.update(configured)
    for name in ("EXPIRE_ON_COMMIT", "AUTOFLUSH"):
        key = PREFIX + name
        if key in config:
            options[name.lower()] = _get_bool(config, key)
        else:
            options.setdefault(name.lower(), DEFAULTS[key])
            if not isinstance(options[name.lower()], bool):
                raise TypeError(
                    f"Session option {name.lower()!r} must be True or False, got"
                    f" {_describe(options[name.lower()])}."
                )
    for option in options:
        # Name where the option came from: the config key or the constructor.
        source = _name(
            "SESSION_ORM_SESSION_OPTIONS" if option in configured else "session_options"
        )
        if option in _RESERVED_SESSION_OPTIONS:
            raise ValueError(
                f"{source} sets {option!r}, which flask-session-orm manages"
                " itself: engines are chosen through"
                " 'SESSION_ORM_ENGINES' and 'SESSION_ORM_BINDS'."
            )
        if option not in _SESSION_PARAMETERS:
            close = difflib.get_close_matches(option, _SESSION_PARAMETERS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{source} has {option!r}, which is not an argument of"
                f" sqlalchemy.orm.Session.{hint}"
            )
    return options


def _read_replicas(
    config: t.Mapping[str, t.Any],
    engines: t.Mapping[str, EngineConfig],
    echo: bool,
    instance_path: str,
) -> ReplicaConfig | None:
    key = "SESSION_ORM_REPLICAS"
    raw = config.get(key, DEFAULTS[key])
    if raw is None:
        raw = {}
    if not isinstance(raw, t.Mapping):
        raise TypeError(
            f"Config key {key!r} must be a dict of engine name to a list of replica"
            f" URLs, got {_describe(raw)}."
        )
    replicas: dict[str, tuple[EngineConfig, ...]] = {}
    for name, values in raw.items():
        if name not in engines:
            raise ValueError(
                f"Config key {key!r} names the unknown engine {name!r}. The engines"
                f" that exist are: {', '.join(sorted(engines))}."
            )
        if isinstance(values, (str, sa.URL, t.Mapping)):
            values = [values]
        if not isinstance(values, (list, tuple)):
            raise TypeError(
                f"Config key '{key}[{name!r}]' must be a list of replica URLs, got"
                f" {_describe(values)}."
            )
        primary = engines[name]
        specs = []
        for index, value in enumerate(values):
            # A replica inherits its primary's options (pool size, connect_args,
            # echo...); its own dict overrides them.
            spec = _engine_config(
                f"{name} (replica {index + 1})",
                f"{key}[{name!r}][{index}]",
                value,
                primary.configured,
                echo,
                None,
                instance_path,
            )
            if spec.url.get_backend_name() != "sqlite":
                # A replica that went away must cost a fallback to the primary,
                # not an error: check a pooled connection at every checkout,
                # where a failure can still be turned into that fallback.
                spec.options.setdefault("pool_pre_ping", True)
            specs.append(spec)
        if specs:
            replicas[name] = tuple(specs)
    if not replicas:
        return None
    key = "SESSION_ORM_REPLICA_METHODS"
    methods = config.get(key, DEFAULTS[key])
    if isinstance(methods, str) or not isinstance(
        methods, (list, tuple, set, frozenset)
    ):
        raise TypeError(
            f"Config key {key!r} must be a list of HTTP methods, got"
            f" {_describe(methods)}."
        )
    for method in methods:
        if not isinstance(method, str) or not method.isalpha():
            raise ValueError(
                f"Config key {key!r} must hold HTTP method names, got"
                f" {_describe(method)}."
            )
    sticky = _get_seconds(config, "SESSION_ORM_REPLICA_STICKY_SECONDS")
    check = _get_seconds(config, "SESSION_ORM_REPLICA_CHECK_SECONDS")
    retry = _get_seconds(config, "SESSION_ORM_REPLICA_RETRY_SECONDS")
    key = "SESSION_ORM_REPLICA_COOKIE"
    cookie = config.get(key, DEFAULTS[key])
    if not isinstance(cookie, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", cookie):
        raise ValueError(
            f"Config key {key!r} must be a cookie name (letters, digits, '_', '.',"
            f" '-'), got {_describe(cookie)}."
        )
    return ReplicaConfig(
        engines=replicas,
        methods=frozenset(method.upper() for method in methods),
        sticky_seconds=sticky,
        max_lag_seconds=_get_optional_seconds(
            config, "SESSION_ORM_REPLICA_MAX_LAG_SECONDS"
        ),
        check_seconds=check,
        retry_seconds=retry,
        cookie=cookie,
    )
