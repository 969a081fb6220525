from datetime import datetime
from datetime import timedelta
from datetime import timezone

from microblog import db
from microblog.models import Post
from microblog.models import User


def test_password_hashing():
    user = User(username="susan", email="susan@example.com")
    user.set_password("cat")
    assert not user.check_password("dog")
    assert user.check_password("cat")


def test_follow(users):
    susan, john = users
    susan.follow(john)
    db.session.commit()
    assert susan.is_following(john)
    assert john.followers_count() == 1
    susan.unfollow(john)
    db.session.commit()
    assert not susan.is_following(john)
    assert john.followers_count() == 0


def test_following_posts(users):
    susan, john = users
    now = datetime.now(timezone.utc)
    db.session.add_all(
        [
            Post(body="from susan", author=susan, timestamp=now),
            Post(body="from john", author=john, timestamp=now + timedelta(seconds=1)),
        ]
    )
    susan.follow(john)
    db.session.commit()
    bodies = [post.body for post in db.session.scalars(susan.following_posts())]
    assert bodies == ["from john", "from susan"]
    bodies = [post.body for post in db.session.scalars(john.following_posts())]
    assert bodies == ["from john"]
