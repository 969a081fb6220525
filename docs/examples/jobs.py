"""The background jobs page's application: reports built outside requests."""

import multiprocessing
import threading

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask import current_app

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Report(Base):
    __tablename__ = "report"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(20), default="pending")


# [app-context-job]
def build_report(app, report_id):
    """A job: takes the app and an id, never a model instance from a request."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        report.status = "done"
        db.session.commit()  # outside requests, nothing is committed for you


# [end app-context-job]


# [sessionmaker-job]
def reset_reports(app):
    """A job with its own session, committed when the block ends without error."""
    with app.app_context(), db.sessionmaker.begin() as session:
        session.execute(sa.update(Report).values(status="pending"))


# [end sessionmaker-job]


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)

    # [thread]
    @app.post("/reports")
    def request_report():
        report = Report()
        db.session.add(report)
        db.session.flush()  # assigns report.id
        app = current_app._get_current_object()
        # Start the job only once the report is committed, or it might not
        # find it; the job gets the id, not the object.
        db.on_commit(start_thread, build_report, app, report.id)
        return {"id": report.id}, 202

    # [end thread]

    return app


def start_thread(func, *args):
    thread = threading.Thread(target=func, args=args)
    thread.start()
    return thread


# [fork]
def build_reports_in_processes(app, report_ids):
    """Run one job per forked process, as a prefork worker pool does."""
    fork = multiprocessing.get_context("fork")
    processes = [
        fork.Process(target=build_report, args=(app, report_id))
        for report_id in report_ids
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [process.exitcode for process in processes]


# [end fork]
