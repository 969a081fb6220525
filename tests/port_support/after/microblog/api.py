import sqlalchemy as sa
from flask import Blueprint
from flask import abort
from flask import request
from flask import url_for

from microblog import db
from microblog.models import Post
from microblog.models import User

bp = Blueprint("api", __name__)


@bp.get("/users/<int:id>")
def get_user(id):
    return db.get_or_404(User, id).to_dict()


@bp.post("/users")
def create_user():
    data = request.get_json()
    if "username" not in data or "email" not in data or "password" not in data:
        abort(400)
    if db.session.scalar(sa.select(User).where(User.username == data["username"])):
        return {"error": "please use a different username"}, 400
    user = User(username=data["username"], email=data["email"])
    user.set_password(data["password"])
    db.session.add(user)
    db.session.flush()
    location = url_for("api.get_user", id=user.id)
    return (
        {**user.to_dict(), "created": user.created.isoformat()},
        201,
        {"Location": location},
    )


@bp.get("/posts")
def get_posts():
    query = sa.select(Post).order_by(Post.timestamp.desc(), Post.id.desc())
    page = db.paginate(query, max_per_page=10)
    return {
        "items": [{"id": post.id, "body": post.body} for post in page.items],
        "total": page.total,
        "next": page.next_num,
    }


@bp.get("/stats")
async def stats():
    users = db.session.scalar(sa.select(sa.func.count(User.id)))
    posts = db.session.scalar(sa.select(sa.func.count(Post.id)))
    return {"users": users, "posts": posts}
