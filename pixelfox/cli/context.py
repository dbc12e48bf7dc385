"""How a command finds its cluster: flags, environment, or the ``.pixelfox/`` state of ``pixelfox up``.

Run in the folder where ``pixelfox up`` runs (or below it), every command reads
``.pixelfox/cluster.json``, which holds the manager address, the web URL, the local admin
API key and the cluster secret (file mode 0600). Elsewhere, ``--manager`` /
``PIXELFOX_MANAGER`` and ``--api-key`` / ``PIXELFOX_API_KEY`` say where and who.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelfox.numbers import is_ascii_digits

STATE_DIR = ".pixelfox"
STATE_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterRef:
    manager: str
    api_key: str = ""
    secret: str = ""  # only for the local cluster: the admin of a local cluster holds its secret
    web_url: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        from pixelfox.grpcx.auth import api_key_metadata, node_metadata

        if self.api_key:
            return api_key_metadata(self.api_key)
        return node_metadata(self.secret) if self.secret else ()

    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """Cluster credential when known (local admin), else the API key."""
        from pixelfox.grpcx.auth import api_key_metadata, node_metadata

        return node_metadata(self.secret) if self.secret else api_key_metadata(self.api_key)


def default_database_url(state_dir: Path) -> str:
    """The SQLite file a ``pixelfox up`` folder uses unless told otherwise (``<state_dir>/pixelfox.db``)."""
    return f"sqlite+aiosqlite:///{state_dir / 'pixelfox.db'}"


def recorded_database_url(state: Path, data: dict[str, Any]) -> str:
    """The database of the cluster whose ``cluster.json`` is ``state`` (read as ``data``): the URL
    ``pixelfox up`` recorded, or the folder's SQLite file for a state file older than that record."""
    return str(data.get("database_url") or default_database_url(state.parent))


def choose_database_url(state_dir: Path, env_url: str) -> tuple[str, str]:
    """The database ``pixelfox up`` gives its managers, and a line to say about it ("" for none).

    ``env_url`` (``PIXELFOX_DATABASE__URL``) when set, else the ``database_url`` the last start
    recorded in ``<state_dir>/cluster.json`` (a cluster moved to PostgreSQL stays there), else the
    folder's own SQLite file. The line names the recorded database when it is used and is not that
    file, or warns when ``env_url`` names another one than the last start used; passwords hidden.
    A missing or unreadable ``cluster.json`` counts as no record."""
    from pixelfox.db.checks import SETTING, redact  # here: SQLAlchemy only when a cluster starts

    default = default_database_url(state_dir)
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        recorded = str(data.get("database_url") or "") if isinstance(data, dict) else ""
    except (OSError, ValueError):
        recorded = ""
    if env_url:
        if recorded and recorded != env_url:
            return env_url, (f"warning: {SETTING} names {redact(env_url)}, but the last start used "
                             f"{redact(recorded)}: the cluster now uses {redact(env_url)} (nothing stored in the "
                             "other database is shown; `pixelfox migrate-db` copies it)")
        return env_url, ""
    if recorded and recorded != default:
        return recorded, f"database: {redact(recorded)} (from the last start; set {SETTING} to change)"
    return default, ""


def find_state(start: Path | None = None) -> Path | None:
    """The nearest ``.pixelfox/cluster.json`` from ``start`` (default: cwd) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_DIR / STATE_FILE
        if candidate.is_file():
            return candidate
    return None


def is_running(pid: object) -> bool:
    """Whether the ``pixelfox up`` that wrote the state file (its ``pid``) is still alive."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_address(text: str) -> str:
    """``text`` if every comma-separated part is ``HOST:PORT`` (``[v6]:PORT``) with a port 1-65535;
    SystemExit naming the bad part otherwise (gRPC would wrap 70000 to 4464, or fail obscurely)."""
    for part in (p.strip() for p in text.split(",")):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not is_ascii_digits(port, 5) or not 1 <= int(port) <= 65535:
            raise SystemExit(f"--manager / PIXELFOX_MANAGER: {part!r} is not HOST:PORT with a port from 1 to 65535")
    return text


def resolve(manager: str | None, api_key: str | None) -> ClusterRef:
    """Flags beat environment beat the local state file; SystemExit with a hint if nothing is found.
    An explicit API key (``--api-key`` / ``PIXELFOX_API_KEY``) is used as is, also in a cluster folder."""
    manager = manager or os.environ.get("PIXELFOX_MANAGER")
    api_key = api_key or os.environ.get("PIXELFOX_API_KEY")
    state = find_state()
    data = json.loads(state.read_text()) if state else {}
    if manager and manager != data.get("manager"):
        return ClusterRef(manager=check_address(manager), api_key=api_key or "")
    if not data and not manager:
        raise SystemExit(
            "no cluster found: run `pixelfox up` in this folder, or pass --manager HOST:PORT "
            "(or set PIXELFOX_MANAGER) and --api-key (PIXELFOX_API_KEY)"
        )
    if not manager and not is_running(data.get("pid")):
        raise SystemExit(
            f"the cluster in {state.parent.parent if state else '.'} is not running: start it with `pixelfox up` "
            "there, or pass --manager HOST:PORT and --api-key for another cluster"
        )
    return ClusterRef(
        manager=manager or data["manager"],
        api_key=api_key or data.get("admin_api_key", ""),
        # a key given by flag or environment speaks for its own user (to try a user's rights here);
        # only without one does the local admin's cluster credential apply
        secret="" if api_key else data.get("secret", ""),
        web_url=data.get("web_url", ""),
    )
