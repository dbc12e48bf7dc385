"""The public JSON shape of an image (``pixelfox put --json``, ``POST /api/v1/images``)."""

from __future__ import annotations

from typing import Any

from pixelfox.v1 import common_pb2

STATUS_NAMES = {
    common_pb2.IMAGE_STATUS_PROCESSING: "processing",
    common_pb2.IMAGE_STATUS_READY: "ready",
    common_pb2.IMAGE_STATUS_FAILED: "failed",
}


def status_name(image: common_pb2.Image) -> str:
    """``processing`` | ``ready`` | ``failed``."""
    return STATUS_NAMES.get(image.status, "processing")


def image_to_json(image: common_pb2.Image) -> dict[str, Any]:
    """Shape: ``{id, url, status, error, width, height, format, bytes, sha256, original_url,
    thumbnail_url, variants: [{name, format, width, height, bytes, url}]}``; ``error`` is
    ``{code, message}`` when the image failed, else ``None``. Sizes in px, bytes in bytes."""
    status = status_name(image)
    return {
        "id": image.slug,
        "url": image.url,
        "status": status,
        "error": (
            {"code": image.error_code, "message": image.error_message} if status == "failed" else None
        ),
        "filename": image.filename,
        "title": image.title,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "frames": image.frames,
        "bytes": image.bytes,
        "sha256": image.sha256,
        "original_url": image.original_url,
        "thumbnail_url": image.thumbnail_url,
        "created_at": image.created_at,
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


def rejected_json(file: str, code: str, message: str) -> dict[str, Any]:
    """The ``put --json`` line for a file refused before it became an image."""
    return {"file": file, "id": None, "url": None, "status": "rejected", "error": {"code": code, "message": message},
            "variants": []}
