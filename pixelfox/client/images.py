"""The public JSON shape of an image (``pixelfox put --json``, ``POST /api/v1/images``)."""

from __future__ import annotations

import math
from typing import Any

from pixelfox.imaging import CLEAN_ORIGINAL
from pixelfox.v1 import common_pb2, manager_pb2

STATUS_NAMES = {
    common_pb2.IMAGE_STATUS_PROCESSING: "processing",
    common_pb2.IMAGE_STATUS_READY: "ready",
    common_pb2.IMAGE_STATUS_FAILED: "failed",
}


def status_name(image: common_pb2.Image) -> str:
    """``processing`` | ``ready`` | ``failed``: the image's processing state as the manager records it
    (:func:`public_status` is what pages and answers show)."""
    return STATUS_NAMES.get(image.status, "processing")


#: ``error.code`` of an image whose files are lost (:func:`files_lost`)
FILES_LOST_CODE = "files-lost"
#: ``error.message`` of such an image: what happened and what its owner can do
FILES_LOST_MESSAGE = ("no storage node has a copy of this image's files any more: upload the same file again "
                      "to restore it, or delete the image")


def files_lost(image: common_pb2.Image) -> bool:
    """Whether a processed (``ready``) image has no file any storage node serves: neither its original
    nor any variant has a URL, because no registered storage node holds a copy (its only holder was
    forgotten, ``pixelfox nodes forget``). Such an image is not "still processing"; deleting it, its owner
    uploading the same file again (the manager records the new copy as its original and processes it again:
    :meth:`nodes.manager.uploads.Uploads.complete`), or the repair finding a copy on a live node changes that."""
    return status_name(image) == "ready" and not image.original_url and not any(v.url for v in image.variants)


def original_lost(image: common_pb2.Image) -> bool:
    """Whether a processed (``ready``) image's original has no copy on any registered storage node (no
    ``original_url``), its variants kept or not (:func:`files_lost` is the case with none kept): its owner
    uploading the same file again gives it its original back (:meth:`nodes.manager.uploads.Uploads.complete`)."""
    return status_name(image) == "ready" and not image.original_url


def public_status(image: common_pb2.Image) -> str:
    """``processing`` | ``ready`` | ``failed`` | ``lost``: the status pages and JSON answers show, which is
    :func:`status_name` but ``lost`` for a ready image whose files are lost (:func:`files_lost`)."""
    return "lost" if files_lost(image) else status_name(image)


def image_error(image: common_pb2.Image) -> dict[str, str] | None:
    """``{code, message}`` of an image that failed (the processing's) or whose files are lost
    (:data:`FILES_LOST_CODE`, :data:`FILES_LOST_MESSAGE`); None otherwise."""
    status = public_status(image)
    if status == "failed":
        return {"code": image.error_code, "message": image.error_message}
    if status == "lost":
        return {"code": FILES_LOST_CODE, "message": FILES_LOST_MESSAGE}
    return None


def clean_original(image: common_pb2.Image) -> common_pb2.Variant | None:
    """The upload with its metadata removed (variant :data:`~pixelfox.imaging.CLEAN_ORIGINAL`), once
    processed; ``None`` while the image is processing or for images processed before it existed."""
    return next((v for v in image.variants if v.name == CLEAN_ORIGINAL and v.url), None)


def display_variants(image: common_pb2.Image) -> list[common_pb2.Variant]:
    """The resized renditions (thumb, medium, large, ...): every variant but the clean original."""
    return [v for v in image.variants if v.name != CLEAN_ORIGINAL]


def served_original_url(image: common_pb2.Image, *, with_metadata: bool) -> str:
    """The URL "download original" and direct links use: the stored upload itself (a signed,
    expiring URL; EXIF and GPS included) when ``with_metadata`` - the owner opted in with
    ``keep_metadata``, or the owner is asking - else the clean original (a lasting URL for a
    public image), or :func:`largest_plain` where there is none. ``""`` while still processing."""
    if with_metadata and image.original_url:
        return image.original_url
    clean = clean_original(image) or largest_plain(image)
    return clean.url if clean else ""


def largest_plain(image: common_pb2.Image) -> common_pb2.Variant | None:
    """The largest JPEG rendition, else the largest WebP/PNG/GIF: what stands in for the clean original
    of a source the core cannot strip losslessly (AVIF, see ``imaging.STRIPPABLE_FORMATS``)."""
    for fmt in ("jpeg", "webp", "png", "gif"):
        vs = [v for v in display_variants(image) if v.format.lower() == fmt and v.url]
        if vs:
            return max(vs, key=lambda v: v.width * v.height)
    return None


