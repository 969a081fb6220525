"""Testing the members' app with factory_boy, pytest-flask and orm_isolation."""

# [test]
import os

import factory
import members
import pytest
from members_factories import UserFactory
from members_factories import create_app


@pytest.fixture
def app(tmp_path):
    url = os.environ.get("DATABASE_URL", f"sqlite:///{tmp_path}/test.db")
    app = create_app({"TESTING": True, "SESSION_ORM_DATABASE_URL": url})
    with app.app_context():
        members.db.create_all(members.Base)
    yield app
    with app.app_context():
        members.db.drop_all(members.Base)
        members.db.engine.dispose()


def test_lists_users(client, orm_isolation):
    # pytest-flask pushed a request context: the factories use its session,
    # and orm_isolation lets the client's requests see what they flushed.
    UserFactory.create_batch(2, name=factory.Iterator(["ann", "bob"]))
    assert client.get("/users").json == ["ann", "bob"]


# [end test]


def test_seed(client, orm_isolation):
    assert client.post("/dev/seed").status_code == 200
    assert len(client.get("/users").json) == 3


def test_nothing_left(client, orm_isolation):
    assert client.get("/users").json == []
