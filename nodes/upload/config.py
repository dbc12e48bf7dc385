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
    lock_ttl_s: float = Field(
        10.0, gt=0, description="an upload's writer lock outlives a writer not known dead (stopped, cut off) this "
                                "long; a killed node's locks are taken over at once (nodes/upload/liveness.py)")
    redis_connections: int = Field(32, ge=1, description="Redis connections per upload node (a blocking pool)")
    stream_window_bytes: int = Field(
        256 * 1024, ge=0,
        description="HTTP/2 receive window of each gRPC upload stream, fixed (gRPC's BDP probing off): what a "
                    "client may send ahead of what the node has read, so a node holds about max_concurrent x "
                    "(window + a chunk) of upload bytes; a stream then moves at most about that per round trip "
                    "(256 KiB: ~10 MB/s at 50 ms). 0 lets gRPC grow the windows by BDP probing (faster over long "
                    "round trips, but a burst of uploads can then be buffered whole in memory: issue 4)")
    sweep_interval_s: float = Field(60.0, gt=0, description="seconds between sweeps of abandoned staged uploads")
