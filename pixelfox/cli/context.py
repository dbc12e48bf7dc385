"""How a command finds its cluster: flags, environment, or the ``.pixelfox/`` state of ``pixelfox up``.

Run in the folder where ``pixelfox up`` runs (or below it), every command reads
``.pixelfox/cluster.json``, which holds the manager address, the web URL, the local admin
API key and the cluster secret (file mode 0600). Elsewhere, ``--manager`` /
``PIXELFOX_MANAGER`` and ``--api-key`` / ``PIXELFOX_API_KEY`` say where and who.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pixelfox import errors
from pixelfox.grpcx.client import channel, map_rpc_errors
from pixelfox.numbers import is_ascii_digits
from pixelfox.schemes import API_KEY_PREFIX, LOCAL_ADMIN_NAME
from pixelfox.v1 import manager_pb2_grpc

STATE_DIR = ".pixelfox"
STATE_FILE = "cluster.json"
#: the nodes' cluster secret; a command given no API key sends it as the cluster credential
SECRET_SETTING = "PIXELFOX_CLUSTER__SECRET"


@dataclass(frozen=True)
class ClusterRef:
    manager: str
    api_key: str = ""
    secret: str = ""  # the local cluster's, or PIXELFOX_CLUSTER__SECRET: who holds the secret is its admin
    web_url: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        from pixelfox.grpcx.auth import api_key_metadata, node_metadata

        if self.api_key:
            return api_key_metadata(self.api_key)
        return node_metadata(self.secret) if self.secret else ()

    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """Cluster credential when known (local admin), else the API key. The local admin's key goes
        beside the cluster credential: the credential decides what the call may do, the key tells the
        manager whose key this command holds, so that ``users disable`` refuses to lock that user out
        (:meth:`nodes.manager.service.ManagerService.key_holder`)."""
        from pixelfox.grpcx.auth import api_key_metadata, node_metadata

        if self.secret:
            return node_metadata(self.secret) + api_key_metadata(self.api_key)
        return api_key_metadata(self.api_key)


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


#: the variable that picks a storage pool's backend; the ``PIXELFOX_S3__*`` ones reach an S3 pool
BACKEND_SETTING = "PIXELFOX_BACKEND"


#: the AWS SDK's own variables an S3 pool falls back to when its ``PIXELFOX_S3__*`` key or region is
#: empty (botocore's credential and config chain: docs.aws.amazon.com/sdkref, "environment variables")
#: (keys, region, endpoint; not the host's own AWS_CA_BUNDLE, AWS_CONFIG_FILE or AWS_PROFILE, which stay)
AWS_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def storage_settings(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The variables of ``env`` that choose the storage nodes' pools: ``PIXELFOX_BACKEND``, every
    ``PIXELFOX_S3__*`` and, when the backend is ``s3``, the :data:`AWS_SETTINGS` the S3 client reads
    when its own key is empty (S3 keys included: ``cluster.json`` keeps them, mode 0600 in a 0700
    folder). Credentials given only as ``AWS_*`` used to be forgotten: the next ``up`` without them
    started storage nodes that could not reach the bucket."""
    s3 = env.get(BACKEND_SETTING, "").lower() == "s3"
    return {k: v for k, v in env.items()
            if k == BACKEND_SETTING or k.startswith("PIXELFOX_S3__") or (s3 and k in AWS_SETTINGS)}


