"""The request lifecycle page's application: what is committed and what is not."""

import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.orm as orm
from flask import Flask
from flask import abort
from flask import redirect
from flask import request
from flask import stream_with_context

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)


class Event(Base):
    __tablename__ = "account_event"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(100))


class PaymentDeclined(Exception):
    pass


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [success]
    @app.post("/accounts")
    def open_account():
        db.session.add(Account(name=request.form["name"]))
        return "opened", 201  # below 400: committed before the response is sent

    # [end success]

    # [failure]
    @app.post("/accounts/checked")
    def open_checked_account():
        name = request.form["name"]
        db.session.add(Account(name=name))
        if len(name) < 3:
            return "name too short", 400  # 400 or more: rolled back
        if name == "admin":
            abort(403)  # an HTTP error: rolled back
        if name == "crash":
            raise RuntimeError("bug")  # an exception: a 500, rolled back
        return "opened", 201

    # [end failure]

    # [commit-error]
    @app.errorhandler(sa.exc.IntegrityError)
    def conflict(error):
        # Raised by the commit at the end of the request (the INSERT of a
        # duplicate name is only sent then): the client gets this response,
        # not the view's 201, and nothing is stored.
        return "this name is taken", 409

    # [end commit-error]

    # [handled-exception]
    @app.post("/accounts/paid")
    def open_paid_account():
        db.session.add(Account(name=request.form["name"]))
        db.session.flush()
        if request.form.get("card") == "declined":
            raise PaymentDeclined()
        return "opened", 201

    @app.errorhandler(PaymentDeclined)
    def payment_declined(error):
        # The view raised: what it wrote is rolled back, even though this
        # response is a redirect.
        return redirect("/payment-failed")

    # [end handled-exception]

    # [streaming]
    @app.get("/accounts.csv")
    def export_accounts():
        def rows():
            yield "id,name\n"
            for account in db.session.scalars(sa.select(Account).order_by(Account.id)):
                yield f"{account.id},{account.name}\n"

        return stream_with_context(rows())

    @app.post("/accounts/bulk")
    def open_accounts_streaming():
        names = request.form.getlist("name")

        def progress():
            for name in names:
                db.session.add(Account(name=name))
                yield f"{name}\n"
            # The commit decision was taken before the body was sent:
            # changes made while streaming are committed by the generator.
            db.session.commit()

        return stream_with_context(progress())

    # [end streaming]

    # [after-request]
    @app.after_request
    def record_event(response):
        if response.status_code == 201:
            # Runs before the commit: this change is part of the request's
            # transaction, committed with the account.
            db.session.add(Event(text=f"{request.path} answered 201"))
        return response

    # [end after-request]

    # [cli]
    @app.cli.command("open-account")
    def open_account_command():
        """Open the "ops" account."""
        db.session.add(Account(name="ops"))
        db.session.commit()  # nothing is committed for you outside requests

    # [end cli]

    return app
