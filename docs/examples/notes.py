import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import request

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "note"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(200))


app = Flask(__name__)
app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///notes.db"  # in app.instance_path
db = SessionORM(app)

with app.app_context():
    db.create_all(Base)


@app.post("/notes")
def add_note():
    db.session.add(Note(text=request.form["text"]))
    return "created", 201  # committed before this response is sent


@app.get("/notes")
def list_notes():
    return [note.text for note in db.session.scalars(sa.select(Note))]
