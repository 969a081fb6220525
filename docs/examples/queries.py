import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask_debugtoolbar import DebugToolbarExtension

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "author"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    books: orm.Mapped[list["Book"]] = orm.relationship(back_populates="author")


class Book(Base):
    __tablename__ = "book"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    author_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("author.id"))
    author: orm.Mapped[Author] = orm.relationship(back_populates="books")


app = flask.Flask(__name__)
app.config.update(
    SESSION_ORM_DATABASE_URL="sqlite:///library.db",
    # [toolbar-config]
    SECRET_KEY="dev",  # Flask-DebugToolbar needs one
    DEBUG_TB_PANELS=[
        "flask_debugtoolbar.panels.timer.TimerDebugPanel",
        "flask_debugtoolbar.panels.headers.HeaderDebugPanel",
        "flask_debugtoolbar.panels.logger.LoggingPanel",
        # Instead of "flask_debugtoolbar.panels.sqlalchemy.SQLAlchemyDebugPanel",
        # which reads Flask-SQLAlchemy's recorded queries only:
        "flask_session_orm.debugtoolbar.QueriesPanel",
    ],
    # [end toolbar-config]
)
db = SessionORM(app)
toolbar = DebugToolbarExtension(app)  # on with 'flask run --debug'

PAGE = """<!doctype html>
<html><body><ul>
{% for author in authors %}
  <li>{{ author.name }}: {{ author.books | map(attribute="title") | join(", ") }}</li>
{% endfor %}
</ul></body></html>"""


# [nplusone]
@app.get("/")
def authors():
    # N+1: the template reads author.books, one lazy load per author.
    authors = db.session.scalars(sa.select(Author).order_by(Author.name))
    return flask.render_template_string(PAGE, authors=authors)


@app.get("/fixed")
def authors_fixed():
    # Two statements whatever the number of authors: one for the authors, one
    # for all their books.
    query = sa.select(Author).order_by(Author.name)
    query = query.options(orm.selectinload(Author.books))
    return flask.render_template_string(PAGE, authors=db.session.scalars(query))


# [end nplusone]


# [recorded]
@app.get("/debug/queries")
def queries():
    db.session.scalars(sa.select(Author)).all()
    return [
        {
            "sql": query.statement,
            "ms": round(query.duration * 1000, 3),
            "engine": query.engine,
            "at": query.location,
        }
        for query in db.recorded_queries()
    ]


# [end recorded]


@app.cli.command("seed")
def seed():
    """Create the tables and a few authors with two books each."""
    db.create_all(Base)
    for i in range(1, 9):
        books = [Book(title=f"Volume {i}.{n}") for n in (1, 2)]
        db.session.add(Author(name=f"Author {i}", books=books))
    db.session.commit()
