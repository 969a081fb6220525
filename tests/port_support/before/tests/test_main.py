import re

from microblog import db
from microblog.models import Post

from .conftest import log_in


def test_index_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login")


def test_post_and_paginate(client, users):
    log_in(client, "susan", "cat")
    for number in range(1, 5):
        response = client.post("/", data={"post": f"post {number}"})
        assert response.status_code == 302
    page = client.get("/").text
    assert "Your post is now live!" in page
    assert re.findall(r"susan: (post \d)", page) == ["post 4", "post 3", "post 2"]
    assert "Page 1 of 2" in page
    page = client.get("/?page=2").text
    assert re.findall(r"susan: (post \d)", page) == ["post 1"]
    assert "Newer posts" in page
    assert "Page 5 of 2" in client.get("/?page=5").text


def test_follow(client, users):
    _susan, john = users
    db.session.add(Post(body="hello from john", author=john))
    db.session.commit()
    log_in(client, "susan", "cat")
    assert "hello from john" not in client.get("/").text
    response = client.post("/follow/john")
    assert response.headers["Location"] == f"/user/{john.id}"
    assert "1 followers" in client.get(response.headers["Location"]).text
    assert "john: hello from john" in client.get("/").text
    client.post("/unfollow/john")
    assert "hello from john" not in client.get("/").text
    assert client.post("/follow/nobody").status_code == 404


def test_profile(client, users):
    _susan, john = users
    log_in(client, "susan", "cat")
    assert "User: john" in client.get(f"/user/{john.id}").text
    assert client.get("/user/999").status_code == 404
    assert client.get(f"/user/{john.id}?page=3").status_code == 404


def test_search(client, users):
    log_in(client, "susan", "cat")
    client.post("/", data={"post": "zebras are striped"})
    client.post("/", data={"post": "lions are not"})
    page = client.get("/search?q=zebras").text
    assert "zebras are striped" in page
    assert "lions" not in page
