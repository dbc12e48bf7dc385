"""The rule for a user name, in one place: the manager (``CreateUser``, so ``pixelfox users create``
too) and the web's register form ask :func:`is_user_name`.

A name is 3 to 32 ASCII letters, digits, ``_``, ``.`` or ``-``, the whole of it: a pattern ending
in ``$`` used with ``re.match`` also took a name with a line break at its end (``"eve\\n"``), a
second account that lists as "eve" and that nobody can log in to.
"""

from __future__ import annotations

import re

USER_NAME = re.compile(r"[A-Za-z0-9_.-]{3,32}", re.ASCII)
#: the rule in words, for error messages
USER_NAME_RULE = "user name must be 3-32 characters: ASCII letters (a-z, A-Z), digits, '_', '.', '-'"


def is_user_name(name: str) -> bool:
    """Whether all of ``name`` follows :data:`USER_NAME`."""
    return USER_NAME.fullmatch(name) is not None
