"""Outgoing mail, kept in a list as Flask-Mail's testing mode would."""

from flask import current_app


def send_email(to, subject):
    current_app.extensions.setdefault("outbox", []).append((to, subject))
