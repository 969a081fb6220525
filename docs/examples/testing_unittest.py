import contextlib
import os
import unittest

from myapp import Base
from myapp import create_app
from myapp import db

URL = os.environ.get("DATABASE_URL", "sqlite:///unittest.db")


class NotesTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.app = create_app({"TESTING": True, "SESSION_ORM_DATABASE_URL": URL})
        with cls.app.app_context():
            db.create_all(Base)

    @classmethod
    def tearDownClass(cls):
        with cls.app.app_context():
            db.drop_all(Base)
            db.engine.dispose()

    def setUp(self):
        stack = contextlib.ExitStack()
        self.addCleanup(stack.close)
        stack.enter_context(db.isolation(self.app))
        self.client = self.app.test_client()

    def test_add_note(self):
        self.client.post("/notes", json={"text": "buy milk"})
        self.assertEqual(self.client.get("/notes").json, ["buy milk"])

    def test_starts_empty(self):
        self.assertEqual(self.client.get("/notes").json, [])


if __name__ == "__main__":
    unittest.main()