def _read_state(state_dir: Path) -> dict[str, Any]:
    """``<state_dir>/cluster.json`` as a dict; {} when missing, unreadable or not an object."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_storage_env(state_dir: Path, env: dict[str, str] | os._Environ[str]) -> tuple[dict[str, str], str]:
    """The storage variables ``pixelfox up`` gives its storage nodes, and a line to say about it ("" for none).

    ``env``'s own (:func:`storage_settings`) when it sets ``PIXELFOX_BACKEND``; else the ones the last
    start recorded in ``<state_dir>/cluster.json`` (``storage_env``) when they name S3, with the line
    ``storage: s3 bucket B at URL (from the last start; set PIXELFOX_BACKEND to change)``: a cluster
    moved to S3 stays there (it went back to its empty folders, and every image answered 404). A
    ``warning:`` line when ``env`` names another backend than the last start used. SystemExit when the
    last start's pools were in S3 but its settings were not recorded (a ``cluster.json`` from before
    that record) and ``env`` names no backend: the next start must not quietly use empty folders."""
    own = storage_settings(env)
    data = _read_state(state_dir)
    recorded = data.get("storage_env") if isinstance(data.get("storage_env"), dict) else None
    last = (recorded or {}).get(BACKEND_SETTING, "fs").lower()
    pools = data.get("pools") if isinstance(data.get("pools"), dict) else {}
    if recorded is None and any(isinstance(p, dict) and p.get("backend") == "s3" for p in pools.values()):
        last = "s3"
    now = own.get(BACKEND_SETTING, "").lower()
    if now:
        if now != last and (recorded is not None or pools):  # a fresh folder has no last start to differ from
            return own, (f"warning: {BACKEND_SETTING}={now}, but the last start stored images in {last}: the storage "
                         f"nodes now use {now} (images stored in {last} are not found there; `pixelfox migrate-store` "
                         "copies them)")
        return own, ""
    if last != "s3":
        return own, ""
    if recorded is None:
        raise SystemExit(f"the last start stored images in S3, but {BACKEND_SETTING} is not set: set "
                         f"{BACKEND_SETTING}=s3 and the PIXELFOX_S3__* settings it used (or {BACKEND_SETTING}=fs "
                         "to use the folders under .pixelfox/data)")
    chosen = {**recorded, **own, **{k: v for k, v in env.items() if k in AWS_SETTINGS}}  # the environment's win
    where = f"s3 bucket {chosen.get('PIXELFOX_S3__BUCKET', 'pixelfox')}"
    if chosen.get("PIXELFOX_S3__ENDPOINT_URL"):
        where += f" at {chosen['PIXELFOX_S3__ENDPOINT_URL']}"
    return chosen, f"storage: {where} (from the last start; set {BACKEND_SETTING} to change)"


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


#: a host name (RFC 1123 labels, ``_`` allowed as in Docker and Kubernetes names) or an IPv4 address
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
#: ``dns:///name:port`` or ``dns://resolver/name:port`` (gRPC's DNS target): the part after the scheme is checked
_DNS_SCHEME = re.compile(r"dns:(//[^/]*/)?")


def _host_ok(host: str) -> bool:
    """Whether ``host`` is a host name, an IPv4 address or an IPv6 address in brackets."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    return bool(_HOST_NAME.fullmatch(host))


def check_address(text: str) -> str:
    """``text`` if every comma-separated part is ``HOST:PORT`` (a host name, an IPv4 address or
    ``[IPv6]``, and a port 1-65535; a ``dns:///HOST:PORT`` target too) and IPv6 ones are not mixed with
    others; BadRequest naming the flag and the bad part otherwise (gRPC would wrap 70000 to 4464, or
    fail obscurely)."""
    parts = [p.strip() for p in text.split(",")]
    for part in parts:
        host, sep, port = _DNS_SCHEME.sub("", part, count=1).rpartition(":")
        if not sep or not _host_ok(host) or not is_ascii_digits(port, 5) or not 1 <= int(port) <= 65535:
            raise errors.BadRequest(
                f"--manager / PIXELFOX_MANAGER: {part!r} is not HOST:PORT (a host name or an IP address, IPv6 in "
                "brackets as in [::1]:7070, and a port from 1 to 65535)")
    if len({p.startswith("[") for p in parts}) > 1:  # one channel balances over one address family
        raise errors.BadRequest(f"--manager / PIXELFOX_MANAGER: {text!r} mixes IPv4 and IPv6 addresses; use one kind")
    return text


#: what to do about a manager that cannot be reached, after "cannot reach the manager at ADDRESS (CAUSE)"
UNREACHABLE_HINT = "start it with `pixelfox up`, or check --manager / PIXELFOX_MANAGER"
#: what to do about a manager that took the connection but gave no answer (stopped with SIGSTOP, hung, overloaded)
SILENT_HINT = ("it is running but stopped (SIGSTOP: `kill -CONT PID`), hung or overloaded; see its log, "
               "or check --manager / PIXELFOX_MANAGER")


