"""The read replicas page's application: articles read from a replica."""

import click
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Blueprint
from flask import Flask
from flask import redirect
from flask import request

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Article(Base):
    __tablename__ = "replicas_article"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(100))


def create_app(config=None):
    app = Flask(__name__)
    # [config]
    app.config.update(
        SECRET_KEY="change me",  # signs the read-your-writes cookie
        SESSION_ORM_DATABASE_URL="postgresql+psycopg://app@primary.db/app",
        SESSION_ORM_REPLICAS={
            "default": [
                "postgresql+psycopg://app@replica1.db/app",
                {"url": "postgresql+psycopg://app@replica2.db/app", "pool_size": 20},
            ],
        },
    )
    # [end config]
    app.config.update(config or {})
    db.init_app(app)
    app.register_blueprint(admin)

    # [views]
    @app.get("/articles")
    def list_articles():
        # GET: read from a replica.
        titles = db.session.scalars(sa.select(Article.title).order_by(Article.id))
        return list(titles)

    @app.post("/articles")
    def create_article():
        # POST: on the primary from the start. After the commit, the response
        # carries the primary's position: the redirected GET reads this
        # article even from a replica that has not replayed it yet.
        article = Article(title=request.form["title"])
        db.session.add(article)
        db.session.flush()
        return redirect(f"/articles/{article.id}")

    @app.get("/articles/<int:id>")
    def show_article(id):
        return db.get_or_404(Article, id).title

    @app.get("/articles/<int:id>/edit")
    @db.primary_only
    def edit_article(id):
        # A form that is about to be saved: read what the primary has.
        return db.get_or_404(Article, id).title

    @app.post("/articles/search")
    @db.replica_ok
    def search_articles():
        # A POST that only reads may use a replica too.
        pattern = f"%{request.form['q']}%"
        titles = db.session.scalars(
            sa.select(Article.title).where(Article.title.like(pattern))
        )
        return list(titles)

    # [end views]

    # [cli]
    @app.cli.command("count-articles")
    def count_articles():
        # Outside requests the primary is used, unless asked otherwise.
        with db.replica():
            count = db.session.scalar(sa.select(sa.func.count(Article.id)))
        click.echo(f"{count} articles")

    # [end cli]
    return app


# [blueprint]
admin = db.primary_only(Blueprint("admin", __name__, url_prefix="/admin"))


@admin.get("/articles")
def admin_articles():
    with db.replica():  # a report that may lag a little
        total = db.session.scalar(sa.select(sa.func.count(Article.id)))
    return {"total": total}


# [end blueprint]
