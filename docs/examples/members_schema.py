"""A JSON API on the members' models with marshmallow-sqlalchemy."""

# [schema]
from flask import Flask
from flask import request
from marshmallow import ValidationError
from marshmallow_sqlalchemy import SQLAlchemyAutoSchema
from members import User
from members import db


class UserSchema(SQLAlchemyAutoSchema):
    class Meta:
        model = User
        include_fk = True
        load_instance = True  # load() gives User objects...
        sqla_session = db.scoped_session  # ...looked up in the request's session


user_schema = UserSchema()
# [end schema]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [views]
    @app.post("/api/users")
    def create_user():
        user = user_schema.load(request.json)
        db.session.add(user)
        db.session.flush()  # assigns user.id
        return user_schema.dump(user), 201

    @app.patch("/api/users/<int:user_id>")
    def update_user(user_id):
        # With the primary key in the data, load() updates the stored user.
        user = user_schema.load({**request.json, "id": user_id}, partial=True)
        return user_schema.dump(user)

    @app.errorhandler(ValidationError)
    def invalid(error):
        return {"errors": error.messages}, 422  # rolled back

    # [end views]

    return app
