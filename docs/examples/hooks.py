"""The hooks page's application: after-commit work, signals, per-view control."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import request

from flask_session_orm import SessionORM
from flask_session_orm import signals

db = SessionORM()

#: Stands in for a mail server: the messages "sent".
outbox = []


class Base(orm.DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "hooks_user"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    email: orm.Mapped[str] = orm.mapped_column(sa.String(100), unique=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100))


# [on-commit]
def send_welcome_mail(address):
    outbox.append(f"Welcome, {address}!")


def sign_up(email, name):
    user = User(email=email, name=name)
    db.session.add(user)
    # Sent only once the user is really stored: never for a rolled-back request.
    db.on_commit(send_welcome_mail, email)
    return user


# [end on-commit]


# [object-session]
def describe(obj):
    """Say where a model instance stands."""
    if db.object_session(obj) is None:
        return "not in a session"  # transient (never added) or detached
    if db.is_deleted(obj):
        return "deleted"
    if db.has_changes(obj, exclude="id"):
        return "changed"
    return "unchanged"


# [end object-session]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [signals]
    stats = app.extensions["stats"] = {"commits": 0, "rollbacks": 0}

    @signals.session_committed.connect_via(app)
    def count_commit(sender, session, **extra):
        stats["commits"] += 1

    @signals.session_rolled_back.connect_via(app)
    def count_rollback(sender, session, **extra):
        stats["rollbacks"] += 1

    # [end signals]

    @app.post("/signup")
    def signup():
        sign_up(request.form["email"], request.form["name"])
        if request.form.get("terms") != "accepted":
            return "please accept the terms", 400  # rolled back: no mail is sent
        return "welcome", 201

    @app.post("/users/<int:user_id>/rename")
    def rename(user_id):
        user = db.session.get(User, user_id)
        user.name = request.form["name"]
        return describe(user)

    # [no-autocommit]
    @app.post("/users/import")
    @db.no_autocommit
    def import_users():
        lines = request.get_data(as_text=True).splitlines()
        errors = []
        for number, line in enumerate(lines, start=1):
            email, _, name = line.partition(",")
            if "@" not in email:
                errors.append(f"line {number}: {email!r} is not an address")
            db.session.add(User(email=email, name=name))
        if not errors:
            db.session.commit()  # all or nothing: this view commits itself
        # A 200 either way; with errors, everything added is rolled back.
        return {"imported": 0 if errors else len(lines), "errors": errors}

    # [end no-autocommit]

    # [mark-for-rollback]
    @app.post("/users/preview")
    def preview_signup():
        user = sign_up(request.form["email"], request.form["name"])
        db.session.flush()  # the database assigns the id and checks constraints
        if request.args.get("dry_run"):
            db.mark_for_rollback()  # answer 200, store nothing, send no mail
        return {"id": user.id}

    # [end mark-for-rollback]

    # [invalidate]
    @app.post("/reports/slow")
    def slow_report():
        try:
            count = db.session.scalar(sa.select(sa.func.count(User.id)))
        except sa.exc.OperationalError:
            # The connection's state is unknown (e.g. a statement timeout):
            # discard it instead of giving it back to the pool.
            db.invalidate()
            return "the report timed out", 503
        return {"users": count}

    # [end invalidate]

    return app
