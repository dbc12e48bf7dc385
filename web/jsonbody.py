"""JSON request bodies of the API, read in one place: parsed, bounded in depth, validated with pydantic.

Every failure is a :class:`~pixelfox.errors.BadRequest` (400) with a message that says what is wrong:
not JSON, not an object, nested deeper than :data:`MAX_DEPTH` (Python's parser would otherwise hit
its recursion limit, a 500), or the first field pydantic refused.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pixelfox import errors

MAX_DEPTH = 16  # our bodies are an object of scalars and lists of strings: depth 2
M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as ``model``; an empty body is ``{}``."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except RecursionError:
        raise errors.BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest("the body must be JSON") from None
    if _depth(data) > MAX_DEPTH:
        raise errors.BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        raise errors.BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise errors.BadRequest(f"{where}: {first['msg']}") from None


def _depth(data: Any) -> int:
    """How deep objects and arrays nest in ``data`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest
