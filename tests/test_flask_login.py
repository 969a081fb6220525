"""Flask-Login (the real package) under pytest-flask: the user it caches in ``g``
stays usable across the test client's requests, and each request commits or
rolls back exactly as it does in production.

pytest-flask pushes a test request context for every test that uses the ``app``
fixture; on Flask <= 3.1 the client's requests then run in that context's app
context, so Flask-Login's ``g._login_user`` survives from one request to the next.
"""

from __future__ import annotations

import typing as t

import flask
import flask_login
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class User(flask_login.UserMixin, Base):
    __tablename__ = "login_user"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))


@pytest.fixture(params=[True, False], ids=["expire", "no-expire"])
def app(
    request: pytest.FixtureRequest, database_url: str, tmp_path: t.Any
) -> t.Iterator[flask.Flask]:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SESSION_ORM_DATABASE_URL=database_url,
        SESSION_ORM_EXPIRE_ON_COMMIT=request.param,
    )
    db = SessionORM(app)
    login = flask_login.LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        return db.session.get(User, int(user_id))

    @app.post("/login/<name>")
    def log_in(name: str) -> str:
        user = db.session.scalars(sa.select(User).filter_by(name=name)).one()
        flask_login.login_user(user)
        return "welcome"

    @app.get("/profile")
    @flask_login.login_required
    def profile() -> str:
        return t.cast(str, flask_login.current_user.name)

    @app.post("/profile/<name>/<int:status>")
    @flask_login.login_required
    def rename(name: str, status: int) -> tuple[str, int]:
        flask_login.current_user.name = name
        return "renamed", status

    @app.post("/logout")
    def log_out() -> str:
        flask_login.logout_user()
        return "bye"

    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
        db.session.add(User(id=1, name="ann"))
        db.session.commit()
    yield app
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


def stored_name(app: flask.Flask) -> str | None:
    """The user's name as stored, read through a new connection."""
    db: SessionORM = app.extensions["session_orm"].db
    with app.app_context(), db.engine.connect() as connection:
        return connection.scalar(sa.select(User.name).where(User.id == 1))


def checked_out(app: flask.Flask) -> int:
    db: SessionORM = app.extensions["session_orm"].db
    with app.app_context():
        return t.cast(t.Any, db.engine.pool).checkedout()  # type: ignore[no-any-return]


def login_flow(app: flask.Flask) -> None:
    """Log in, read and change the profile, fail a change, log out."""
    client = app.test_client()
    assert client.post("/login/ann").status_code == 200
    assert client.get("/profile").text == "ann"
    assert checked_out(app) == 0
    assert client.post("/profile/bob/200").status_code == 200
    assert stored_name(app) == "bob"
    assert client.get("/profile").text == "bob"
    assert client.post("/profile/carl/400").status_code == 400
    assert stored_name(app) == "bob"
    assert client.get("/profile").text == "bob"
    assert client.post("/profile/dora/201").status_code == 201
    assert stored_name(app) == "dora"
    assert checked_out(app) == 0
    assert client.post("/logout").status_code == 200
    assert client.get("/profile").status_code == 401


def test_login_flow_under_pytest_flask(app: flask.Flask) -> None:
    """With pytest-flask's pushed request context, the cached user works in
    every request and each request's change is committed or rolled back."""
    assert flask.has_request_context()
    login_flow(app)


def test_login_flow_without_pushed_context(
    app: flask.Flask, outside_requests: None
) -> None:
    """Without a pushed context (as in production) the same flow gives the same
    outcome."""
    assert not flask.has_app_context()
    login_flow(app)


def test_login_flow_under_orm_session(
    app: flask.Flask, orm_session: orm.Session
) -> None:
    """Inside the plugin's isolation the flow works the same, and the test body
    sees what the requests committed."""
    client = app.test_client()
    assert client.post("/login/ann").status_code == 200
    assert client.post("/profile/bob/200").status_code == 200
    assert client.post("/profile/carl/400").status_code == 400
    assert orm_session.scalar(sa.select(User.name).where(User.id == 1)) == "bob"
    assert client.get("/profile").text == "bob"