@contextlib.asynccontextmanager
async def manager_channel(ref: ClusterRef) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``ref``'s manager(s); a gRPC error in the block comes out as its ``PixelfoxError``,
    and a manager that cannot be reached at all as ``Unavailable`` naming its address and the cause:
    ``cannot reach the manager at 127.0.0.1:1 (connection refused); start it with ...``; one that gave
    no answer in time as ``Timeout`` naming it with :data:`SILENT_HINT`."""
    async with channel(ref.manager) as ch, map_rpc_errors(f"the manager at {ref.manager}", UNREACHABLE_HINT,
                                                          SILENT_HINT):
        yield ch


#: what an admin command run with no credential at all says (exit 2), with ``credential_required``
NO_CREDENTIAL = ("no API key given: pass --api-key (or set PIXELFOX_API_KEY) with an admin's key, or set "
                 "PIXELFOX_CLUSTER__SECRET to the cluster's secret")


async def call_manager(ref: ClusterRef, method: str, request: Any, *, credential_required: bool = True,
                       timeout_s: float = 30) -> Any:
    """``ManagerService.<method>(request)`` as the local admin (cluster credential) or the ``--api-key``
    (:meth:`ClusterRef.admin_metadata`), within ``timeout_s`` seconds; gRPC errors come out as their
    ``PixelfoxError`` and an unreachable manager as ``Unavailable`` (:func:`manager_channel`), which
    ``pixelfox``'s ``main`` prints as one line.

    ``credential_required`` (``users``, ``keys``): Unauthenticated (:data:`NO_CREDENTIAL`) before any
    call when ``ref`` holds neither an API key nor the cluster secret, as the manager would refuse it
    in words about admins ("only admins create keys for other users"). Without it (``nodes``) the
    call goes out as it is: an unreachable manager is said first, and a reachable one answers
    Forbidden ("maintenance mode needs the cluster credential or an admin key")."""
    if credential_required and not ref.api_key and not ref.secret:
        raise errors.Unauthenticated(NO_CREDENTIAL)
    async with manager_channel(ref) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await getattr(stub, method)(request, metadata=ref.admin_metadata(), timeout=timeout_s)


def target_flags(manager: str | None, api_key: str | None) -> str:
    """The ``--manager`` / ``--api-key`` flags a command was given, as the end of a command line it
    prints for the user to run next (" --manager 10.0.0.1:7070 --api-key pfx_AbCdEf…"); "" for none
    (the environment and the cluster folder still apply to that command). The key is never shown
    in full: an API key by its first 10 characters and "…", as Settings lists it, anything else as
    ``KEY``; the user puts the whole key back."""
    flags = f" --manager {shlex.quote(manager)}" if manager else ""
    if api_key:
        shown = f"{api_key[:10]}…" if api_key.startswith(API_KEY_PREFIX) and len(api_key) > 20 else "KEY"
        flags += f" --api-key {shown}"
    return flags


def given_api_key(flag: str | None) -> str:
    """The API key given: ``--api-key`` (``flag``; None when not given), else ``PIXELFOX_API_KEY``, else "".
    BadRequest for one given empty (``--api-key ""``, ``PIXELFOX_API_KEY=`` of an unset ``$KEY``): it fell
    back to the local admin's key in a cluster folder, so a script's upload was quietly the admin's."""
    for name, value in (("--api-key", flag), ("PIXELFOX_API_KEY", os.environ.get("PIXELFOX_API_KEY"))):
        if value is not None:
            if not value.strip():
                raise errors.BadRequest(f"{name} is empty: give an API key, or leave it out to act as the "
                                        "local admin in a cluster folder")
            return value
    return ""


def check_api_key(api_key: str) -> str:
    """``api_key`` unless it is what :func:`target_flags` prints in its place (a key shortened to
    "pfx_AbCdEf…", or ``KEY``), pasted as it was: BadRequest saying to give the whole key (the
    server would only answer "invalid API key")."""
    if api_key.endswith(("…", "...")) or api_key == "KEY":
        form = "placeholder" if api_key == "KEY" else "shortened form"
        raise errors.BadRequest(f"--api-key / PIXELFOX_API_KEY: {api_key!r} is the {form} pixelfox prints in "
                                "place of a key; give the whole key")
    return api_key


