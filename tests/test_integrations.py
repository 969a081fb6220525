"""The libraries of the "Using it with other extensions" page, for real: the
page's examples (``docs/examples/members*.py``) run against each backend, with
Flask-Admin, marshmallow-sqlalchemy, factory_boy, WTForms-SQLAlchemy and Celery
holding ``db.scoped_session`` captured at setup."""

from __future__ import annotations

import http.client
import importlib
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import types
import typing as t
import urllib.parse

import flask
import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from flask_session_orm import SessionORM

from .conftest import Item
from .conftest import checked_out

EXAMPLES = pathlib.Path(__file__).parent.parent / "docs" / "examples"
SHARED = "members"

# The select fields of WTForms-SQLAlchemy 0.4 (Flask-Admin renders its own the
# same way) yield tuples, which WTForms 3.3 deprecates; nothing this project
# can change.
wtforms_tuples = pytest.mark.filterwarnings(
    "ignore:Yielding raw tuples from iter_choices:DeprecationWarning"
)


class Members:
    """One of the page's example apps, imported fresh, with its tables."""

    def __init__(self, module: types.ModuleType, app: flask.Flask) -> None:
        self.module = module
        self.app = app
        self.models = sys.modules[SHARED]
        self.db: SessionORM = self.models.db

    def rows(self, statement: sa.Select[t.Any]) -> list[t.Any]:
        """The result of ``statement``, read through a fresh connection."""
        with self.app.app_context(), self.db.engine.connect() as connection:
            return list(connection.execute(statement))

    def names(self) -> list[str]:
        return [row.name for row in self.rows(sa.select(self.models.User.name))]

    def checked_out(self) -> int:
        return checked_out(self.db, self.app)


@pytest.fixture(scope="module")
def examples_dir(
    tmp_path_factory: pytest.TempPathFactory,
) -> t.Iterator[pathlib.Path]:
    """A private copy of docs/examples on sys.path, as a user's saved files.

    Each module is imported once for all the tests, as an application's modules
    are: one ``db``, registered on the app of each test, and Celery's shared
    tasks defined once.
    """
    directory = tmp_path_factory.mktemp("integrations") / "examples"
    shutil.copytree(EXAMPLES, directory)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        for name in list(sys.modules):
            if name.startswith(SHARED):
                del sys.modules[name]


@pytest.fixture
def load(
    examples_dir: pathlib.Path, database_url: str
) -> t.Iterator[t.Callable[..., Members]]:
    """Build an example module's app on this test's backend, with its tables."""
    loaded: list[Members] = []

    def load(name: str, **config: t.Any) -> Members:
        module = importlib.import_module(name)
        app = module.create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "test",
                "SESSION_ORM_DATABASE_URL": database_url,
                **config,
            }
        )
        members = Members(module, app)
        with app.app_context():
            members.db.drop_all(members.models.Base)
            members.db.create_all(members.models.Base)
        loaded.append(members)
        return members

    yield load
    for members in loaded:
        with members.app.app_context():
            members.db.drop_all(members.models.Base)
            members.db.engine.dispose()


def add_team(members: Members, name: str) -> int:
    with members.app.app_context():
        team = members.models.Team(name=name)
        members.db.session.add(team)
        members.db.session.commit()
        return t.cast(int, team.id)


def add_user(members: Members, name: str) -> int:
    with members.app.app_context():
        user = members.models.User(name=name)
        members.db.session.add(user)
        members.db.session.commit()
        return t.cast(int, user.id)


# -- Flask-Admin -----------------------------------------------------------------


def test_admin_create_edit_delete(load: t.Callable[..., Members]) -> None:
    """Flask-Admin's create, list, edit and delete pages work through the
    captured scoped session, each request with its own session."""
    members = load("members_admin")
    team = add_team(members, "red")
    client = members.app.test_client()
    response = client.post("/admin/user/new/", data={"name": "ann", "team": team})
    assert response.status_code == 302
    (user_id,) = [row.id for row in members.rows(sa.select(members.models.User.id))]
    listing = client.get("/admin/user/")
    assert listing.status_code == 200
    assert b"ann" in listing.data
    response = client.post(
        f"/admin/user/edit/?id={user_id}", data={"name": "anna", "team": team}
    )
    assert response.status_code == 302
    assert members.names() == ["anna"]
    assert client.post("/admin/user/delete/", data={"id": user_id}).status_code == 302
    assert members.names() == []
    assert members.checked_out() == 0


