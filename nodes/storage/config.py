"""Settings of a storage node (``PIXELFOX_`` prefix, ``__`` nesting; see docs/storage.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pixelfox.config import HttpServerSettings, NodeSettings


class StorageNodeSettings(NodeSettings):
    """``PIXELFOX_DATA_DIR``, ``PIXELFOX_POOL`` and ``PIXELFOX_HTTP__{HOST,PORT,PUBLIC_URL}`` on top of
    the shared node settings."""

    http: HttpServerSettings = HttpServerSettings()
    data_dir: Path = Field(Path("data/storage"), description="root directory of this node's pool")
    pool: str = Field("hot", pattern=r"^[a-z0-9_-]{1,32}$", description="pool/tier name (metrics label)")
    usage_refresh_s: float = Field(5.0, gt=0, description="seconds between disk-usage refreshes")
