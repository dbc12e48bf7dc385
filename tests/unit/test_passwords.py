"""The new-password rules (pixelfox.passwords), shared by the manager and the web forms."""

from __future__ import annotations

import re

import pytest

from pixelfox import errors
from pixelfox.passwords import check_new_password, password_problem


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "password must be at least 8 characters"),
    ("x" * 1025, "password must be at most 1024 characters"),
    (" " * 8 + "\u3000", "password must not be only spaces, other white space or invisible characters"),
    ("\u200b" * 8, "password must not be only spaces, other white space or invisible characters"),
    ("\ufeff \u2060" * 4, "password must not be only spaces, other white space or invisible characters"),
    ("\ufffd\ufffdabcdefgh", "password must not contain U+FFFD (bytes that are not UTF-8 were sent)"),
    ("secret\x00password", "password must not contain control characters (U+0000)"),
    ("esc\x1b[31mpassword", "password must not contain control characters (U+001B)"),
    ("tab\tin password", "password must not contain control characters (U+0009)"),
    ("del\x7fpassword", "password must not contain control characters (U+007F)"),
])
def test_a_bad_new_password_is_refused_with_its_reason(password: str, problem: str) -> None:
    assert password_problem(password) == problem
    with pytest.raises(errors.BadRequest, match=re.escape(problem)):
        check_new_password(password)


@pytest.mark.parametrize("password", ["correct horse", "x" * 8, "x" * 1024, "пароль-пароль", "emoji 🦊🦊🦊🦊"])
def test_a_good_new_password_passes(password: str) -> None:
    assert password_problem(password) == ""
    check_new_password(password)
