"""JSON API for images and albums (list, get, update, delete) and its OpenAPI document.

Auth as in :mod:`web.views.api`: an API key (``Authorization: Bearer`` / ``X-API-Key``) or the
session cookie plus ``X-CSRF-Token`` for changes. Bodies are read by :mod:`web.jsonbody` and
validated with pydantic (unknown fields refused); errors are ``{"error": {"code", "message"}}`` with the matching 4xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from pixelfox import errors
from pixelfox.client.images import served_original_url
from pixelfox.numbers import ascii_int
from pixelfox.text import normalized
from pixelfox.v1 import common_pb2, manager_pb2
from web.calls import call, load_image
from web.jsonbody import read_model, refusal
from web.paging import fetch_page
from web.views.api import Caller, image_json, resolve_caller
from web.views.common import once_in_query
from web.views.openapi import OPENAPI

SLUG = r"^[A-Za-z0-9_-]{1,64}$"
MAX_LIST = 200
def _counted(max_length: int, *, min_length: int = 0, multiline: bool = False) -> BeforeValidator:
    """A text field's length check on the text as the manager stores it (:func:`pixelfox.text.normalized`,
    as the web forms count it): a description's line breaks one character each, CRLF or not (a textarea's
    ``maxlength`` counts so), and spaces around it not at all (2,000 characters plus a trailing space
    were a 400 here and saved by the form). The value goes on unchanged: the manager checks and trims it."""
    def check(value: Any) -> Any:
        if isinstance(value, str):
            length = len(normalized(value, multiline=multiline))
            if length > max_length:
                raise PydanticCustomError("string_too_long", "String should have at most {max_length} characters",
                                          {"max_length": max_length})
            if length < min_length:
                raise PydanticCustomError("string_too_short", "String should have at least {min_length} character",
                                          {"min_length": min_length})
        return value
    return BeforeValidator(check)


Title = Annotated[str, _counted(255)]
AlbumTitle = Annotated[str, _counted(255, min_length=1)]
Description = Annotated[str, _counted(2000, multiline=True)]


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title | None = None
    description: Description | None = None
    visibility: Literal["public", "private"] | None = None  # says "Input should be 'public' or 'private'"
    keep_metadata: StrictBool | None = None  # true or false, not "yes" or 1


class AlbumCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: AlbumTitle
    description: Description = ""


class AlbumPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: AlbumTitle | None = None
    description: Description | None = None
    add_images: list[str] = Field(default_factory=list, max_length=100)
    remove_images: list[str] = Field(default_factory=list, max_length=100)
    cover: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _add_or_remove(self) -> AlbumPatch:
        """An image in both lists is refused, naming it: which was meant? (it ended up removed)"""
        both = [slug for slug in dict.fromkeys(self.add_images) if slug in set(self.remove_images)]
        if both:
            raise refusal(f"image {both[0][:64]} is in both add_images and remove_images: add or remove it")
        return self


def _need_user(caller: Caller) -> None:
    if caller.via == "anonymous":
        raise errors.Unauthenticated("log in or send an API key")


def _limit(request: web.Request) -> int:
    once_in_query(request, "limit")
    limit = ascii_int(request.query.get("limit", "50"), max_digits=6)
    if limit is None or not 1 <= limit <= MAX_LIST:
        raise errors.BadRequest(f"limit must be 1-{MAX_LIST}")
    return limit


def _cursor(request: web.Request) -> str:
    once_in_query(request, "before")
    before = request.query.get("before", "")
    if len(before) > 64:
        raise errors.BadRequest("before: at most 64 characters")
    return before


def public_image_json(request: web.Request, image: common_pb2.Image, caller: Caller) -> dict[str, Any]:
    """:func:`image_json` plus description, keep_metadata and owner. ``original_url`` is the stored upload (with its
    metadata) only for the owner, an admin, or when the owner opted in; anyone else gets the clean
    original (metadata removed), or ``""`` while processing."""
    body = image_json(request, image)
    owner = caller.user is not None and (caller.user.id == image.owner_id or caller.user.role == "admin")
    body["original_url"] = served_original_url(image, with_metadata=image.keep_metadata or owner)
    body.update(
        description=image.description,
        keep_metadata=image.keep_metadata,
        owner=image.owner,
    )
    return body


def album_json(request: web.Request, album: manager_pb2.Album, caller: Caller) -> dict[str, Any]:
    return {
        "id": album.slug,
        "url": album.url,
        "title": album.title,
        "description": album.description,
        "owner": album.owner,
        "cover": album.cover_slug,
        "cover_url": album.cover_url,
        "created_at": album.created_at,
        "image_count": album.image_count,
        "images": [public_image_json(request, i, caller) for i in album.images],
    }


async def _listing(request: web.Request, caller: Caller, method: str,
                   request_cls: type[manager_pb2.ListImagesRequest] | type[manager_pb2.ListAlbumsRequest],
                   field: str) -> tuple[list[Any], str | None]:
    """One page of the caller's ``method`` list (``?limit``, ``?before``) and the next page's cursor."""

    async def fetch(n: int, cursor: str) -> Sequence[Any]:
        return getattr(await call(request, method, request_cls(limit=n, before=cursor), caller.metadata), field)

    page, nxt = await fetch_page(fetch, _limit(request), _cursor(request))
    return page, nxt or None


async def list_images(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=False)
    _need_user(caller)
    page, nxt = await _listing(request, caller, "ListImages", manager_pb2.ListImagesRequest, "images")
    return web.json_response({"images": [public_image_json(request, i, caller) for i in page], "next_before": nxt})


async def get_image(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=False)
    # a signed-in caller may be the owner: the manager's answer has the owner-only location
    image = await load_image(request, request.match_info["slug"], caller.metadata, fresh=caller.via != "anonymous")
    return web.json_response(public_image_json(request, image, caller))


def _merge(req: Any, patch: BaseModel, clearable: tuple[str, ...], required: tuple[str, ...],
           renamed: dict[str, str] | None = None) -> None:
    """Copy the fields the client sent from ``patch`` to the request message, as a JSON merge
    patch (RFC 7396): a field left out stays as it is; ``null`` clears a ``clearable`` text
    field (to ""), and is a BadRequest for a ``required`` one (it has no empty value).
    ``renamed`` maps a JSON name to its message field when they differ."""
    for name in clearable + required:
        if name not in patch.model_fields_set:
            continue
        value = getattr(patch, name)
        if value is None and name in required:
            raise errors.BadRequest(f"{name} cannot be null; leave it out to keep it")
        setattr(req, (renamed or {}).get(name, name), "" if value is None else value)


async def update_image(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    _need_user(caller)
    patch: ImagePatch = await read_model(request, ImagePatch)
    req = manager_pb2.UpdateImageRequest(slug=request.match_info["slug"])
    _merge(req, patch, clearable=("title", "description"), required=("visibility", "keep_metadata"))
    image = await call(request, "UpdateImage", req, caller.metadata, timeout_s=120)
    return web.json_response(public_image_json(request, image, caller))


async def delete_image(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    _need_user(caller)
    reply = await call(request, "DeleteImage", manager_pb2.DeleteImageRequest(slug=request.match_info["slug"]),
                       caller.metadata, timeout_s=120)
    return web.json_response({"deleted": reply.deleted, "objects_deleted": reply.objects_deleted,
                              "objects_pending": reply.objects_pending})


async def list_albums(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=False)
    _need_user(caller)
    page, nxt = await _listing(request, caller, "ListAlbums", manager_pb2.ListAlbumsRequest, "albums")
    return web.json_response({"albums": [album_json(request, a, caller) for a in page], "next_before": nxt})


async def create_album(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    _need_user(caller)
    body: AlbumCreate = await read_model(request, AlbumCreate)
    album = await call(request, "CreateAlbum",
                       manager_pb2.CreateAlbumRequest(title=body.title, description=body.description), caller.metadata)
    return web.json_response(album_json(request, album, caller), status=201)


async def get_album(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=False)
    album = await call(request, "GetAlbum", manager_pb2.GetAlbumRequest(slug=request.match_info["slug"]),
                       caller.metadata)
    return web.json_response(album_json(request, album, caller))


async def update_album(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    _need_user(caller)
    patch: AlbumPatch = await read_model(request, AlbumPatch)
    req = manager_pb2.UpdateAlbumRequest(slug=request.match_info["slug"], add_images=patch.add_images,
                                         remove_images=patch.remove_images)
    _merge(req, patch, clearable=("description", "cover"), required=("title",), renamed={"cover": "cover_slug"})
    album = await call(request, "UpdateAlbum", req, caller.metadata)
    return web.json_response(album_json(request, album, caller))


async def delete_album(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    _need_user(caller)
    reply = await call(request, "DeleteAlbum", manager_pb2.DeleteAlbumRequest(slug=request.match_info["slug"]),
                       caller.metadata)
    return web.json_response({"deleted": reply.deleted})


async def openapi(request: web.Request) -> web.Response:
    doc = dict(OPENAPI)
    doc["servers"] = [{"url": str(request.url.origin())}]
    return web.json_response(doc)


def setup(app: web.Application) -> None:
    r = app.router
    s = "{slug:[A-Za-z0-9_-]{1,64}}"
    r.add_get("/api/v1/openapi.json", openapi, name="api_openapi")
    r.add_get("/api/v1/images", list_images, name="api_images")
    r.add_patch(f"/api/v1/images/{s}", update_image, name="api_image_patch")
    r.add_delete(f"/api/v1/images/{s}", delete_image, name="api_image_delete")
    r.add_get("/api/v1/albums", list_albums, name="api_albums")
    r.add_post("/api/v1/albums", create_album, name="api_album_create")
    r.add_get(f"/api/v1/albums/{s}", get_album, name="api_album")
    r.add_patch(f"/api/v1/albums/{s}", update_album, name="api_album_patch")
    r.add_delete(f"/api/v1/albums/{s}", delete_album, name="api_album_delete")
