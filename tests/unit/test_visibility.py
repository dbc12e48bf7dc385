"""The visibility an upload asks for (:func:`pixelfox.visibility.asked_visibility`)."""

from __future__ import annotations

import pytest

from pixelfox import errors
from pixelfox.visibility import asked_visibility


@pytest.mark.parametrize(("given", "taken"), [(None, "public"), ("", "public"), ("public", "public"),
                                              (" public ", "public"), ("private", "private"),
                                              ("private\n", "private")])
def test_public_or_private(given: str | None, taken: str) -> None:
    assert asked_visibility(given) == taken


@pytest.mark.parametrize(("given", "said"), [
    ("Private", "visibility must be public or private, not 'Private'"),
    ("secret", "visibility must be public or private, not 'secret'"),
    ("x" * 30, f"visibility must be public or private, not {'x' * 20!r}"),
])
def test_anything_else_is_refused_by_name(given: str, said: str) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        asked_visibility(given)
    assert str(refused.value) == said
