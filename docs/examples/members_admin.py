"""Flask-Admin views on the members' models."""

from flask import Flask
from flask_admin import Admin
from flask_admin.contrib.sqla import ModelView
from members import Team
from members import User
from members import db


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)  # Flask-Admin's messages need a SECRET_KEY
    db.init_app(app)

    # [admin]
    admin = Admin(app, name="Members")
    admin.add_view(ModelView(User, db.scoped_session))
    admin.add_view(ModelView(Team, db.scoped_session))
    # [end admin]

    return app
