"""The pytest plugin, run by pytest itself: inner test sessions made with pytester.

The inner projects are the testing page's examples (``docs/examples/testing_*.py``,
copied under the names the page gives them) plus tests written here. They run on
the backend of the outer test: its URL reaches the inner session through the
``DATABASE_URL`` environment variable that the example conftest reads.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

pytest_plugins = ["pytester"]

EXAMPLES = pathlib.Path(__file__).parent.parent / "docs" / "examples"

# What the inner sessions need beyond the examples: warnings are errors there too.
INNER_INI = """\
[pytest]
addopts = -p no:cacheprovider
filterwarnings = error
"""


def example(name: str) -> str:
    """The source of the testing page's example ``testing_<name>.py``."""
    return (EXAMPLES / f"testing_{name}.py").read_text()


@pytest.fixture
def project(
    pytester: pytest.Pytester, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """An inner project with the page's app (myapp.py) and conftest.py, on the
    outer test's backend; SQLite uses the example's default file.
    """
    pytester.makeini(INNER_INI)
    pytester.makepyfile(myapp=example("myapp"))
    pytester.makeconftest(example("conftest"))
    if database_url.startswith("sqlite"):
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", database_url)
    return pytester


# A test that prints how many notes are stored, read through a fresh connection.
COUNT_NOTES = """
import sqlalchemy as sa
from myapp import Note, db


def stored(app):
    with app.app_context(), db.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(Note))


def checked_out(app):
    with app.app_context():
        return sum(engine.pool.checkedout() for engine in db.engines.values())
"""


def test_testing_page_examples(project: pytest.Pytester) -> None:
    """The testing page's tests pass: a view's commit is seen by the next
    request and by orm_session, the next test starts empty, a failing view
    loses only its own work, a fixture's data reaches the request.
    """
    project.makepyfile(test_notes=example("test_notes"))
    result = project.runpytest()
    result.assert_outcomes(passed=5)


@pytest.mark.parametrize("isolated", [True, False], ids=["orm_session", "plain"])
def test_fixture_rolls_back_commits(project: pytest.Pytester, isolated: bool) -> None:
    """What a test commits through a view and through orm_session is gone for
    the next test; the same test with a plain session leaves both rows behind.
    """
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_commits=f"""
        import pytest
        from helpers import stored
        from myapp import Note, db

        ISOLATED = {isolated}


        @pytest.fixture
        def session(request, app):
            if ISOLATED:
                return request.getfixturevalue("orm_session")
            return db.session  # of the request context pytest-flask pushed

        def test_commits(client, session):
            response = client.post("/notes", json={{"text": "from a view"}})
            assert response.status_code == 201
            session.add(Note(text="from the test"))
            session.commit()
            assert client.get("/notes").json == ["from a view", "from the test"]

        def test_next_test(app):
            assert stored(app) == (0 if ISOLATED else 2)
        """,
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=2)


def test_autouse_example(project: pytest.Pytester) -> None:
    """With the page's autouse fixture, tests that name no fixture of the
    plugin are isolated: the same unique note can be added twice.
    """
    conftest = project.path / "conftest.py"
    conftest.write_text(conftest.read_text() + "\n\n" + example("autouse"))
    project.makepyfile(test_autouse=example("test_autouse"))
    result = project.runpytest()
    result.assert_outcomes(passed=2)


def test_pytest_flask_request_context(project: pytest.Pytester) -> None:
    """With pytest-flask's request context pushed for the test, orm_session is
    that context's db.session and the test is isolated all the same.
    """
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_context="""
        import flask
        from helpers import stored, checked_out
        from myapp import Note, db

        def test_in_request_context(client, orm_session):
            assert flask.has_request_context()
            assert orm_session is db.session
            orm_session.add(Note(text="from the test"))
            orm_session.commit()
            client.post("/notes", json={"text": "from a view"})
            assert client.get("/notes").json == ["from the test", "from a view"]

        def test_nothing_left(app):
            assert stored(app) == 0
            assert checked_out(app) == 0
        """,
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2)


def test_without_pytest_flask(project: pytest.Pytester) -> None:
    """Without pytest-flask, orm_session pushes an app context for the test,
    and ends it without logging the expected rollback as discarded work.
    """
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_plain="""
        import flask
        import pytest
        from helpers import stored, checked_out
        from myapp import Note, db

        def test_app_context(app, orm_session):
            assert not flask.has_request_context()
            assert orm_session is db.session
            client = app.test_client()
            client.post("/notes", json={"text": "from a view"})
            orm_session.add(Note(text="uncommitted"))
            orm_session.flush()
            assert client.get("/notes").json == ["from a view", "uncommitted"]

        def test_client_fixture_is_pytest_flasks(request):
            with pytest.raises(pytest.FixtureLookupError):
                request.getfixturevalue("client")

        def test_nothing_left(app):
            assert stored(app) == 0
            assert checked_out(app) == 0
        """,
    )
    result = project.runpytest("-p", "no:flask", "--log-level=WARNING", "-rA")
    result.assert_outcomes(passed=3)
    assert "Rolled back" not in result.stdout.str()


