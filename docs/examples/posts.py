"""The pagination page's application: 404 helpers, numbered pages, cursors."""

import datetime

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import render_template
from flask import url_for

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "posts_post"
    # For the keyset listing: the index its ORDER BY and WHERE use.
    __table_args__ = (sa.Index("ix_posts_post_created_id", "created", "id"),)

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    slug: orm.Mapped[str] = orm.mapped_column(sa.String(100), unique=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    created: orm.Mapped[datetime.datetime]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [or-404]
    @app.get("/posts/<int:post_id>")
    def show_post(post_id):
        post = db.get_or_404(Post, post_id, description=f"There is no post {post_id}.")
        return {"title": post.title}

    @app.get("/posts/by-slug/<slug>")
    def show_post_by_slug(slug):
        post = db.one_or_404(sa.select(Post).where(Post.slug == slug))
        return {"title": post.title}

    @app.get("/posts/latest")
    def latest_post():
        statement = sa.select(Post).order_by(Post.created.desc(), Post.id.desc())
        post = db.first_or_404(statement, description="Nothing published yet.")
        return {"title": post.title}

    # [end or-404]

    # [paginate]
    @app.get("/posts/")
    def list_posts():
        # page and per_page come from the query string: /posts/?page=3&per_page=10
        statement = sa.select(Post).order_by(Post.id)
        pagination = db.paginate(statement, max_per_page=50)
        return render_template("posts.html", pagination=pagination)

    # [end paginate]

    # [keyset]
    @app.get("/api/posts")
    def api_posts():
        # Newest first; the id breaks ties between posts of the same time.
        statement = sa.select(Post).order_by(Post.created.desc(), Post.id.desc())
        # after / before come from the query string: /api/posts?after=<cursor>
        page = db.paginate_keyset(statement, max_per_page=100)
        return {
            "posts": [{"id": post.id, "title": post.title} for post in page],
            "next": url_for("api_posts", after=page.next_cursor)
            if page.has_next
            else None,
            "prev": url_for("api_posts", before=page.prev_cursor)
            if page.has_prev
            else None,
        }

    # [end keyset]

    return app
