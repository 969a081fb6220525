import sqlalchemy as sa
from microblog import db
from microblog.models import User

from .conftest import log_in


def test_register(app, client):
    response = client.post(
        "/auth/register",
        data={"username": "ann", "email": "ann@example.com", "password": "pw"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"
    assert "you are now a registered user" in client.get("/auth/login").text
    user = db.session.scalar(sa.select(User).where(User.username == "ann"))
    assert user.check_password("pw")
    assert app.extensions["outbox"] == [("ann@example.com", "Welcome to Microblog")]


def test_login_logout(client, users):
    response = log_in(client, "susan", "cat")
    assert response.headers["Location"] == "/"
    assert "Hi, susan!" in client.get("/").text
    client.get("/auth/logout")
    assert client.get("/").status_code == 302


def test_login_wrong_password(client, users):
    response = log_in(client, "susan", "dog")
    assert response.headers["Location"] == "/auth/login"
    assert "Invalid username or password" in client.get("/auth/login").text
    assert client.get("/").status_code == 302


def test_last_seen(client, users):
    susan, _john = users
    log_in(client, "susan", "cat")
    before = db.session.scalar(sa.select(User.last_seen).where(User.id == susan.id))
    client.get("/")
    after = db.session.scalar(sa.select(User.last_seen).where(User.id == susan.id))
    assert after > before
