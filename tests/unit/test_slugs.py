"""Public image ids (``nodes.manager.images.new_slug``)."""

from __future__ import annotations

import re

from nodes.manager.images import new_slug
from pixelfox.cli.main import build_parser


def test_slugs_are_url_safe_unique_and_never_look_like_an_option() -> None:
    slugs = [new_slug() for _ in range(20_000)]  # a leading "-" would be expected about 312 times
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", s) for s in slugs)
    assert len(set(slugs)) == len(slugs)
    assert not [s for s in slugs if s.startswith("-")]
    assert sum(s[0] == "_" for s in slugs) > 100  # the first character still spans the alphabet


def test_an_older_id_starting_with_a_dash_works_after_a_double_dash() -> None:
    opts = build_parser().parse_args(["reprocess", "--rate", "2", "--", "-fICuMccZoYSH4A9"])
    assert opts.slugs == ["-fICuMccZoYSH4A9"]
