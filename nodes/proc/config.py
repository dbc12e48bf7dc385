"""Processing node settings (env prefix ``PIXELFOX_``, nesting ``__``)."""

from __future__ import annotations

import os

from pydantic import Field

from pixelfox.config import LimitsSettings, NodeSettings


class ProcSettings(NodeSettings):
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="jobs processed at once (one per core: the Rust core releases the GIL)")
    limits: LimitsSettings = LimitsSettings()
    webp_quality: float = Field(80.0, ge=0, le=100, description="libwebp quality")
    avif_quality: float = Field(50.0, ge=0, le=100, description="libavif AVIF quality (libvips' Q scale)")
    avif_speed: int = Field(6, ge=0, le=10, description="libaom speed for variants without one (thumb, medium: 5)")
    jpeg_quality: int = Field(85, ge=1, le=100)
    trim_idle_s: float = Field(1.0, ge=0, description="seconds without a job after which the node gives freed "
                               "heap memory back to the kernel (glibc malloc_trim); 0 = never")
    gpu: bool = Field(False, description="announce the gpu capability (jobs that require a GPU come here only)")
