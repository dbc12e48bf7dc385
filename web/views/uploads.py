"""Resumable uploads from browsers and scripts: ``POST`` and ``GET /api/v1/uploads``, ``GET`` and
``DELETE /api/v1/uploads/{id}``, ``POST /api/v1/uploads/{id}/ticket``.

``POST`` (API key, or session cookie plus ``X-CSRF-Token``) takes JSON
``{"filename", "size", "content_type", "title", "sha256", "visibility"}`` (all but size optional; ``visibility``
``public``, the default, or ``private``: the image is private from its first answer on, and a ``sha256`` of a
public image of the caller's is no dedup match then) and answers ``201`` with
``{"id", "upload_url", "ticket", "expires_at", "chunk_size", "max_size", "upload_address", "status": "open",
"deduplicated": false}``: the client then speaks tus 1.0 to ``upload_url`` with ``Authorization: Bearer <ticket>``
(or gRPC to ``upload_address``). With a ``sha256`` (the file's, 64 hex digits in either case) of an image the caller
already has (same size, lasting), it answers ``200`` ``{"id": null, "status": "complete", "deduplicated": true,
"image"}`` instead: that image, and no upload to send. Otherwise the bytes sent must have that hash: the upload
node refuses others when the upload completes (tus 460 ``checksum-mismatch``, nothing stored). ``GET`` answers
``{"id", "status", "offset", "size", "progress", "expires_at", "ticket_expires_at", "image", "error"}``
(``status`` ``paused``: the ticket ended, its owner renews it; docs/uploads.md) where ``image`` is the image
JSON (as ``pixelfox put --json``) once the upload completed, else ``null``, and ``error`` is ``{"code",
"message"}`` of a failed upload; a completed upload's image carries its ``deletion_url`` for its owner, and
``note`` comes with a deduplicated private image (:func:`for_uploader`).
``DELETE`` cancels an open upload without its ticket (``204``): it stops counting against the
caller's open uploads at once and its ticket is refused from then on; ``409`` when it had already
ended. ``POST /api/v1/uploads/{id}/ticket`` renews an open upload's ticket for its owner (``200``, the
``201``'s JSON), so that it resumes after the old ticket's end while its state lives; with JSON
``{"exclude_address"}`` (an upload node that stopped answering) on another upload node when there is one.
``GET /api/v1/uploads`` answers ``{"uploads": [...]}``: the caller's open and paused uploads, newest
first, each as ``GET /api/v1/uploads/<id>`` answers it (how a client that lost its ids finds the
ones to resume or cancel). Anonymous callers get 401.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixelfox import errors, ids
from pixelfox.client.images import private_duplicate_note, upload_progress_json
from pixelfox.storage.keys import SHA256_RULE, declared_sha256
from pixelfox.uploadstate import nothing_to_cancel
from pixelfox.v1 import common_pb2, manager_pb2
from web.calls import call
from web.deletion import deletion_url
from web.jsonbody import read_model, refusal
from web.keys import MANAGER, SETTINGS
from web.ratelimit import check_ip, not_counted_if_over_user_limits
from web.views.api import (
    Caller,
    api_key_of,
    image_json,
    resolve_caller,
    upload_visibility,
)


class NewUpload(BaseModel):
    # "size": "100" or true is a 400, not 100 or 1; an unknown field too ("expiration": not taken here, it was dropped)
    model_config = ConfigDict(extra="forbid", strict=True)
    filename: str = Field("", max_length=255)
    size: int = Field(gt=0)  # bytes; past the upload limit (an int64 on the wire or not) create_upload says so
    content_type: str = Field("", max_length=100)
    title: str = Field("", max_length=4096)  # the manager refuses past 255 characters, in its own words
    sha256: str = ""  # optional: 64 hex digits in either case, kept in lower case
    visibility: str | None = None  # "public" (null or "" too) or "private": web.views.api.upload_visibility

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha256(cls, value: Any) -> Any:
        """``value`` as the manager keeps it (:func:`~pixelfox.storage.keys.declared_sha256`: ``""``, or 64
        hex digits of either case in lower case); else (null, a number, 65 characters, "z" * 64) one
        refusal, :data:`SHA256_RULE`, not pydantic's words for each case."""
        if isinstance(value, str):
            with contextlib.suppress(errors.BadRequest):
                return declared_sha256(value)
        raise refusal(SHA256_RULE)


