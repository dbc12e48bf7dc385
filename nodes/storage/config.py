"""Settings of a storage node (``PIXELFOX_`` prefix, ``__`` nesting; see docs/storage.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pixelfox.config import HttpServerSettings, NodeSettings
from pixelfox.signing import UrlSigningSettings
from pixelfox.storage.s3 import S3Settings


class StorageNodeSettings(NodeSettings):
    """``PIXELFOX_DATA_DIR``, ``PIXELFOX_POOL`` and ``PIXELFOX_HTTP__{HOST,PORT,PUBLIC_URL}`` on top of
    the shared node settings."""

    http: HttpServerSettings = HttpServerSettings()
    data_dir: Path = Field(Path("data/storage"), description="root directory of this node's pool")
    pool: str = Field("hot", pattern=r"^[a-z0-9_-]{1,32}$", description="pool/tier name (metrics label)")
    url_signing: UrlSigningSettings = UrlSigningSettings()
    usage_refresh_s: float = Field(5.0, gt=0, description="seconds between disk-usage refreshes")
    backend: Literal["fs", "s3"] = Field("fs", description="where the pool keeps bytes: local data_dir or S3")
    s3: S3Settings = S3Settings()
    sign_originals: bool = Field(
        True, description="serve originals (o/... keys) only with a signed, expiring URL: a public variant's key "
        "names the original's SHA-256, and the original keeps the uploader's EXIF/GPS")
    uvloop: bool = Field(True, description="run on uvloop when it is installed (faster HTTP origin)")
    http_workers: int = Field(1, ge=1, le=64, description="HTTP origin processes sharing the port (SO_REUSEPORT)")
    accel_redirect: str = Field(
        "", description="X-Accel-Redirect mode: internal nginx location prefix (e.g. /_pool/); empty = off"
    )
