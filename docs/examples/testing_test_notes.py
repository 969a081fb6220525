import pytest
import sqlalchemy as sa
from myapp import Note


def test_add_note(client, orm_session):
    response = client.post("/notes", json={"text": "buy milk"})
    assert response.status_code == 201  # the view's session was committed
    assert client.get("/notes").json == ["buy milk"]
    assert orm_session.scalars(sa.select(Note.text)).all() == ["buy milk"]


def test_starts_empty(client, orm_isolation):
    assert client.get("/notes").json == []  # "buy milk" was rolled back


def test_data_for_a_request(client, orm_session):
    orm_session.add(Note(text="from the test"))
    orm_session.commit()
    assert client.get("/notes").json == ["from the test"]


def test_failed_request_rolls_back_its_own_work(client, orm_isolation):
    client.post("/notes", json={"text": "kept"})
    with pytest.raises(ValueError, match="empty note"):
        client.post("/notes/import", json={"texts": ["lost", " "]})
    assert client.get("/notes").json == ["kept"]


@pytest.fixture
def note(orm_session):
    note = Note(text="prepared by a fixture")
    orm_session.add(note)
    orm_session.commit()
    return note


def test_with_data_from_a_fixture(client, note):
    assert client.get("/notes").json == [note.text]
