"""``build_picture``: which variants feed <source srcset>, the <img> fallback and og:image."""

from __future__ import annotations

from pixelfox.v1 import common_pb2
from web.views.pages import build_picture


def _image(
    frames: int = 1,
    formats: tuple[str, ...] = ("avif", "webp", "jpeg"),
    small: bool = False,
    animated_formats: tuple[str, ...] = (),
) -> common_pb2.Image:
    img = common_pb2.Image(
        slug="abc", status=common_pb2.IMAGE_STATUS_READY, frames=frames, original_url="http://s/o/abc.jpg"
    )
    for fmt in formats:
        for name, w in (("thumb", 160), ("medium", 800), ("large", 1600)):
            w = 80 if small else w
            img.variants.add(
                name=name,
                format=fmt,
                width=w,
                height=w,
                url=f"http://s/{name}.{fmt}",
                frames=frames if fmt in animated_formats else 1,
            )
    return img


def test_sources_fallback_and_og() -> None:
    p = build_picture(_image())
    assert [m for m, _ in p.sources] == ["image/avif", "image/webp"]
    assert p.sources[0][1] == "http://s/thumb.avif 160w, http://s/medium.avif 800w, http://s/large.avif 1600w"
    assert p.fallback is not None and p.fallback.url == "http://s/medium.jpeg"
    assert p.og is not None and p.og.url == "http://s/large.jpeg"


def test_equal_widths_collapse_to_one_candidate() -> None:
    p = build_picture(_image(small=True))
    assert p.sources[0][1] == "http://s/thumb.avif 80w"


def test_animation_drops_still_sources() -> None:
    p = build_picture(_image(frames=30, animated_formats=("webp",)))
    assert [m for m, _ in p.sources] == ["image/webp"]
    assert p.fallback is not None and p.fallback.url == "http://s/medium.webp"
    assert p.og is not None and p.og.format == "jpeg"


def test_og_never_the_original_and_webp_only() -> None:
    p = build_picture(_image(formats=("webp",)))
    assert p.og is not None and p.og.url == "http://s/large.webp"
    assert p.fallback is not None and p.fallback.url == "http://s/medium.webp"


def test_no_variants() -> None:
    p = build_picture(_image(formats=()))
    assert p.sources == [] and p.fallback is None and p.og is None
