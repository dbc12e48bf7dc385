"""Separate "hosts" on one machine: a network namespace per host, joined by veth pairs to a
bridge in a "switch" namespace (RELIABILITY.md §6). Needs root (``ip netns add``).

Each host gets ``10.<net>.0.<n>/24`` on its ``eth0`` and its own loopback; traffic between
hosts crosses the bridge, so a node's address is only reachable from other namespaces (run
every client inside one too). :meth:`NetLab.cut` takes a host's switch port down (a hard
partition). :meth:`NetLab.close` kills every process started here and deletes every
namespace, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_available() -> str:
    """"" when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    name = f"pfprobe{secrets.token_hex(3)}"
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return f"ip netns add refused: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return ""


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    switch_port: str


@dataclass
class NetLab:
    """Namespaces named ``<prefix>-<host>``; addresses from ``10.<net>.0.0/24``."""

    logs: Path
    prefix: str = field(default_factory=lambda: f"pf{secrets.token_hex(2)}")
    net: int = field(default_factory=lambda: random.randint(100, 250))
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def cidr(self) -> str:
        return f"10.{self.net}.0.0/24"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        n = len(self.hosts) + 2
        ns = f"{self.prefix}-{name}"
        here, there = f"{self.prefix}h{n}", f"{self.prefix}s{n}"
        ip = f"10.{self.net}.0.{n}"
        _ip("netns", "add", ns)
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", here, "netns", ns)
        _ip("link", "set", there, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", there, "master", "br0", "up")
        _ip("-n", ns, "link", "set", here, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host = Host(name, ns, ip, there)
        self.hosts[name] = host
        return host

    def run(self, host: str, argv: list[str], env: dict[str, str] | None = None, name: str = "",
            cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace (logged to ``logs/<name>.log``)."""
        name = name or host
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[host].ns, *argv], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    def cut(self, host: str) -> None:
        """Take ``host``'s switch port down: nothing reaches it, it reaches nothing."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].switch_port, "down")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True, check=False)
