import pytest


@pytest.fixture(autouse=True)
def _isolate(request):
    """Run every test inside db.isolation(), except those using live_server."""
    if "live_server" not in request.fixturenames:
        request.getfixturevalue("orm_isolation")