async def create_upload(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=True)
    if caller.via == "anonymous":
        raise errors.Unauthenticated("log in or send an API key")
    counted = await check_ip(request, anonymous=False)  # anonymous callers were refused above
    upload_visibility(request, anonymous=False)  # a bad ?visibility= before the body is read
    body = await read_model(request, NewUpload)
    visibility = upload_visibility(request, {} if body.visibility is None else {"visibility": body.visibility},
                                   anonymous=False, body="JSON body")
    limit = request.app[SETTINGS].max_upload_bytes
    if body.size > limit:  # here, not by the manager: a size past int64 does not fit the request
        raise errors.PayloadTooLarge.declared(body.size, limit)
    async with not_counted_if_over_user_limits(request, counted):  # a per-user 429 is not the address'
        t: manager_pb2.CreateUploadResponse = await call(
            request, "CreateUpload",
            manager_pb2.CreateUploadRequest(filename=body.filename, size=body.size, content_type=body.content_type,
                                            title=body.title, sha256=body.sha256, visibility=visibility),
            caller.metadata)
    if t.deduplicated:  # the caller's image of the declared sha256: no upload was made, nothing to send
        known = {"id": None, "status": "complete", "deduplicated": True, "image": image_json(request, t.image)}
        return web.json_response(await for_uploader(request, caller, known, t.image), status=200)
    return web.json_response(ticket_json(t), status=201)


async def for_uploader(request: web.Request, caller: Caller, body: dict[str, Any], image: common_pb2.Image
                       ) -> dict[str, Any]:
    """``body`` (an upload's JSON, ``image`` its image JSON, ``deduplicated`` set) with what the one-shot
    upload answers (``POST /api/v1/images``) tell the uploader: ``image.deletion_url`` when the caller owns
    the image (an admin reading another user's upload gets ``""``; the upload page shows the link, labelled,
    as for an anonymous upload) and ``note`` when it is the caller's existing private image
    (:func:`~pixelfox.client.images.private_duplicate_note`). An API-key caller costs one ``WhoAmI``."""
    if caller.user is not None:
        owner = caller.user.id
    else:  # an API key: whose (resolve_caller does not ask)
        owner = (await request.app[MANAGER].who_am_i(api_key_of(request))).id if caller.via == "api-key" else ""
    if owner and owner == image.owner_id:
        body["image"]["deletion_url"] = deletion_url(request, image)
    if note := private_duplicate_note(image, body["deduplicated"]):
        body["note"] = note
    return body


def ticket_json(t: manager_pb2.CreateUploadResponse) -> dict[str, Any]:
    """The JSON of an open upload's ticket (``CreateUpload``'s or ``RenewUpload``'s answer)."""
    return {
        "id": t.upload_id, "upload_url": t.upload_url, "ticket": t.ticket, "expires_at": t.expires_at,
        "chunk_size": t.chunk_size, "max_size": t.max_size, "upload_address": t.upload_address,
        "status": "open", "deduplicated": False,
    }


