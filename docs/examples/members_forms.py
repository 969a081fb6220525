"""HTML forms for the members' models with WTForms-SQLAlchemy."""

# [model-form]
import sqlalchemy as sa
from flask import Flask
from flask import abort
from flask import redirect
from flask import render_template_string
from flask import request
from members import Team
from members import User
from members import db
from wtforms import Form
from wtforms_sqlalchemy.fields import QuerySelectField
from wtforms_sqlalchemy.orm import model_form

# The team field lists the teams with db_session.query(Team), per request.
UserForm = model_form(
    User, db_session=db.scoped_session, base_class=Form, only=["name", "email", "team"]
)
# [end model-form]


# [query-select]
def teams():
    # Called when the form is rendered or validated, so inside the request.
    return db.session.scalars(sa.select(Team).order_by(Team.name)).all()


class MoveForm(Form):
    team = QuerySelectField(query_factory=teams, get_label="name")


# [end query-select]

PAGE = "<form method=post>{% for field in form %}{{ field() }}{% endfor %}</form>"


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [views]
    @app.route("/users/new", methods=["GET", "POST"])
    def new_user():
        form = UserForm(request.form)
        if request.method == "POST" and form.validate():
            user = User()
            form.populate_obj(user)
            db.session.add(user)
            return redirect("/users/new")
        return render_template_string(PAGE, form=form), 400 if form.errors else 200

    @app.route("/users/<int:user_id>/team", methods=["GET", "POST"])
    def move_user(user_id):
        user = db.session.get(User, user_id)
        if user is None:
            abort(404)
        form = MoveForm(request.form, obj=user)
        if request.method == "POST" and form.validate():
            form.populate_obj(user)
            return redirect(f"/users/{user_id}/team")
        return render_template_string(PAGE, form=form), 400 if form.errors else 200

    # [end views]

    return app
