"""``flask --app example_app seed``: add a few bookmarks from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from . import bookmarks
from . import db

SAMPLES = [
    {
        "url": "https://flask.palletsprojects.com/",
        "title": "Flask documentation",
        "note": "The framework.",
        "tags": "flask, python",
    },
    {
        "url": "https://docs.sqlalchemy.org/en/20/orm/session_basics.html",
        "title": "SQLAlchemy: Session basics",
        "note": "What a session is, and when to commit.",
        "tags": "sqlalchemy, python",
    },
    {
        "url": "https://www.postgresql.org/docs/current/sql-savepoint.html",
        "title": "PostgreSQL: SAVEPOINT",
        "note": "",
        "tags": "postgresql",
    },
]


@click.command("seed")
@with_appcontext
def seed() -> None:
    """Add a few example bookmarks; links already saved are left alone."""
    added = 0
    for sample in SAMPLES:
        fields = {k: v for k, v in sample.items() if k != "tags"}
        if bookmarks.find_by_url(fields["url"]) is None:
            bookmarks.create(fields, bookmarks.clean_tags(sample["tags"]))
            added += 1
    # Outside a request nothing is committed for you: without this line the
    # bookmarks would be rolled back (with a warning in the log) when the app
    # context ends. The audit entries are written after this commit.
    db.session.commit()
    click.echo(f"Added {added} bookmark(s).")