def test_many_isolated_tests(project: pytest.Pytester) -> None:
    """200 isolated tests in a row, each committing the same unique note
    through a view and through orm_session, leave no row and no checked-out
    connection.
    """
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_many="""
        import pytest
        from helpers import stored, checked_out
        from myapp import Note

        @pytest.mark.parametrize("number", range(200))
        def test_commit(client, orm_session, number):
            assert client.post("/notes", json={"text": "view"}).status_code == 201
            orm_session.add(Note(text="test"))
            orm_session.commit()
            assert client.get("/notes").json == ["view", "test"]

        def test_nothing_left(app):
            assert stored(app) == 0
            assert checked_out(app) == 0
        """,
    )
    start = time.perf_counter()
    result = project.runpytest("-q")
    elapsed = time.perf_counter() - start
    result.assert_outcomes(passed=201)
    print(f"200 isolated tests: {elapsed:.2f} s")


@pytest.mark.skipif(
    tuple(int(p) for p in importlib.metadata.version("flask").split(".")[:2]) < (3, 1),
    reason="pytest-flask 1.3's live_server does not route requests on Flask 3.0,"
    " even for an app without this extension",
)
def test_live_server_example(project: pytest.Pytester) -> None:
    """The page's live_server test passes without isolation (the autouse
    fixture skips it) and its cleanup leaves no row behind.
    """
    conftest = project.path / "conftest.py"
    conftest.write_text(conftest.read_text() + "\n\n" + example("autouse"))
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_live_server=example("live_server"),
        test_zz_after="""
        from helpers import stored

        def test_nothing_left(app):
            assert stored(app) == 0
        """,
    )
    # In a process of its own: pytest-flask forks the live server, and forking
    # this process, which may have threads left by other tests, is unsafe.
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=2)


def test_unittest_example(project: pytest.Pytester) -> None:
    """The page's unittest.TestCase using db.isolation() directly passes."""
    (project.path / "conftest.py").unlink()
    project.makepyfile(test_unittest=example("unittest"))
    result = project.runpytest()
    result.assert_outcomes(passed=2)


# -- errors ----------------------------------------------------------------------


def test_missing_app_fixture(pytester: pytest.Pytester) -> None:
    """Without an 'app' fixture, the fixtures say what they need."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        def test_session(orm_session):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*'orm_isolation' of flask-session-orm needs a fixture named 'app'*"]
    )


def test_app_without_session_orm(pytester: pytest.Pytester) -> None:
    """An 'app' fixture whose app has no SessionORM gets an error naming the fix."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import flask
        import pytest

        @pytest.fixture
        def app():
            return flask.Flask("bare")

        def test_isolated(orm_isolation):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:flask")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*<Flask 'bare'> from the 'app' fixture, which has no SessionORM*init_app*"]
    )


def test_session_used_before_isolation_is_refused(project: pytest.Pytester) -> None:
    """orm_session refuses the pushed context's db.session when a fixture that
    ran before the isolation created it, and the fixture's commit is real.
    """
    project.makepyfile(
        helpers=COUNT_NOTES,
        test_order="""
        import pytest
        from helpers import stored
        from myapp import Note, db

        @pytest.fixture
        def note(app):
            db.session.add(Note(text="from a fixture"))
            db.session.commit()

        def test_note_first(note, orm_session):
            pass

        def test_stored_for_real(app):
            assert stored(app) == 1
        """,
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*created before 'orm_isolation' started*"])


def test_live_server_with_isolation_is_refused(
    project: pytest.Pytester,
) -> None:
    """orm_isolation in a test that uses live_server is an error that explains
    why it cannot work.
    """
    project.makepyfile(
        test_live="""
        def test_both(orm_isolation, live_server):
            pass
        """
    )
    result = project.runpytest("--no-start-live-server")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot isolate a test that uses 'live_server'*"])


def test_plugin_is_the_flask_session_orm_entry_point(pytester: pytest.Pytester) -> None:
    """The fixtures come from the entry point named flask_session_orm: disabling
    it by that name removes them.
    """
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        textwrap.dedent(
            """
            def test_session(orm_session):
                pass
            """
        )
    )
    result = pytester.runpytest("-p", "no:flask_session_orm")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'orm_session' not found*"])


def test_plugin_import_is_cheap() -> None:
    """Importing the plugin, as pytest does at every start, imports neither
    Flask nor SQLAlchemy.
    """
    code = (
        "import sys, flask_session_orm.pytest_plugin;"
        " print(sorted({'flask', 'sqlalchemy'} & set(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