def image_to_json(image: common_pb2.Image) -> dict[str, Any]:
    """Shape: ``{id, url, status, error, width, height, format, bytes, sha256, original_url,
    thumbnail_url, created_at, expires_at (ISO 8601 UTC when an expiring upload is deleted, else None),
    exif: {field: text}, location: {latitude, longitude} | None (owner/admin only),
    variants: [{name, format, width, height, bytes, url}]}``; ``status`` is :func:`public_status`
    (``processing``, ``ready``, ``failed``, ``lost``), ``error`` is :func:`image_error` (``{code,
    message}`` when the image failed or its files are lost, else ``None``). Sizes in px, bytes in bytes.

    ``original_url`` is :func:`served_original_url` for anyone but the owner: the clean original
    (metadata removed; ``""`` while processing), or the stored upload when the owner opted in
    (``keep_metadata``). Such answers get pasted, so they never carry GPS; the owner's own tools
    add the stored upload under its own name with :func:`owner_image_json`."""
    return {
        "id": image.slug,
        "url": image.url,
        "status": public_status(image),
        "error": image_error(image),
        "filename": image.filename,
        "title": image.title,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "frames": image.frames,
        "bytes": image.bytes,
        "sha256": image.sha256,
        "original_url": served_original_url(image, with_metadata=image.keep_metadata),
        "thumbnail_url": image.thumbnail_url,
        "created_at": image.created_at,
        "expires_at": image.expires_at or None,
        "exif": dict(sorted(image.exif.items())),
        "location": (
            {"latitude": image.location.latitude, "longitude": image.location.longitude}
            if image.HasField("location") else None
        ),
        "variants": [
            {
                "name": v.name,
                "format": v.format,
                "width": v.width,
                "height": v.height,
                "bytes": v.bytes,
                "url": v.url,
            }
            for v in image.variants
        ],
    }


def owner_image_json(image: common_pb2.Image) -> dict[str, Any]:
    """:func:`image_to_json` plus ``stored_original_url``: the upload as it was stored (EXIF and GPS
    kept; a signed URL that expires, see :mod:`pixelfox.signing`), for the owner's own CLI
    (``pixelfox put --json``), and ``visibility`` (``public`` | ``private``). ``original_url`` stays the one
    to share."""
    return {**image_to_json(image), "stored_original_url": image.original_url,
            "visibility": image.visibility or "public"}


#: ``note`` of an upload answer that is the caller's existing private image (dedup)
PRIVATE_DUPLICATE = ("these bytes are already your image, and it is private: its links open only for you; "
                     "make it public to share them")


#: the header that carries that note where the answer's body is not JSON (Chevereto's ``format=txt``, tus)
NOTE_HEADER = "Pixelfox-Note"


def private_duplicate_note(image: common_pb2.Image, deduplicated: bool) -> str:
    """What an upload answer says when it is the caller's existing private image (dedup): its links
    open for nobody else (the web's ``note``, Chevereto's ``success.message``, the ``Pixelfox-Note``
    header of Chevereto's ``format=txt`` and of the completing tus PATCH). ``""`` otherwise (a new
    upload, or a public image)."""
    return PRIVATE_DUPLICATE if deduplicated and image.visibility == "private" else ""


def upload_progress_json(p: manager_pb2.UploadProgress) -> dict[str, Any]:
    """One upload as ``GET /api/v1/uploads/<id>`` and ``pixelfox uploads --json`` give it: ``id``,
    ``status`` (open, paused, complete, failed, expired, abandoned; paused: the ticket ended, the owner
    renews it and resumes), ``offset`` and ``size`` (bytes), ``progress`` (0 to 1, rounded down to 4
    places), ``expires_at`` (ISO 8601 UTC or None: when nothing can resume it any more, a renewal
    included), ``ticket_expires_at`` (ISO 8601 UTC or None: the current ticket's last accepted second,
    open and paused uploads), ``filename``, ``image`` (:func:`image_to_json` once complete, else None),
    ``deduplicated``, ``error`` (``{"code", "message"}`` of a failed upload, else None)."""
    return {
        "id": p.upload_id, "status": p.status, "offset": p.offset, "size": p.size,
        # rounded down: 0.99995 is not done
        "progress": math.floor(p.offset * 10_000 / p.size) / 10_000 if p.size else 0.0,
        "expires_at": p.expires_at or None, "ticket_expires_at": p.ticket_expires_at or None,
        "filename": p.filename, "image": image_to_json(p.image) if p.HasField("image") else None,
        "deduplicated": p.deduplicated,
        "error": {"code": p.error_code, "message": p.error_message} if p.error_code else None,
    }


def rejected_json(file: str, code: str, message: str, status: str = "rejected") -> dict[str, Any]:
    """The ``put --json`` line for a file refused before it became an image; ``status="paused"``: for one
    whose upload stopped on the way (the cluster did not answer) and stays open: the same command resumes it."""
    return {"file": file, "id": None, "url": None, "status": status, "error": {"code": code, "message": message},
            "variants": []}
