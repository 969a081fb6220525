"""After: the same application with flask-session-orm."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import request

from flask_session_orm import SessionORM


# [models]
class Base(orm.DeclarativeBase):
    pass


db = SessionORM()


class Author(Base):
    __tablename__ = "author"  # Flask-SQLAlchemy derived it from the class name
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100))


class Visit(Base):
    __tablename__ = "visit"
    __bind_key__ = "stats"  # the same attribute, the same meaning
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    path: orm.Mapped[str] = orm.mapped_column(sa.String(200))


# [end models]


# [factory]
def create_app(config):
    app = Flask(__name__)
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///blog.db"
    app.config["SESSION_ORM_ENGINES"] = {"stats": "sqlite:///stats.db"}
    app.config["SESSION_ORM_ENGINE_OPTIONS"] = {"pool_recycle": 600}
    app.config["SESSION_ORM_ECHO"] = False
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        db.create_all(Base)  # the tables of this base, each on its engine
    # [end factory]

    # [views]
    @app.post("/authors")
    def add_author():
        author = Author(name=request.form["name"])
        db.session.add(author)
        db.session.add(Visit(path=request.path))
        db.session.flush()  # no commit: it happens when the view returns 201
        return {"id": author.id}, 201

    @app.get("/authors/<int:author_id>")
    def get_author(author_id):
        author = db.get_or_404(Author, author_id)  # unchanged
        return {"name": author.name}

    @app.get("/authors")
    def list_authors():
        authors = db.session.scalars(sa.select(Author).order_by(Author.name))
        return [author.name for author in authors]

    # [end views]

    return app
