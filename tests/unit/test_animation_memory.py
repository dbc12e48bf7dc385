"""Animations are streamed frame by frame, and their memory is budgeted from the header.

A fresh tester's 1.4 KB GIF (a 4000x4000 screen, 60 frames of one pixel each) made a
processing node peak at 5.3 GB: every frame was decoded at full canvas size before any was
resized. Now each frame is resized and handed to the WebP encoders, then dropped
(``core_rs/src/steps/animate.rs``), and ``Limits.max_animation_bytes`` refuses, before
decoding, an animation whose canvases, rendition frames and encoders would need more
(docs/imaging.md, "Animations"). Peak memory is measured as ``ru_maxrss`` in a fresh
subprocess (a per-process peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pixelfox import imaging
from pixelfox.imaging import LimitExceeded, Limits
from tests.animkit import one_pixel_frames_gif

ROOT = Path(__file__).parents[2]
MIB = 1 << 20


_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pixelfox import imaging
    data = open(sys.argv[1], "rb").read()
    limits = imaging.Limits(**json.loads(sys.argv[2]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        result = imaging.process(data, imaging.DEFAULT_RECIPE, limits)
        outcome = {"variants": [[v.name, v.format, v.width, v.height, v.frames] for v in result.variants]}
    except imaging.ImageError as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.perf_counter() - start
    outcome["growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps(outcome))
    """
)


def process_in_child(tmp_path: Path, data: bytes, **limits: object) -> dict[str, object]:
    """``imaging.process(data, DEFAULT_RECIPE, Limits(**limits))`` in a fresh interpreter: the
    outcome, its seconds and how far the call raised the process's peak RSS (KiB)."""
    source = tmp_path / "animation.gif"
    source.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", _CHILD, str(source), json.dumps(limits)], capture_output=True,
                         text=True, timeout=290, check=False, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    outcome: dict[str, object] = json.loads(run.stdout)
    return outcome


def test_the_testers_4000px_gif_is_processed_in_bounded_memory(tmp_path: Path) -> None:
    """Processed, not refused: it needs 446 MiB by the budget's sum (under the 1 GiB default),
    whatever its frame count, measured 343-355 MiB of peak growth for the tester's 60 frames; it
    was 4,028 MiB (5.3 GB on the tester's node) when every frame was decoded first. 20 frames
    here (a third of the CPU time; the old code needed about 1.7 GB for them). No time limit: the
    box may be loaded, and the old code's 4 GB took its whole 30 s; the time is not what is tested."""
    data = one_pixel_frames_gif(4000, 4000, 20)
    assert len(data) < 1500
    outcome = process_in_child(tmp_path, data, timeout_s=0)
    assert "error" not in outcome, outcome
    variants = outcome["variants"]
    assert isinstance(variants, list)
    assert [(v[0], v[1], v[2], v[3], v[4]) for v in variants if v[1] == "webp"] == [
        ("thumb", "webp", 200, 200, 20), ("medium", "webp", 1024, 1024, 20), ("large", "webp", 2048, 2048, 20),
    ]
    assert all(v[4] == 1 for v in variants if v[1] != "webp")
    growth_kib = outcome["growth_kib"]
    assert isinstance(growth_kib, int)
    assert growth_kib < 600 * 1024, f"peak RSS grew {growth_kib // 1024} MiB"


def test_an_animation_over_the_budget_is_refused_before_any_frame_is_decoded(tmp_path: Path) -> None:
    """A 10000x10000 screen (100 MP, the largest canvas allowed) with 2 one-pixel frames passes
    every header limit (200 MP in all) but would need 4 canvases of 381 MiB: refused in
    milliseconds, with flat memory. The old code decoded both frames (800 MB) before resizing."""
    data = one_pixel_frames_gif(10_000, 10_000, 2)
    assert imaging.verify(data).frames == 2
    outcome = process_in_child(tmp_path, data)
    assert outcome["error"] == "LimitExceeded", outcome
    assert outcome["message"] == "animation needs 1,728 MiB of frame buffers, over the 1,024 MiB limit"
    seconds = outcome["seconds"]
    growth_kib = outcome["growth_kib"]
    assert isinstance(seconds, float) and isinstance(growth_kib, int)
    assert seconds < 1.0, seconds
    assert growth_kib < 64 * 1024, f"peak RSS grew {growth_kib // 1024} MiB"


