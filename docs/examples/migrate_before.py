"""Before: an application written for Flask-SQLAlchemy 3.1."""

# [models]
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import flash
from flask import get_flashed_messages
from flask import redirect
from flask import request
from flask_sqlalchemy import SQLAlchemy


class Base(orm.DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Author(db.Model):
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100), unique=True)


class Visit(db.Model):
    __bind_key__ = "stats"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    path: orm.Mapped[str] = orm.mapped_column(sa.String(200))


favourite = db.Table(
    "favourite",
    db.Column("author_id", db.ForeignKey("author.id"), primary_key=True),
    db.Column("reader", db.String(50), primary_key=True),
)
# [end models]


OUTBOX = []  # stands in for Flask-Mail


def send_welcome(name):
    OUTBOX.append(f"Welcome, {name}!")


# [factory]
def create_app(config):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change me"
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///blog.db"
    app.config["SQLALCHEMY_BINDS"] = {"stats": "sqlite:///stats.db"}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_recycle": 600}
    app.config["SQLALCHEMY_ECHO"] = False
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        db.create_all()
    # [end factory]

    # [views]
    @app.post("/authors")
    def add_author():
        author = Author(name=request.form["name"])
        db.session.add(author)
        db.session.add(Visit(path=request.path))
        db.session.commit()  # forget this line and nothing is stored
        send_welcome(author.name)
        return {"id": author.id}, 201

    @app.post("/signup")
    def sign_up():
        db.session.add(Author(name=request.form["name"]))
        db.session.commit()
        flash("Welcome aboard!")
        return redirect("/messages")

    @app.get("/authors/<int:author_id>")
    def get_author(author_id):
        author = db.get_or_404(Author, author_id)
        return {"name": author.name}

    @app.get("/authors")
    def list_authors():
        authors = db.session.execute(db.select(Author).order_by(Author.name))
        return [author.name for author in authors.scalars()]

    @app.get("/authors/count")
    async def count_authors():
        return {"count": db.session.scalar(db.select(db.func.count(Author.id)))}

    # [end views]

    @app.get("/messages")
    def messages():
        return get_flashed_messages()

    return app
