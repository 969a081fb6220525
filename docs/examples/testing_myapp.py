"""The application the testing page tests: notes, stored with flask-session-orm."""

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "testing_note"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(200), unique=True)


def create_app(config=None):
    app = flask.Flask(__name__)
    app.config.from_mapping(config or {})
    db.init_app(app)

    @app.post("/notes")
    def add_note():
        note = Note(text=flask.request.json["text"])
        db.session.add(note)
        db.session.flush()
        return {"id": note.id}, 201

    @app.post("/notes/import")
    def import_notes():
        ids = []
        for text in flask.request.json["texts"]:
            if not text.strip():
                raise ValueError("empty note")
            note = Note(text=text)
            db.session.add(note)
            db.session.flush()
            ids.append(note.id)
        return {"ids": ids}, 201

    @app.get("/notes")
    def list_notes():
        return list(db.session.scalars(sa.select(Note.text).order_by(Note.id)))

    return app
