"""A processing node runs each image under the shorter of its per-image time limit
(``PIXELFOX_LIMITS__PROCESS_TIMEOUT_S``, 30 s) and the job's deadline (``PIXELFOX_JOB_TIMEOUT_S`` on
the manager, 120 s). The node used to replace the per-image limit with the job's deadline, so one
image could run for 120 s."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from nodes.proc.__main__ import limits_from
from nodes.proc.config import ProcSettings
from nodes.proc.service import Processor
from pixelfox import errors, imaging
from pixelfox.v1 import manager_pb2

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
#: 16 MP JPEG: its decode alone takes well over 0.05 s
PHOTO = "photos/leica_t_16mp_orient8_gps.jpg"


async def process(per_image_s: float, deadline_s: float) -> tuple[float, errors.Timeout | None]:
    """Seconds one real processing of PHOTO took, and the Timeout it raised (None if it finished)."""
    processor = Processor("secret", 1, imaging.Recipe(), imaging.Limits(timeout_s=per_image_s))
    start = time.perf_counter()
    try:
        await processor._process((CORPUS / PHOTO).read_bytes(), processor.recipe,
                                 manager_pb2.Job(job_id="j1", deadline_s=deadline_s))
    except errors.Timeout as exc:
        return time.perf_counter() - start, exc
    finally:
        processor.close()
    return time.perf_counter() - start, None


async def test_per_image_limit_wins_over_a_longer_job_deadline() -> None:
    seconds, exc = await process(per_image_s=0.05, deadline_s=120.0)
    assert exc is not None, f"processing finished in {seconds:.2f} s, over the 0.05 s per-image limit"
    assert exc.code == "timeout"
    assert "0.05 s per-image time limit (PIXELFOX_LIMITS__PROCESS_TIMEOUT_S)" in str(exc)
    assert re.fullmatch(r"processing stopped after \d+\.\d s during [\w -]+: over the 0\.05 s per-image time limit "
                        r"\(PIXELFOX_LIMITS__PROCESS_TIMEOUT_S\)", str(exc)), str(exc)
    assert seconds < 0.05 + 2.0  # the core stops after the step that passed the limit


async def test_job_deadline_wins_when_shorter() -> None:
    seconds, exc = await process(per_image_s=30.0, deadline_s=0.05)
    assert exc is not None
    assert "0.05 s job time limit (PIXELFOX_JOB_TIMEOUT_S on the manager)" in str(exc)
    assert seconds < 0.05 + 2.0


async def test_no_job_deadline_leaves_the_per_image_limit() -> None:
    _, exc = await process(per_image_s=0.05, deadline_s=0)
    assert exc is not None
    assert "0.05 s per-image time limit" in str(exc)
    # neither limit: the image is processed
    _, exc = await process(per_image_s=0, deadline_s=0)
    assert exc is None, str(exc)


def test_per_image_limit_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits_from(ProcSettings()).timeout_s == 30.0  # imaging.Limits' default
    monkeypatch.setenv("PIXELFOX_LIMITS__PROCESS_TIMEOUT_S", "0.05")
    assert limits_from(ProcSettings()).timeout_s == 0.05
