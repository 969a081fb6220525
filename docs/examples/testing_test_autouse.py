def test_add_note(client):
    assert client.post("/notes", json={"text": "once"}).status_code == 201


def test_add_the_same_note_again(client):
    # Text is unique: this works only because the first note was rolled back.
    assert client.post("/notes", json={"text": "once"}).status_code == 201
