import pytest
from config import TestConfig
from microblog import create_app
from microblog import db
from microblog.models import User


@pytest.fixture
def app():
    app = create_app(TestConfig)
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()


@pytest.fixture
def users(app):
    susan = User(username="susan", email="susan@example.com")
    susan.set_password("cat")
    john = User(username="john", email="john@example.com")
    john.set_password("dog")
    db.session.add_all([susan, john])
    db.session.commit()
    return susan, john


def log_in(client, username, password):
    return client.post("/auth/login", data={"username": username, "password": password})
