"""One example per configuration key, as lines of a Flask config module.

Each section between ``# [name]`` and ``# [end name]`` is shown on the
configuration page and executed on its own by tests/test_docs.py.
"""

import os

import sqlalchemy as sa

# [database-url]
SESSION_ORM_DATABASE_URL = "postgresql+psycopg://shop@db.internal:5432/shop"
# [end database-url]

# [database-url-object]
SESSION_ORM_DATABASE_URL = sa.URL.create(
    "postgresql+psycopg",
    username="shop",
    password=os.environ["SHOP_DB_PASSWORD"],  # any character, no URL quoting
    host="db.internal",
    database="shop",
)
# [end database-url-object]

# [sqlite]
SESSION_ORM_DATABASE_URL = "sqlite:///shop.db"  # the file app.instance_path/shop.db
# [end sqlite]

# [engines]
SESSION_ORM_ENGINES = {
    "default": "postgresql+psycopg://shop@db.internal/shop",
    "replica": {
        "url": "postgresql+psycopg://shop@replica.internal/shop",
        "pool_size": 2,
    },
    "cache": "sqlite:///cache.db",
}
# [end engines]

# [engine-options]
SESSION_ORM_ENGINE_OPTIONS = {"pool_size": 10, "max_overflow": 5, "pool_timeout": 5}
# [end engine-options]

# [ping-idle-after]
SESSION_ORM_PING_IDLE_AFTER = 5.0  # ping connections idle for over 5 seconds
# [end ping-idle-after]

# [pgbouncer]
# PgBouncer in transaction pooling mode, psycopg 3.
SESSION_ORM_DATABASE_URL = "postgresql+psycopg://shop@pgbouncer.internal:6432/shop"
SESSION_ORM_ENGINE_OPTIONS = {
    # Server connections change between transactions: a statement psycopg
    # prepared on one is missing on the next (PgBouncer before 1.21).
    "connect_args": {"prepare_threshold": None},
}
# [end pgbouncer]

# [binds]
SESSION_ORM_BINDS = {
    "shop.models:AuditEntry": "audit",  # one model
    "shop.models:ReportBase": "replica",  # a base class: all its subclasses
    "page_view": "audit",  # a table, by name
}
# [end binds]

# [expire-on-commit]
SESSION_ORM_EXPIRE_ON_COMMIT = False
# [end expire-on-commit]

# [autoflush]
SESSION_ORM_AUTOFLUSH = False
# [end autoflush]

# [session-options]
SESSION_ORM_SESSION_OPTIONS = {"info": {"component": "web"}, "twophase": False}
# [end session-options]

# [commit-on-success]
SESSION_ORM_COMMIT_ON_SUCCESS = False
# [end commit-on-success]

# [echo]
SESSION_ORM_ECHO = True
# [end echo]
