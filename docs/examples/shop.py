"""The binds page's application: orders in one database, an audit log in another."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import request

from flask_session_orm import SessionORM

db = SessionORM()


# [models]
class Base(orm.DeclarativeBase):
    pass


class Order(Base):
    # No bind: the "default" engine.
    __tablename__ = "shop_order"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    product: orm.Mapped[str] = orm.mapped_column(sa.String(100))


class AuditBase(Base):
    # Every subclass of AuditBase lives in the "audit" database.
    __abstract__ = True
    __bind_key__ = "audit"


class AuditEntry(AuditBase):
    __tablename__ = "audit_entry"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    message: orm.Mapped[str] = orm.mapped_column(sa.String(200))


# A table without a model, in the "audit" database too (see SESSION_ORM_BINDS).
login_attempt = sa.Table(
    "login_attempt",
    Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(100)),
)
# [end models]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [views]
    @app.post("/orders")
    def place_order():
        product = request.form["product"]
        order = Order(product=product)
        db.session.add(order)  # -> the "default" database
        db.session.add(AuditEntry(message=f"order for {product}"))  # -> "audit"
        db.session.execute(  # a Core statement goes where its table is bound
            sa.insert(login_attempt).values(username=request.form["user"])
        )
        return "ordered", 201  # both databases are committed

    @app.get("/audit/count")
    def audit_count():
        # Text SQL names no table: tell the session which engine to use.
        count = db.session.scalar(
            sa.text("SELECT count(*) FROM audit_entry"),
            bind_arguments={"bind": db.get_engine("audit")},
        )
        return {"count": count}

    # [end views]

    return app
