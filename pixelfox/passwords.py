"""The rules for a new password, in one place: the manager (``CreateUser``, ``ChangePassword``, so
``pixelfox users create`` too) and the web forms (register, Settings) all ask :func:`password_problem`.

A password is 8 to 1024 characters (argon2 hashes any length, but a megabyte password is only a
way to burn CPU), not only white space or invisible characters (eight spaces pass a length check
and guess easily), without control characters (no login form can type them) and without U+FFFD
(what bytes that are not UTF-8 decode to).
"""

from __future__ import annotations

import unicodedata

from pixelfox import errors

MIN_PASSWORD = 8  # characters
MAX_PASSWORD = 1024  # characters; a longer password at login is wrong (checked against a dummy hash)


def password_problem(password: str) -> str:
    """Why ``password`` cannot be a new password, as a lower-case sentence without a final stop
    (``"password must be at least 8 characters"``); ``""`` when it can."""
    if len(password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    if all(c.isspace() or unicodedata.category(c) == "Cf" for c in password):
        # eight zero-width spaces (U+200B, category Cf) passed: a password that shows as nothing
        return "password must not be only spaces, other white space or invisible characters"
    if control := next((c for c in password if unicodedata.category(c) == "Cc"), None):
        # no login form can type one (a NUL or an ESC from a file given to --password-stdin): an
        # account nobody could log in to through the web
        return f"password must not contain control characters (U+{ord(control):04X})"
    if "\ufffd" in password:
        # what a form's bytes that are not UTF-8 decode to: any other such bytes would log in too
        return "password must not contain U+FFFD (bytes that are not UTF-8 were sent)"
    return ""


def check_new_password(password: str) -> None:
    """Raise :class:`~pixelfox.errors.BadRequest` with :func:`password_problem`'s reason, if any."""
    if problem := password_problem(password):
        raise errors.BadRequest(problem)
