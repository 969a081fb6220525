"""factory_boy factories for the members' models."""

# [factories]
import factory
import sqlalchemy as sa
from factory.alchemy import SQLAlchemyModelFactory
from flask import Flask
from members import Team
from members import User
from members import db


class TeamFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Team
        sqlalchemy_session = db.scoped_session
        sqlalchemy_session_persistence = "flush"  # ids assigned, nothing committed

    name = factory.Sequence(lambda n: f"team {n}")


class UserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session = db.scoped_session
        sqlalchemy_session_persistence = "flush"

    name = factory.Sequence(lambda n: f"user {n}")
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    team = factory.SubFactory(TeamFactory)


# [end factories]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [seed]
    @app.post("/dev/seed")
    def seed():
        team = TeamFactory()
        users = UserFactory.create_batch(3, team=team)
        return {"team": team.id, "users": [user.id for user in users]}

    # [end seed]

    @app.get("/users")
    def users():
        names = db.session.scalars(sa.select(User.name).order_by(User.id))
        return list(names)

    return app
