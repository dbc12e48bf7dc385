"""Upload node settings (env prefix ``PIXELFOX_``, nesting ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pixelfox.config import LimitsSettings, NodeSettings


class UploadSettings(NodeSettings):
    staging_dir: Path = Field(Path("data/upload-staging"), description="where partial uploads are staged")
    limits: LimitsSettings = LimitsSettings()
    max_concurrent: int = Field(64, ge=1, description="uploads received at once; more get RESOURCE_EXHAUSTED")
