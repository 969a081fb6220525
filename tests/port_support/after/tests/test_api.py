from microblog import db
from microblog.models import Post


def test_create_user(client):
    response = client.post(
        "/api/users",
        json={"username": "ann", "email": "ann@example.com", "password": "pw"},
    )
    assert response.status_code == 201
    assert response.json["username"] == "ann"
    assert response.json["created"]
    assert response.headers["Location"] == f"/api/users/{response.json['id']}"
    user = client.get(response.headers["Location"]).json
    assert user == {
        "id": response.json["id"],
        "username": "ann",
        "about_me": None,
        "follower_count": 0,
    }


def test_create_user_errors(client, users):
    assert client.post("/api/users", json={"username": "x"}).status_code == 400
    response = client.post(
        "/api/users",
        json={"username": "susan", "email": "s2@example.com", "password": "pw"},
    )
    assert response.status_code == 400
    assert response.json == {"error": "please use a different username"}


def test_get_user_not_found(client):
    assert client.get("/api/users/42").status_code == 404


def test_posts_paginated(client, users):
    susan, _john = users
    db.session.add_all(Post(body=f"post {n}", author=susan) for n in range(12))
    db.session.commit()
    page = client.get("/api/posts?per_page=50").json
    assert len(page["items"]) == 10
    assert (page["total"], page["next"]) == (12, 2)
    page = client.get("/api/posts?page=2&per_page=10").json
    assert (len(page["items"]), page["next"]) == (2, None)
    assert client.get("/api/posts?page=3").status_code == 404


def test_stats(client, users):
    assert client.get("/api/stats").json == {"users": 2, "posts": 0}