def local_key_hint(manager: str | None, api_key: str | None, code: str = errors.Unauthenticated.code) -> str:
    """What to say when the server refuses the API key of a command given ``--manager`` /
    ``--api-key`` as ``manager`` / ``api_key`` (None when not given), with the error ``code``: when the
    key is the local admin's from the folder's ``.pixelfox/cluster.json`` (no key by flag or
    environment, no other manager), a ``hint:`` line; "" otherwise.

    For ``account-disabled`` (:class:`pixelfox.errors.AccountDisabled`) the line says the user who owns
    the key is disabled and how to enable it (``pixelfox users enable admin``, which the cluster
    credential may still do); for any other code that the key was revoked (under Settings) and that
    the next ``pixelfox up`` there makes a new one (:meth:`pixelfox.cli.launcher.LocalCluster.ensure_admin`)."""
    if api_key or os.environ.get("PIXELFOX_API_KEY"):
        return ""
    state = find_state()
    data = _read_state(state.parent) if state else {}
    manager = manager or os.environ.get("PIXELFOX_MANAGER")
    if state is None or not data.get("admin_api_key") or (manager and manager != data.get("manager")):
        return ""
    if code == errors.AccountDisabled.code:
        return (f"hint: the local admin's API key in {state} belongs to user {LOCAL_ADMIN_NAME}, which is disabled; "
                f"enable it with `pixelfox users enable {LOCAL_ADMIN_NAME}` in {state.parent.parent}, or pass "
                "--api-key with a key of your own")
    return (f"hint: the local admin's API key in {state} was revoked (under Settings, API keys); the next "
            f"`pixelfox up` in {state.parent.parent} makes a new one (stop this one with Ctrl-C and start it "
            "again), or pass --api-key with a key of your own")


def not_running(state: Path | None, elsewhere: str) -> SystemExit:
    """The error of a command run in the folder of a ``pixelfox up`` that is not running (``state``:
    its ``cluster.json``): "the cluster in DIR is not running: start it with `pixelfox up` there,
    or ``elsewhere``" (how to name another cluster), for ``main`` to print as one line, exit 1."""
    return SystemExit(f"the cluster in {state.parent.parent if state else '.'} is not running: start it with "
                      f"`pixelfox up` there, or {elsewhere}")


def _left_running(state: Path | None, data: dict[str, Any]) -> bool:
    """Whether the nodes of the folder's cluster whose ``pixelfox up`` is gone (SIGKILLed) still run,
    a manager among them (:mod:`pixelfox.cli.leftovers`); says so on stderr when they do."""
    from pixelfox.cli import leftovers  # here: leftovers imports this module

    if state is None or not data.get("manager"):
        return False
    found = leftovers.find(state.parent.parent)
    if not any(name.startswith("manager") for name in found):
        return False
    print(f"`pixelfox up` in {state.parent.parent} is not running, but its nodes are "
          f"({', '.join(sorted(found))}): the next `pixelfox up` there stops and restarts them "
          "(`pixelfox down` there stops them)",
          file=sys.stderr, flush=True)
    return True


def resolve(manager: str | None, api_key: str | None, *, left_running: bool = False) -> ClusterRef:
    """Flags beat environment beat the local state file; SystemExit with a hint if nothing is found,
    BadRequest for a manager address that is not HOST:PORT (:func:`check_address`) or an API key
    as pixelfox prints it shortened (:func:`check_api_key`).
    An explicit API key (``--api-key`` / ``PIXELFOX_API_KEY``) is used as is, also in a cluster folder.
    Without one, ``PIXELFOX_CLUSTER__SECRET`` (:data:`SECRET_SETTING`) is the cluster credential for a
    manager named by ``--manager`` / ``PIXELFOX_MANAGER`` (a cluster run by hand: its first admin).
    ``left_running`` (``pixelfox status``): a folder whose ``up`` is gone but whose manager still runs
    counts as running, with a line saying so (:func:`_left_running`)."""
    manager = manager or os.environ.get("PIXELFOX_MANAGER")
    api_key = check_api_key(given_api_key(api_key)) or None
    state = find_state()
    data = json.loads(state.read_text()) if state else {}
    if manager and manager != data.get("manager"):
        # a cluster run by hand: its nodes' PIXELFOX_CLUSTER__SECRET is the credential that makes its first
        # admin (as `pixelfox up` does: launcher.LocalCluster.ensure_admin), unless a key says who
        secret = "" if api_key else os.environ.get(SECRET_SETTING, "")
        return ClusterRef(manager=check_address(manager), api_key=api_key or "", secret=secret)
    if not data and not manager:
        raise SystemExit(
            "no cluster found: run `pixelfox up` in this folder, or pass --manager HOST:PORT "
            "(or set PIXELFOX_MANAGER) and --api-key (PIXELFOX_API_KEY)"
        )
    if not manager and not is_running(data.get("pid")) and not (left_running and _left_running(state, data)):
        raise not_running(state, "pass --manager HOST:PORT and --api-key for another cluster")
    return ClusterRef(
        manager=manager or data["manager"],
        api_key=api_key or data.get("admin_api_key", ""),
        # a key given by flag or environment speaks for its own user (to try a user's rights here);
        # only without one does the local admin's cluster credential apply
        secret="" if api_key else data.get("secret", ""),
        web_url=data.get("web_url", ""),
    )
