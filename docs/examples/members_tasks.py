"""Celery tasks on the members' models."""

# [celery-app]
from celery import Celery
from celery import Task
from celery import shared_task
from celery.utils import uuid
from flask import Flask
from flask import request
from members import User
from members import db


def celery_init_app(app):
    """Make the Celery app of ``app``: every task runs in an app context of its own."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():  # the task's own db.session, closed at the end
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


# [end celery-app]


# [task]
@shared_task
def rename_user(user_id, name):
    user = db.session.get(User, user_id)
    user.name = name
    db.session.commit()  # nothing is committed for a task: commit explicitly
    return name


# [end task]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)
    celery_init_app(app)

    # [view]
    @app.post("/users/<int:user_id>/rename")
    def rename(user_id):
        # Send the task once the request is committed, never if it is rolled
        # back; the task id lets the client ask for the result.
        task_id = uuid()
        args = (user_id, request.form["name"])
        db.on_commit(rename_user.apply_async, args, task_id=task_id)
        return {"task": task_id}, 202

    # [end view]

    return app
