"""Constructor arguments: defaults that the app's config overrides."""

from flask_session_orm import SessionORM

# [constructor]
db = SessionORM(
    engine_options={"pool_size": 20},
    session_options={"expire_on_commit": False},
)
# [end constructor]
