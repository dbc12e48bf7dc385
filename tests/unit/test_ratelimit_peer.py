"""The address a gRPC peer string names (the manager's key for direct anonymous uploads), and the
client address a trusted gRPC proxy forwards in ``x-forwarded-for``."""

from __future__ import annotations

import pytest

from pixelfox.config import proxy_networks
from pixelfox.ratelimit import anonymous_budget, client_address, peer_address


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


PROXIES = proxy_networks("10.0.0.0/8, ::1")


@pytest.mark.parametrize(("peer", "forwarded_for", "address"), [
    ("ipv4:10.1.2.3:50312", "203.0.113.7", "203.0.113.7"),  # the proxy set it
    ("ipv4:10.1.2.3:50312", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # appended: the client's own is not believed
    ("ipv6:[::1]:443", "2001:db8::7", "2001:db8::7"),
    ("ipv4:10.1.2.3:50312", "", "10.1.2.3"),  # the proxy sent none: its own address
    ("ipv4:10.1.2.3:50312", "not-an-ip", "10.1.2.3"),
    ("ipv4:192.0.2.8:50312", "203.0.113.7", "192.0.2.8"),  # not a trusted proxy: a client cannot pick its budget
    ("unix:/tmp/manager.sock", "203.0.113.7", "unix:/tmp/manager.sock"),
])
def test_a_trusted_proxy_forwards_the_client_address(peer: str, forwarded_for: str, address: str) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == address


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("ipv4:10.1.2.3:50312", "203.0.113.7", []) == "10.1.2.3"
