import os

import pytest
from myapp import Base
from myapp import create_app
from myapp import db


@pytest.fixture(scope="session")
def app():
    app = create_app(
        {
            "TESTING": True,
            "SESSION_ORM_DATABASE_URL": os.environ.get(
                "DATABASE_URL", "sqlite:///test.db"
            ),
        }
    )
    with app.app_context():
        db.create_all(Base)  # before any isolation: MySQL commits DDL
    yield app
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()