@pytest.mark.parametrize(
    ("size", "frames", "mib"),
    [
        # 4 canvases + 10 frames of each rendition (2 kept/resized + 8 in its WebP encoder):
        # 1080p: 4 x 7.9 + 10 x (1920x1080 + 1024x576 + 200x113) x 4 B = 134.1 -> 135 MiB
        ((1920, 1080), 300, 135),
        ((1920, 1080), 2, 135),  # the frame count does not enter: no decoded frame is kept
        ((4000, 4000), 60, 446),  # the tester's file: 244 + 10 x 20.2 MiB
        ((472, 298), 380, 9),  # the corpus' 380-frame GIF: large and medium are one size
    ],
)
def test_the_budget_is_the_documented_sum(size: tuple[int, int], frames: int, mib: int) -> None:
    """The number in the refusal is docs/imaging.md's arithmetic (a zero budget shows it)."""
    data = one_pixel_frames_gif(*size, frames)
    refusal = rf"^animation needs {mib:,} MiB of frame buffers, over the 0 MiB limit$"
    with pytest.raises(LimitExceeded, match=refusal):
        imaging.process(data, limits=Limits(max_animation_bytes=0))
    with pytest.raises(LimitExceeded, match=refusal):  # what an upload node checks: the same sum
        imaging.verify(data, Limits(max_animation_bytes=0), imaging.DEFAULT_RECIPE)
    assert mib * MIB <= Limits().max_animation_bytes


def test_the_budget_is_configurable_and_leaves_stills_and_still_only_recipes_alone() -> None:
    data = one_pixel_frames_gif(400, 300, 3)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded, match="over the 1 MiB limit"):
        imaging.process(data, limits=Limits(max_animation_bytes=MIB))
    assert time.perf_counter() - start < 1.0
    webp_only = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 200, 200, ("webp",)),))
    # 4 x 400x300 + 10 x 200x150, in RGBA: 2.98 MiB
    assert imaging.process(data, webp_only, Limits(max_animation_bytes=4 * MIB)).variants[0].frames == 3
    # without a WebP output only the first frame is decoded (a still): no animation budget
    jpeg_only = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 200, 200, ("jpeg",)),))
    (jpeg,) = imaging.process(data, jpeg_only, Limits(max_animation_bytes=0)).variants
    assert (jpeg.width, jpeg.height, jpeg.frames) == (200, 150, 1)


def test_verify_and_probe_with_a_recipe_refuse_as_process_does() -> None:
    """An upload node checks the budget before it stores the file (``verify``/``probe`` with the
    processing nodes' recipe): the same refusal, word for word. No recipe, a still, or a recipe
    without a WebP output: no budget, as for :func:`imaging.process`."""
    data = one_pixel_frames_gif(2000, 2000, 3)
    limits = Limits(max_animation_bytes=32 * MIB)
    with pytest.raises(LimitExceeded) as processed:
        imaging.process(data, limits=limits)
    assert str(processed.value) == "animation needs 256 MiB of frame buffers, over the 32 MiB limit"
    for check in (imaging.verify, imaging.probe):
        with pytest.raises(LimitExceeded) as checked:
            check(data, limits, imaging.DEFAULT_RECIPE)
        assert str(checked.value) == str(processed.value)
        assert check(data, limits).frames == 3
    jpeg_only = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 200, 200, ("jpeg",)),))
    assert imaging.verify(data, Limits(max_animation_bytes=0), jpeg_only).frames == 3
    still = one_pixel_frames_gif(2000, 2000, 1)
    assert imaging.verify(still, Limits(max_animation_bytes=0), imaging.DEFAULT_RECIPE).frames == 1


def test_a_one_pixel_frame_animation_keeps_its_frames_delays_and_loop() -> None:
    """The streamed path's output, read back by Pillow: every frame, its delay, the loop."""
    import io

    from PIL import Image

    data = one_pixel_frames_gif(64, 48, 5, delay_cs=7)
    webp_only = imaging.Recipe(variants=(imaging.VariantSpec("full", 64, 64, ("webp",)),))
    (webp,) = imaging.process(data, webp_only).variants
    img = Image.open(io.BytesIO(webp.data))
    assert (webp.width, webp.height, webp.frames, img.n_frames) == (64, 48, 5, 5)
    durations = []
    for i in range(img.n_frames):
        img.seek(i)
        img.load()
        durations.append(img.info.get("duration"))
    assert durations == [70] * 5
    assert img.info["loop"] == 0
