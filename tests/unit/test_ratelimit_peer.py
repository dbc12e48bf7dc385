"""The address a gRPC peer string names (the manager's key for direct anonymous uploads)."""

from __future__ import annotations

import pytest

from pixelfox.ratelimit import anonymous_budget, peer_address


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:127.0.0.1:50312", "127.0.0.1"),
    ("ipv6:[::1]:50312", "::1"),
    ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
    ("unix:/tmp/manager.sock", "unix:/tmp/manager.sock"),
    ("", "unknown"),
])
def test_peer_address_drops_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_the_anonymous_budget_is_the_web_nodes_key() -> None:
    assert anonymous_budget("::1", 20).key == "pixelfox:{limits}:anon-ip:::1"
