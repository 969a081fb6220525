"""A unittest suite of the migrated blog, with the teardown the guide shows."""

# [unittest]
import os
import unittest

import sqlalchemy as sa
from migrate_after import Author
from migrate_after import create_app
from migrate_after import db


class AuthorTestCase(unittest.TestCase):
    def setUp(self):
        self.app = create_app(
            {
                "TESTING": True,
                "SESSION_ORM_DATABASE_URL": os.environ.get(
                    "TEST_DATABASE_URL", "sqlite://"
                ),
                "SESSION_ORM_ENGINES": {"stats": "sqlite://"},
            }
        )
        self.app_context = self.app.app_context()
        self.app_context.push()
        db.create_all()

    def tearDown(self):
        db.session.close()  # was db.session.remove(); or commit
        db.drop_all()
        self.app_context.pop()

    # [end unittest]

    def test_add_author(self):
        db.session.add(Author(name="Bo"))
        db.session.commit()
        response = self.app.test_client().post("/authors", data={"name": "Al"})
        self.assertEqual(response.status_code, 201)
        count = db.session.scalar(sa.select(sa.func.count(Author.id)))
        self.assertEqual(count, 2)  # the test's session is in a transaction now
