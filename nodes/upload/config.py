"""Upload node settings (env prefix ``PIXELFOX_``, nesting ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pixelfox.config import HttpServerSettings, LimitsSettings, NodeSettings, RedisSettings


class UploadSettings(NodeSettings):
    staging_dir: Path = Field(Path("data/upload-staging"),
                              description="where partial uploads are staged; the SAME directory for every upload "
                                          "node of the cluster (shared mount), so another node can resume")
    limits: LimitsSettings = LimitsSettings()
    max_concurrent: int = Field(64, ge=1, description="uploads received at once; more get RESOURCE_EXHAUSTED")
    redis: RedisSettings = RedisSettings()
    http: HttpServerSettings = HttpServerSettings()
    lock_ttl_s: float = Field(10.0, gt=0, description="an upload's writer lock outlives a dead writer this long")
    redis_connections: int = Field(32, ge=1, description="Redis connections per upload node (a blocking pool)")
    sweep_interval_s: float = Field(60.0, gt=0, description="seconds between sweeps of abandoned staged uploads")
