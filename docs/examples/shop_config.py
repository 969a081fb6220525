"""Configuration of the binds page's application (a config module)."""

# [engines]
SESSION_ORM_ENGINES = {
    "default": "postgresql+psycopg://shop@db.internal/shop",
    "audit": "postgresql+psycopg://shop@audit.internal/audit",
}
SESSION_ORM_BINDS = {
    "login_attempt": "audit",  # a table, by name
}
# [end engines]

# [override]
# An operator moves the audit log back to the main database, without a code change:
# the config wins over __bind_key__.
SESSION_ORM_BINDS = {
    "shop:AuditBase": "default",  # a base class: all its subclasses
    "login_attempt": "audit",
}
# [end override]
