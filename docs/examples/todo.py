"""The quickstart application: a to-do list with an app factory.

Each section starts with the imports it uses, so that every snippet the
quickstart page shows is complete.
"""

# [extension]
from flask_session_orm import SessionORM

db = SessionORM()
# [end extension]

# [models]
import sqlalchemy as sa
import sqlalchemy.orm as orm


class Base(orm.DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todo"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    done: orm.Mapped[bool] = orm.mapped_column(default=False)

    def to_dict(self):
        return {"id": self.id, "title": self.title, "done": self.done}


# [end models]


# [factory]
from flask import Flask


def create_app(test_config=None):
    app = Flask(__name__)
    app.config.from_mapping(SESSION_ORM_DATABASE_URL="sqlite:///todo.db")
    # FLASK_SESSION_ORM_DATABASE_URL=postgresql+psycopg://... in the environment
    # overrides the default above.
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.update(test_config)

    db.init_app(app)

    @app.cli.command("init-db")
    def init_db():
        """Create the tables."""
        db.create_all(Base)
        print("Created the tables.")

    register_views(app)
    return app


# [end factory]


# [views]
from flask import abort
from flask import request


def register_views(app):
    @app.get("/todos")
    def list_todos():
        todos = db.session.scalars(sa.select(Todo).order_by(Todo.id))
        return [todo.to_dict() for todo in todos]

    @app.post("/todos")
    def add_todo():
        title = request.json.get("title", "").strip()
        todo = Todo(title=title)
        db.session.add(todo)
        if not title:
            # A 4xx response: the request is rolled back, nothing is stored.
            return {"error": "A title is required."}, 400
        db.session.flush()  # sends the INSERT now, so todo.id is known
        return todo.to_dict(), 201

    @app.post("/todos/<int:todo_id>/done")
    def mark_done(todo_id):
        todo = db.session.get(Todo, todo_id)
        if todo is None:
            abort(404)
        todo.done = True
        return todo.to_dict()


# [end views]
