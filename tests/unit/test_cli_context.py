"""Where the CLI sends its calls: ``--manager`` / ``PIXELFOX_MANAGER`` must be real addresses."""

from __future__ import annotations

import pytest

from pixelfox.cli.context import check_address


@pytest.mark.parametrize("good", ["127.0.0.1:7000", "manager:1", "[::1]:65535", "m1:7000, m2:7001"])
def test_good_addresses_pass(good: str) -> None:
    assert check_address(good) == good


@pytest.mark.parametrize("bad", ["127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1", ":7000",
                                 "m1:7000,m2"])
def test_bad_addresses_are_refused_with_the_bad_part(bad: str) -> None:
    with pytest.raises(SystemExit, match="is not HOST:PORT with a port from 1 to 65535") as exc:
        check_address(bad)
    assert repr(bad.split(",")[-1].strip()) in str(exc.value) or repr(bad) in str(exc.value)
