from datetime import datetime
from datetime import timezone

import sqlalchemy as sa
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_required

from microblog import db
from microblog.models import Post
from microblog.models import User
from microblog.search import query_index

bp = Blueprint("main", __name__)


@bp.before_app_request
def before_request():
    if current_user.is_authenticated:
        current_user.last_seen = datetime.now(timezone.utc)
        db.session.commit()


@bp.route("/", methods=["GET", "POST"])
@login_required
def index():
    if request.method == "POST":
        post = Post(body=request.form["post"], author=current_user)
        db.session.add(post)
        db.session.commit()
        flash("Your post is now live!")
        return redirect(url_for("main.index"))
    posts = db.paginate(
        current_user.following_posts(),
        per_page=current_app.config["POSTS_PER_PAGE"],
        error_out=False,
    )
    return render_template("index.html", posts=posts)


@bp.route("/user/<int:id>")
@login_required
def user(id):
    user = db.get_or_404(User, id)
    query = user.posts.select().order_by(Post.timestamp.desc(), Post.id.desc())
    posts = db.paginate(query, per_page=current_app.config["POSTS_PER_PAGE"])
    return render_template("user.html", user=user, posts=posts)


@bp.post("/follow/<username>")
@login_required
def follow(username):
    user = db.first_or_404(sa.select(User).where(User.username == username))
    current_user.follow(user)
    db.session.commit()
    flash(f"You are following {username}!")
    return redirect(url_for("main.user", id=user.id))


@bp.post("/unfollow/<username>")
@login_required
def unfollow(username):
    user = db.first_or_404(sa.select(User).where(User.username == username))
    current_user.unfollow(user)
    db.session.commit()
    flash(f"You are not following {username}.")
    return redirect(url_for("main.user", id=user.id))


@bp.get("/search")
@login_required
def search():
    ids = query_index(request.args.get("q", ""))
    posts = db.session.scalars(
        sa.select(Post).where(Post.id.in_(ids)).order_by(Post.id)
    )
    return render_template("search.html", posts=posts)