class TicketRenewal(BaseModel):
    """The optional body of ``POST /api/v1/uploads/<id>/ticket``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # a misspelt exclude_addres was dropped without a word
    # the gRPC address (a ticket's upload_address) of an upload node that stopped answering: the upload
    # moves to another healthy one when there is one (RenewUpload's exclude_address, as RelocateUpload picks)
    # (null or "" as absent, as clients that always send the field write it)
    exclude_address: str | None = Field(None, max_length=255)


async def renew_ticket(request: web.Request) -> web.Response:
    """``POST /api/v1/uploads/<id>/ticket``: a fresh ticket for the caller's open upload (its owner or an
    admin, by API key or session plus CSRF token), ``200`` with the JSON of ``POST /api/v1/uploads``'
    ``201``; ``404`` for an unknown upload, someone else's or one whose state expired, ``409`` once it
    completed, failed or was cancelled, ``403`` for an anonymous upload, ``401`` without credentials, ``400``
    for a body that is not :class:`TicketRenewal`'s JSON. No body (or ``{}``): the upload stays on its
    upload node while that one is healthy. ``{"exclude_address": "<upload_address>"}``: the ticket points at
    another healthy upload node when there is one (the upload page, when the node it sent to stopped
    answering: a frozen node still counts as healthy until its heartbeats are missed)."""
    upload_id, caller = await _upload_caller(request, state_changing=True)
    body = await read_model(request, TicketRenewal) if request.body_exists else TicketRenewal()
    t: manager_pb2.CreateUploadResponse = await call(
        request, "RenewUpload",
        manager_pb2.RenewUploadRequest(upload_id=upload_id, exclude_address=body.exclude_address or ""),
        caller.metadata)
    return web.json_response(ticket_json(t), headers={"Cache-Control": "no-store"})


async def _upload_caller(request: web.Request, *, state_changing: bool) -> tuple[str, Caller]:
    """The upload id of the path and the (non-anonymous) caller; NotFound for an id that is not a ULID."""
    upload_id = request.match_info["id"].upper()  # ULIDs are case-insensitive; stored upper case
    if not ids.ULID.fullmatch(upload_id):
        raise errors.NotFound("no such upload")
    caller = await resolve_caller(request, state_changing=state_changing)
    if caller.via == "anonymous":
        raise errors.Unauthenticated("log in or send an API key")
    return upload_id, caller


async def cancel_upload(request: web.Request) -> web.Response:
    """``DELETE /api/v1/uploads/<id>``: 204 when the open upload was cancelled, 409 when it had
    already completed, failed or been cancelled, 404 for an unknown upload or someone else's."""
    upload_id, caller = await _upload_caller(request, state_changing=True)
    reply: manager_pb2.AbandonUploadResponse = await call(
        request, "AbandonUpload", manager_pb2.AbandonUploadRequest(upload_id=upload_id), caller.metadata)
    if not reply.abandoned:
        p: manager_pb2.UploadProgress = await call(
            request, "GetUpload", manager_pb2.GetUploadRequest(upload_id=upload_id), caller.metadata)
        raise errors.Conflict(nothing_to_cancel(p.status))
    return web.Response(status=204)


async def get_upload(request: web.Request) -> web.Response:
    upload_id, caller = await _upload_caller(request, state_changing=False)
    p: manager_pb2.UploadProgress = await call(request, "GetUpload",
                                               manager_pb2.GetUploadRequest(upload_id=upload_id), caller.metadata)
    body = progress_json(request, p)
    if p.HasField("image"):  # complete: the answer to the tus upload, as the one-shot answers say it
        body = await for_uploader(request, caller, body, p.image)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def list_uploads(request: web.Request) -> web.Response:
    """``GET /api/v1/uploads``: ``{"uploads": [...]}``, the caller's unfinished uploads, open or paused (the
    ticket ended, its owner renews it), newest first, at most the open-upload limit's worth (an admin's own
    only), each as :func:`progress_json`. 401 anonymous."""
    caller = await resolve_caller(request, state_changing=False)
    if caller.via == "anonymous":
        raise errors.Unauthenticated("log in or send an API key")
    reply: manager_pb2.ListUploadsResponse = await call(request, "ListUploads", manager_pb2.ListUploadsRequest(),
                                                        caller.metadata)
    return web.json_response({"uploads": [progress_json(request, p) for p in reply.uploads]},
                             headers={"Cache-Control": "no-store"})


def progress_json(request: web.Request, p: manager_pb2.UploadProgress) -> dict[str, Any]:
    """:func:`pixelfox.client.images.upload_progress_json` with the web's image JSON (share-page ``url``)."""
    body = upload_progress_json(p)
    body["image"] = image_json(request, p.image) if p.HasField("image") else None
    return body
