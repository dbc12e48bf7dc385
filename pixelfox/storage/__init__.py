"""Bytes at rest: content-addressed keys, the ``Store`` protocol, the local-disk store and the gRPC client."""

from pixelfox.storage.base import CHUNK_SIZE, ObjectInfo, Store
from pixelfox.storage.keys import MIME_BY_EXT, content_type_for, original_key, validate_key, variant_key

__all__ = [
    "CHUNK_SIZE",
    "MIME_BY_EXT",
    "ObjectInfo",
    "Store",
    "content_type_for",
    "original_key",
    "validate_key",
    "variant_key",
]
