"""The retry page's application: a stock that never goes below zero."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import request

from flask_session_orm import SessionORM
from flask_session_orm import signals

db = SessionORM()

#: Stands in for a mail server: the confirmations "sent".
outbox = []


class Base(orm.DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "retry_product"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    stock: orm.Mapped[int]


class Order(Base):
    __tablename__ = "retry_order"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    product_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Product.id))
    quantity: orm.Mapped[int]


# [sqlite]
def begin_with_first_statement(engine):
    """Make Python's sqlite3 begin each transaction at its first statement.

    By default it begins one only before a write, so the reads before it are not
    isolated: a read-then-write would lose concurrent updates.
    """

    @sa.event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def begin(connection):
        connection.exec_driver_sql("BEGIN")


# [end sqlite]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            begin_with_first_statement(db.engine)

    # [order]
    @app.post("/products/<int:product_id>/orders")
    @db.retry(attempts=5)
    @db.transaction(isolation_level="SERIALIZABLE")
    def place_order(product_id):
        quantity = int(request.form["quantity"])
        product = db.session.get_one(Product, product_id)
        if product.stock < quantity:
            return {"error": "out of stock"}, 409
        product.stock -= quantity
        order = Order(product_id=product.id, quantity=quantity)
        db.session.add(order)
        db.session.flush()
        # Not outbox.append(...) here: an attempt that is rolled back and run
        # again would send a confirmation for an order that does not exist.
        db.on_commit(outbox.append, f"order {order.id}: {quantity} x {product.name}")
        return {"order": order.id, "attempt": db.attempt}, 201

    # [end order]

    # [signal]
    retried = app.extensions["retried"] = []

    @signals.request_retried.connect_via(app)
    def log_retry(sender, attempt, exception, **extra):
        sender.logger.info(
            "Attempt %d of %s after: %s", attempt, request.path, exception
        )
        retried.append(attempt)

    # [end signal]

    return app
