"""After: the same application with flask-session-orm."""

# [models]
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import flash
from flask import get_flashed_messages
from flask import redirect
from flask import request

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):  # the class you passed as model_class
    pass


db = SessionORM(metadata=Base)  # for db.metadata, create_all() and Flask-Migrate


class Author(Base):
    __tablename__ = "author"  # Flask-SQLAlchemy derived it from the class name
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100), unique=True)


class Visit(Base):
    __tablename__ = "visit"
    __bind_key__ = "stats"  # the same attribute, the same meaning
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    path: orm.Mapped[str] = orm.mapped_column(sa.String(200))


favourite = sa.Table(
    "favourite",
    db.metadata,  # Base.metadata: no app context needed
    sa.Column("author_id", sa.ForeignKey("author.id"), primary_key=True),
    sa.Column("reader", sa.String(50), primary_key=True),
)
# [end models]


OUTBOX = []  # stands in for Flask-Mail


def send_welcome(name):
    OUTBOX.append(f"Welcome, {name}!")


# [factory]
def create_app(config):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "change me"
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///blog.db"
    app.config["SESSION_ORM_ENGINES"] = {"stats": "sqlite:///stats.db"}
    app.config["SESSION_ORM_ENGINE_OPTIONS"] = {"pool_recycle": 600}
    app.config["SESSION_ORM_ECHO"] = False
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        db.create_all()  # the registered tables, each on its engine
    # [end factory]

    # [views]
    @app.post("/authors")
    def add_author():
        author = Author(name=request.form["name"])
        db.session.add(author)
        db.session.add(Visit(path=request.path))
        db.session.flush()  # sends the INSERTs: author.id is set; no commit
        db.on_commit(send_welcome, author.name)  # mail only what is stored
        return {"id": author.id}, 201  # committed before the 201 leaves

    @app.post("/signup")
    def sign_up():
        db.session.add(Author(name=request.form["name"]))
        db.on_commit(flash, "Welcome aboard!")  # shown only if the commit works
        return redirect("/messages")

    @app.get("/authors/<int:author_id>")
    def get_author(author_id):
        author = db.get_or_404(Author, author_id)  # unchanged
        return {"name": author.name}

    @app.get("/authors")
    def list_authors():
        authors = db.session.scalars(sa.select(Author).order_by(Author.name))
        return [author.name for author in authors]

    @app.get("/authors/count")
    async def count_authors():  # async views work: pip install "flask[async]"
        return {"count": db.session.scalar(sa.select(sa.func.count(Author.id)))}

    # [end views]

    @app.get("/messages")
    def messages():
        return get_flashed_messages()

    return app
