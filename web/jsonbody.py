"""JSON request bodies of the API, read in one place: parsed, bounded in depth, validated with pydantic.

Every failure is a :class:`~pixelfox.errors.BadRequest` (400) with a message that says what is wrong:
empty, not JSON (``NaN`` and ``Infinity``, which Python's parser takes, are not JSON: RFC 8259 §6),
a number longer than :data:`MAX_NUMBER_DIGITS`, a field given twice, not an object, nested deeper than
:data:`MAX_DEPTH` (Python's parser would otherwise hit its recursion limit, a 500), or the first
field pydantic refused (a validator's :func:`refusal` in its own words). The Content-Type is not
checked: scripts often send JSON as ``curl -d`` does, labelled as a form.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from pixelfox import errors

MAX_DEPTH = 16  # our bodies are an object of scalars and lists of strings: depth 2
MAX_NUMBER_DIGITS = 40  # characters of one JSON number; ours fit an int64 (19 digits)
M = TypeVar("M", bound=BaseModel)
#: the pydantic error type of a :func:`refusal`
OWN_WORDS = "pixelfox_own_words"


class _NotJSON(ValueError):
    """A value Python's parser takes but the API refuses; the message says which."""


def _number(text: str) -> int | float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NotJSON(f"a number in the body is longer than {MAX_NUMBER_DIGITS} characters")
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _constant(name: str) -> float:
    raise _NotJSON(f"the body must be JSON: {name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are unique (RFC 8259 §4: they SHOULD be; which one would count? Python's
    parser kept the last, silently)."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise _NotJSON(f"the body gives {json.dumps(name[:64])} more than once: send each field once")
        obj[name] = value
    return obj


def parse(raw: bytes) -> Any:
    """``raw`` parsed as strict JSON (RFC 8259); BadRequest saying why it is not."""
    if not raw.strip():
        raise errors.BadRequest("the body is empty: send a JSON object")
    try:
        return json.loads(raw, parse_int=_number, parse_float=_number, parse_constant=_constant,
                          object_pairs_hook=_object)
    except RecursionError:
        raise errors.BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except _NotJSON as exc:
        raise errors.BadRequest(str(exc)) from None
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest("the body must be JSON") from None


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as ``model``; raises BadRequest (see the module docstring)."""
    data = parse(await request.read())
    if _depth(data) > MAX_DEPTH:
        raise errors.BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        raise errors.BadRequest("the body must be a JSON object")
    return validated(model, data)


def refusal(message: str) -> PydanticCustomError:
    """The error a model's validator raises to refuse a value in ``message``, a whole sentence that
    names the field (``"sha256 must be ..."``): :func:`validated` answers it as it is, not as
    ``"FIELD: MESSAGE"`` (nor with pydantic's ``"Value error, "`` in front, as a ``ValueError`` would be)."""
    return PydanticCustomError(OWN_WORDS, "{message}", {"message": message})  # a client's "{" is not a field


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``; BadRequest naming the first field pydantic refused and why
    (``"visibility: String should match pattern ..."``, or a :func:`refusal`'s own words). Web forms
    that take the API's fields use it too, so both answer the same words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == OWN_WORDS:
            raise errors.BadRequest(first["msg"]) from None
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