def test_admin_under_pushed_request_context(load: t.Callable[..., Members]) -> None:
    """With a test request context pushed around the requests (as pytest-flask
    does), each admin request still uses and commits its own session."""
    members = load("members_admin")
    client = members.app.test_client()
    with members.app.test_request_context():
        outer = members.db.session
        assert client.post("/admin/team/new/", data={"name": "a"}).status_code == 302
        assert client.post("/admin/team/new/", data={"name": "b"}).status_code == 302
        page = client.get("/admin/team/")
        assert b">a<" in page.data.replace(b" ", b"").replace(b"\n", b"")
        assert members.db.session is outer
        assert not outer.new
        assert len(outer.identity_map) == 0
    teams = members.rows(sa.select(members.models.Team.name).order_by("name"))
    assert [row.name for row in teams] == ["a", "b"]


def test_admin_failed_commit_is_flashed(load: t.Callable[..., Members]) -> None:
    """A create that fails to commit (a duplicate name) is rolled back by
    Flask-Admin and shown again with its error; nothing is stored."""
    members = load("members_admin")
    add_team(members, "red")
    client = members.app.test_client()
    response = client.post("/admin/team/new/", data={"name": "red"})
    assert response.status_code == 200
    assert b"Failed to create record" in response.data
    assert len(members.rows(sa.select(members.models.Team.id))) == 1
    assert client.post("/admin/team/new/", data={"name": "blue"}).status_code == 302
    assert members.checked_out() == 0


def test_admin_with_db_object_fails_at_setup() -> None:
    """ModelView(Item, db) made outside an app context fails at once, with the
    error that points to db.scoped_session, not in a request."""
    from flask_admin.contrib.sqla import ModelView

    with pytest.raises(RuntimeError, match="outside of application context.*scoped"):
        ModelView(Item, SessionORM())


def test_admin_with_db_object_made_in_context(tmp_path: pathlib.Path) -> None:
    """ModelView(Item, db) made inside an app context works: Flask-Admin calls
    the session methods on db, which are the current request's session's."""
    from flask_admin import Admin
    from flask_admin.contrib.sqla import ModelView

    app = flask.Flask("direct", instance_path=str(tmp_path))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SESSION_ORM_DATABASE_URL=f"sqlite:///{tmp_path}/direct.db",
    )
    db = SessionORM(app)
    with app.app_context():
        db.create_all(Item.metadata)
        view = ModelView(Item, db)
    Admin(app).add_view(view)
    client = app.test_client()
    assert client.post("/admin/item/new/", data={"name": "lamp"}).status_code == 302
    assert b"lamp" in client.get("/admin/item/").data
    with app.app_context():
        assert db.session.scalars(sa.select(Item.name)).all() == ["lamp"]
        db.engine.dispose()


def test_db_delegates_session_methods_only(tmp_path: pathlib.Path) -> None:
    """db.add() and friends are the current session's; other names and private
    ones are a plain AttributeError."""
    app = flask.Flask("delegate", instance_path=str(tmp_path))
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    db = SessionORM(app)
    with app.app_context():
        assert db.add == db.session.add
        with pytest.raises(AttributeError, match="no attribute 'sesion'"):
            _ = db.sesion  # type: ignore[attr-defined]
        with pytest.raises(AttributeError, match="no attribute '_flush'"):
            _ = db._flush  # type: ignore[attr-defined]
        db.engine.dispose()


@wtforms_tuples
def test_admin_threaded_server(load: t.Callable[..., Members]) -> None:
    """4 threads x 10 creates through Flask-Admin's create form on a threaded
    server, each followed by its edit page: 40 rows, no error, no stale page,
    no connection left checked out."""
    members = load("members_admin")
    server = make_server("127.0.0.1", 0, members.app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    errors: list[str] = []

    def create(worker: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port)
        try:
            for i in range(10):
                name = f"w{worker}-{i}"
                # "Save and continue editing" redirects to the new row's page.
                body = urllib.parse.urlencode({"name": name, "_continue_editing": 1})
                connection.request(
                    "POST",
                    "/admin/user/new/",
                    body,
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )
                response = connection.getresponse()
                response.read()
                location = response.getheader("Location", "")
                if response.status != 302 or "/admin/user/edit/" not in location:
                    errors.append(f"{name}: {response.status} {location}")
                    continue
                connection.request(
                    "GET",
                    urllib.parse.urlsplit(location).path
                    + "?"
                    + urllib.parse.urlsplit(location).query,
                )
                response = connection.getresponse()
                page = response.read().decode()
                if response.status != 200 or f'value="{name}"' not in page:
                    errors.append(f"{name}: edit page {response.status}")
        except Exception as e:  # pragma: no cover - reported by the assertion
            errors.append(f"w{worker}: {e!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    server.shutdown()
    server.server_close()  # waits for the request threads, and their teardown
    serving.join(timeout=10)
    assert errors == []
    assert sorted(members.names()) == sorted(
        f"w{w}-{i}" for w in range(4) for i in range(10)
    )
    assert members.checked_out() == 0


# -- marshmallow-sqlalchemy ------------------------------------------------------


def test_marshmallow_create_and_update(load: t.Callable[..., Members]) -> None:
    """load_instance creates and updates users in the request's session, which
    the end of the request commits."""
    members = load("members_schema")
    client = members.app.test_client()
    created = client.post("/api/users", json={"name": "ann", "email": "a@x.org"})
    assert created.status_code == 201
    user_id = created.json["id"]
    updated = client.patch(f"/api/users/{user_id}", json={"name": "anna"})
    assert updated.status_code == 200
    assert updated.json == {
        "id": user_id,
        "name": "anna",
        "email": "a@x.org",
        "team_id": None,
    }
    assert members.names() == ["anna"]
    assert members.checked_out() == 0


def test_marshmallow_invalid_is_rolled_back(load: t.Callable[..., Members]) -> None:
    """A partial update that fails validation after loading the user stores
    nothing: the 422 response rolls the request back."""
    members = load("members_schema")
    user_id = add_user(members, "ann")
    client = members.app.test_client()
    response = client.patch(f"/api/users/{user_id}", json={"name": 5})
    assert response.status_code == 422
    assert "name" in response.json["errors"]
    assert members.names() == ["ann"]


def test_marshmallow_in_app_context(load: t.Callable[..., Members]) -> None:
    """Outside requests the schema uses the app context's session."""
    members = load("members_schema")
    user_id = add_user(members, "ann")
    with members.app.app_context():
        user = members.module.user_schema.load({"id": user_id, "name": "bo"})
        assert members.db.object_session(user) is members.db.session
        members.db.session.commit()
    assert members.names() == ["bo"]


# -- factory_boy -----------------------------------------------------------------


def test_factories_in_request(load: t.Callable[..., Members]) -> None:
    """Factories used in a view add to the request's session, committed with it."""
    members = load("members_factories")
    client = members.app.test_client()
    response = client.post("/dev/seed")
    assert response.status_code == 200
    assert len(response.json["users"]) == 3
    assert len(client.get("/users").json) == 3
    assert members.checked_out() == 0


def test_factories_in_app_context(load: t.Callable[..., Members]) -> None:
    """Factories used in an app context flush into its session; nothing is
    committed for them."""
    members = load("members_factories")
    with members.app.app_context():
        user = members.module.UserFactory()
        assert user.id is not None
        assert members.db.object_session(user) is members.db.session
        assert members.db.object_session(user.team) is members.db.session
    assert members.names() == []


def test_factory_with_session_factory(load: t.Callable[..., Members]) -> None:
    """sqlalchemy_session_factory = lambda: db.session gives each object the
    session of the request that creates it."""
    from factory.alchemy import SQLAlchemyModelFactory

    members = load("members_factories")
    db, models = members.db, members.models

    class TeamFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
        class Meta:
            model = models.Team
            sqlalchemy_session_factory = lambda: db.session  # noqa: E731
            sqlalchemy_session_persistence = "flush"

    @members.app.post("/team/<name>")
    def create(name: str) -> str:
        team = TeamFactory(name=name)
        assert db.object_session(team) is db.session
        return str(team.id)

    client = members.app.test_client()
    assert client.post("/team/a").status_code == 200
    assert client.post("/team/b").status_code == 200
    teams = members.rows(sa.select(models.Team.name).order_by(models.Team.name))
    assert [row.name for row in teams] == ["a", "b"]


def test_factories_page_tests(examples_dir: pathlib.Path, database_url: str) -> None:
    """The page's pytest-flask tests with factories pass when pytest runs them."""
    environ = {**os.environ, "DATABASE_URL": database_url}
    if database_url.startswith("sqlite"):
        del environ["DATABASE_URL"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "members_test.py",
        ],
        cwd=examples_dir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert "3 passed" in result.stdout, result.stdout
    assert result.returncode == 0


# -- WTForms-SQLAlchemy ----------------------------------------------------------


def options(html: bytes) -> list[str]:
    """The labels of a page's select options, without the blank choice."""
    labels = re.findall(r"<option[^>]*>([^<]*)</option>", html.decode())
    return [label for label in labels if label not in ("", "__None")]


@wtforms_tuples
def test_model_form(load: t.Callable[..., Members]) -> None:
    """model_form's relationship field lists the teams through the scoped
    session, in each request, and a valid form creates the user."""
    members = load("members_forms")
    client = members.app.test_client()
    add_team(members, "red")
    assert options(client.get("/users/new").data) == ["red"]
    blue = add_team(members, "blue")
    assert sorted(options(client.get("/users/new").data)) == ["blue", "red"]
    response = client.post("/users/new", data={"name": "ann", "team": str(blue)})
    assert response.status_code == 302
    rows = members.rows(
        sa.select(members.models.User.name, members.models.User.team_id)
    )
    assert [(row.name, row.team_id) for row in rows] == [("ann", blue)]
    response = client.post("/users/new", data={"name": "bob", "team": "999"})
    assert response.status_code == 400
    assert members.names() == ["ann"]
    assert members.checked_out() == 0


@wtforms_tuples
def test_query_select_field(load: t.Callable[..., Members]) -> None:
    """A QuerySelectField with a query factory lists and sets the team."""
    members = load("members_forms")
    client = members.app.test_client()
    red, blue = add_team(members, "red"), add_team(members, "blue")
    user_id = add_user(members, "ann")
    page = client.get(f"/users/{user_id}/team")
    assert options(page.data) == ["blue", "red"]
    response = client.post(f"/users/{user_id}/team", data={"team": str(red)})
    assert response.status_code == 302
    assert client.post(f"/users/{user_id}/team", data={"team": "0"}).status_code == 400
    rows = members.rows(sa.select(members.models.User.team_id))
    assert [row.team_id for row in rows] == [red]
    assert blue != red


# -- Celery ----------------------------------------------------------------------

CELERY = {"broker_url": "memory://", "result_backend": "cache+memory://"}


def test_celery_eager_after_commit(load: t.Callable[..., Members]) -> None:
    """An eager task sent by db.on_commit runs inside the request, after its
    commit, in an app context of its own, and commits its own work."""
    members = load("members_tasks", CELERY={**CELERY, "task_always_eager": True})
    user_id = add_user(members, "ann")
    client = members.app.test_client()
    response = client.post(f"/users/{user_id}/rename", data={"name": "bo"})
    assert response.status_code == 202
    assert members.names() == ["bo"]
    assert members.checked_out() == 0


def test_celery_task_in_view_has_own_session(load: t.Callable[..., Members]) -> None:
    """A task applied inline in the middle of a view has its own session: its
    explicit commit stores its work, not the view's pending work, which the
    view's error response rolls back.

    This needs the contract's rule that an app context pushed inside a request
    has its own session.
    """
    members = load("members_tasks", CELERY=CELERY)
    user_id = add_user(members, "ann")
    app, db, models = members.app, members.db, members.models

    @app.post("/inline")
    def inline() -> tuple[str, int]:
        db.session.add(models.Team(name="pending"))
        result = members.module.rename_user.apply(args=(user_id, "bo"))
        assert result.successful(), result.traceback
        assert {type(obj).__name__ for obj in db.session.new} == {"Team"}
        return "no", 400

    assert app.test_client().post("/inline").status_code == 400
    assert members.names() == ["bo"]
    assert members.rows(sa.select(models.Team.name)) == []
    assert members.checked_out() == 0


def test_celery_worker(load: t.Callable[..., Members]) -> None:
    """A real worker runs the task sent after the request's commit, in its own
    app context and session, and commits; no connection stays checked out."""
    from celery.contrib.testing.worker import start_worker

    members = load("members_tasks", CELERY=CELERY)
    user_id = add_user(members, "ann")
    celery_app = members.app.extensions["celery"]
    client = members.app.test_client()
    # start_worker sets up Celery's logging on the root logger (level ERROR and
    # a handler) and leaves it so; the other tests need it as it was.
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False):
            response = client.post(f"/users/{user_id}/rename", data={"name": "bo"})
            assert response.status_code == 202
            result = celery_app.AsyncResult(response.json["task"])
            assert result.get(timeout=30) == "bo"
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    assert members.names() == ["bo"]
    assert members.checked_out() == 0


def test_celery_not_sent_on_rollback(load: t.Callable[..., Members]) -> None:
    """A request that is rolled back sends no task."""
    members = load("members_tasks", CELERY={**CELERY, "task_always_eager": True})
    user_id = add_user(members, "ann")
    app, db = members.app, members.db

    @app.before_request
    def fail() -> None:
        db.mark_for_rollback()

    response = app.test_client().post(f"/users/{user_id}/rename", data={"name": "x"})
    assert response.status_code == 202
    assert members.names() == ["ann"]
