"""Shared settings sub-models (pydantic-settings), composed by every node's ``Settings``.

Environment variables use the prefix ``PIXELFOX_`` and ``__`` for nesting, so
``PIXELFOX_REDIS__URL`` sets ``settings.redis.url`` (pict-rs' ``PICTRS__A__B`` scheme).
Settings are loaded once in a node's ``__main__`` and passed down; nothing else reads the
environment. ``docs/config.md`` lists every variable.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from pixelfox import errors, tickets

#: the ``model_config`` of a settings model with float fields: ``inf`` and ``nan`` are refused
#: ("Input should be a finite number"). No duration or rate here means anything at infinity: an
#: infinite node timeout declares no node dead, ever; an infinite interval never acts.
FINITE = ConfigDict(allow_inf_nan=False)


class ClusterSettings(BaseModel):
    """How a node finds and proves membership of its cluster."""

    model_config = FINITE

    manager: str = Field("127.0.0.1:7070", description="gRPC address(es) of the manager, comma-separated")
    secret: SecretStr = Field(SecretStr(""), description="cluster credential sent as pixelfox-cluster-token")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="seconds between heartbeats")


class GrpcServerSettings(BaseModel):
    model_config = FINITE

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    advertise_host: str = Field("", description="host other nodes dial; defaults to host")
    reflection: bool = True
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024 * 1024, description="largest gRPC message in bytes "
                                   "(an upload chunk and its header must fit)")
    grace_s: float = Field(10.0, ge=0, description="seconds to finish in-flight calls on SIGTERM")


class HttpServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    public_url: str = Field("", description="URL clients use for this origin; defaults to http://host:port")


class RedisSettings(BaseModel):
    model_config = FINITE

    url: str = "redis://127.0.0.1:6379/0"
    max_connections: int = Field(200, ge=1, description=(
        "connections per process (single and Sentinel: more callers wait; Cluster: per node, more fail)"))
    pool_timeout_s: float = Field(20.0, gt=0, description="how long a caller waits for a free connection (seconds)")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        """``url`` if its scheme is one :mod:`pixelfox.redisx` connects with; ValueError naming the forms."""
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme not in REDIS_SCHEMES:
            raise ValueError(f"{hide_password(url)!r} is not a Redis URL: use {REDIS_FORMS}")
        return url


#: the URL schemes of a Redis (single, TLS, socket, Sentinel, Cluster: :mod:`pixelfox.redisx`)
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
REDIS_FORMS = ("redis://[:PASSWORD@]HOST:6379/0 (rediss:// for TLS), unix:///PATH.sock, "
               "redis+sentinel://HOST:26379/MASTER or redis+cluster://HOST:6379")


class DatabaseSettings(BaseModel):
    """The metadata database. A URL of the wrong form or driver is refused here, naming the form to
    use (:func:`pixelfox.db.checks.check_url`); whether the database answers is checked at start."""

    url: str = "sqlite+aiosqlite:///pixelfox.db"
    echo: bool = False
    read_urls: list[str] = Field(
        default_factory=list, description="read replicas of url (JSON list); reads go there (pixelfox.db.replicas)"
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return _checked_database_url(url)

    @field_validator("read_urls")
    @classmethod
    def _usable_read_urls(cls, urls: list[str]) -> list[str]:
        return [_checked_database_url(u) for u in urls]


def _checked_database_url(url: str) -> str:
    """``url`` if :func:`pixelfox.db.checks.check_url` takes it; ValueError with its reason otherwise."""
    from pixelfox.db.checks import check_url  # here: nodes without a database need not import SQLAlchemy

    try:
        check_url(url)
    except errors.BadRequest as exc:
        raise ValueError(exc.message) from None
    return url


_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)[^@/\s]+@")


def hide_password(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it shown as ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


class LogSettings(BaseModel):
    level: str = "INFO"
    format: str = Field("text", pattern="^(text|json)$")


#: default of ``anonymous_ip_uploads_per_minute``: a visitor dropping a batch of photos on the upload
#: page gets through, a script flooding a fresh site gets 20 a minute. Chevereto's flood protection
#: is on by default too (install defaults: 50 uploads a minute, 500 an hour, 1,000 a day); guests
#: here have a minute budget only, with no hourly or daily cap behind it, so it is lower, and
#: signed-in users and API keys are not in it (``user_uploads_per_minute`` is theirs).
ANONYMOUS_IP_UPLOADS_PER_MINUTE = 20


def proxy_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of a comma-separated list of proxy addresses or networks (``10.0.0.5, 10.0.0.0/8``;
    blanks ignored). Raises ValueError naming the first entry that is not an IP address or network
    (a network with host bits set, ``10.0.0.1/8``, is not one, as aiohttp-remotes reads them)."""
    networks = []
    for entry in (t.strip() for t in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:  # "... has host bits set" says more; "does not appear to be ..." repeats
            why = "" if "does not appear" in str(exc) else f" ({exc})"
            raise ValueError(f"{entry!r} is not an IP address or network{why}; use addresses or networks "
                             "such as 10.0.0.5 or 10.0.0.0/8, comma-separated") from None
    return networks


class LimitsSettings(BaseModel):
    """Upload and image limits (defaults: RELIABILITY.md, imgproxy/pict-rs source limits)."""

    # every limit is at least 1: 0 would refuse every upload, not lift the limit
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1, description="largest upload in bytes")
    max_pixels: int = Field(100_000_000, ge=1, description="pixels of one frame (width x height)")
    max_frames: int = Field(1_000, ge=1, description="frames of an animation")
    max_animation_bytes: int = Field(1 << 30, ge=0, description="bytes of pixel buffers a processing node may "
                                     "need for one animation (canvases, rendition frames, WebP encoders; "
                                     "docs/imaging.md); over it an upload node refuses the file as too large "
                                     "(set the same on upload and processing nodes)")
    process_timeout_s: float = Field(30.0, ge=0, description="seconds one image may take on a processing node "
                                     "(imaging.Limits.timeout_s; 0 = none); a shorter job time limit "
                                     "(PIXELFOX_JOB_TIMEOUT_S on the manager) wins")
    chunk_size: int = Field(256 * 1024, ge=4096, le=4 * 1024 * 1024, description="upload chunk size in bytes")
    ticket_ttl_s: int = Field(900, ge=1, description="seconds an upload ticket is valid")
    ticket_leeway_s: int = Field(tickets.LEEWAY_S, ge=0, description="seconds a ticket is still accepted after "
                                 "it expires, for clock skew between nodes; set the same on every manager and "
                                 "upload node")
    probe_bytes: int = Field(256 * 1024, ge=4096, description="bytes of an upload read before the probe")
    upload_ttl_s: int = Field(3600, ge=1, description="an unfinished upload's state and staged bytes live this "
                              "long after its last chunk (abandoned-upload TTL)")
    user_uploads_per_minute: int = Field(120, ge=0, description="uploads a user may start per minute; 0 = no limit")
    ip_uploads_per_minute: int = Field(0, ge=0, description="uploads one client IP may start per minute at the "
                                       "web node, whoever sends them (accounts and API keys too); 0 = no limit "
                                       "(set it once the web node sees real client addresses: behind a reverse "
                                       "proxy, PIXELFOX_TRUSTED_PROXIES)")
    anonymous_ip_uploads_per_minute: int = Field(
        ANONYMOUS_IP_UPLOADS_PER_MINUTE, ge=0, description="uploads one client IP may start per minute at the web "
        "node without an account or API key (429 says to log in or use an API key); 0 = no limit. Behind a "
        "reverse proxy set PIXELFOX_TRUSTED_PROXIES, or every visitor shares the proxy's one budget")
    user_open_uploads: int = Field(32, ge=0, description="unfinished uploads a user may have at once; 0 = no limit")
    user_quota_bytes: int = Field(0, ge=0, description="bytes of originals a user may keep; 0 = no limit")


class NodeSettings(BaseSettings):
    """Fields every node has; each node subclasses this with its own section. Its float fields, and
    its subclasses', refuse ``inf`` and ``nan`` (:data:`FINITE`)."""

    model_config = SettingsConfigDict(env_prefix="PIXELFOX_", env_nested_delimiter="__", extra="ignore",
                                      allow_inf_nan=False)

    node_id: str = ""
    cluster: ClusterSettings = ClusterSettings()
    grpc: GrpcServerSettings = GrpcServerSettings()
    log: LogSettings = LogSettings()
    metrics_port: int = Field(0, ge=-1, le=65535,
                              description="Prometheus /metrics port; 0 picks a free one, -1 disables")

    def redacted(self) -> str:
        """The effective config as JSON with secrets shown as ``**********``."""
        return self.model_dump_json(indent=2)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of the setting at ``loc`` (a pydantic error location):
    ``("cluster", "heartbeat_interval_s")`` -> ``PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S``."""
    return "PIXELFOX_" + "__".join(str(p) for p in loc).upper()


def setting_problems(exc: ValidationError) -> list[str]:
    """One line per problem in ``exc`` (raised reading settings from the environment), naming the
    variable: ``PIXELFOX_GRPC__PORT: Input should be a valid integer (got 'abc')``. A validator's own
    message is shown as it is (it says what it got); URL passwords are hidden."""
    lines = []
    for err in exc.errors():
        var = env_name(err["loc"])
        if err["type"] == "value_error":
            lines.append(f"{var}: {err['ctx']['error']}")
            continue
        shown = isinstance(err.get("input"), str | int | float)
        got = f" (got {hide_password(repr(err['input']))})" if shown else ""
        lines.append(f"{var}: {err['msg']}{got}")
    return lines


def _takes_json(annotation: object) -> bool:
    """Whether pydantic-settings reads a field of this type from the environment as JSON: a list, set,
    tuple, dict or model, or an optional or union of one (``str``, ``int``... never are)."""
    if isinstance(annotation, type):
        return issubclass(annotation, (BaseModel, list, set, frozenset, tuple, dict))
    origin = get_origin(annotation)
    if origin in (list, set, frozenset, tuple, dict):
        return True
    return any(_takes_json(arg) for arg in get_args(annotation)) if origin is not None else False


def _json_setting(model: type[BaseModel], name: str) -> bool:
    """Whether ``name`` (``PIXELFOX_DATABASE__READ_URLS``) is a setting of ``model`` read as JSON."""
    parts = name.removeprefix("PIXELFOX_").lower().split("__")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return False
        if i == len(parts) - 1:
            return _takes_json(info.annotation)
        if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            return False
        model = info.annotation
    return False


def json_problems(exc: SettingsError, cls: type[BaseModel], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per variable that made pydantic-settings raise ``exc`` reading ``cls``: a list or object
    setting (``PIXELFOX_TIERS__ORDER``, ``PIXELFOX_DATABASE__READ_URLS``...) whose value is not JSON. Its
    own message names only the top field ("error parsing value for field "database" from source ..."),
    and it was a traceback, exit 1. Only settings of ``cls`` read as JSON are checked (a
    ``PIXELFOX_DATABASE__URL`` beside a bad ``READ_URLS`` was named too). ``environ`` defaults to
    ``os.environ``."""
    env = os.environ if environ is None else environ
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1).upper() if found else ""
    lines = []
    for name in sorted(env):
        if not field or not (name == f"PIXELFOX_{field}" or name.startswith(f"PIXELFOX_{field}__")):
            continue
        if not _json_setting(cls, name):
            continue
        try:
            json.loads(env[name])
        except ValueError as bad:
            lines.append(f"{name}: not valid JSON ({bad}); a list or object setting is written as JSON, "
                         'e.g. ["a", "b"] or {"key": "value"}')
    return lines or [f"PIXELFOX_{field or '...'}: {exc}"]


def _from_environment(cls: type[SettingsT]) -> SettingsT | list[str]:
    """``cls()``, or the problems that kept it from being read (one line each, naming the variable)."""
    try:
        return cls()
    except ValidationError as exc:
        return setting_problems(exc)
    except SettingsError as exc:  # a list/object setting that is not JSON
        return json_problems(exc, cls)


def read_settings(cls: type[SettingsT]) -> SettingsT:
    """``cls()`` read from the environment, for a command (``pixelfox up``) that reads a node's
    settings: raises BadRequest with :func:`setting_problems` on one line, ``; ``-separated."""
    got = _from_environment(cls)
    if isinstance(got, list):
        raise errors.BadRequest("; ".join(got))
    return got


#: the fewest characters a cluster secret may have (``openssl rand -base64 32`` gives 44)
MIN_SECRET_CHARS = 16
#: how to make a cluster secret, said by every refusal of one
MAKE_SECRET = "make one with `openssl rand -base64 32`"


def secret_problem(secret: str) -> str | None:
    """Why a node must not start on the cluster secret ``secret`` (one line naming
    ``PIXELFOX_CLUSTER__SECRET`` and how to make one), or None when it is usable: it is missing,
    shorter than :data:`MIN_SECRET_CHARS`, or a placeholder starting with ``change-me`` (as the
    Kubernetes example ships). Anyone who guesses it can act as a node and forge upload tickets."""
    var = "PIXELFOX_CLUSTER__SECRET"
    if not secret:
        return f"{var} is required: {MAKE_SECRET}"
    if secret.lower().startswith("change-me"):
        return f"{var} is the example's placeholder ({secret[:9]}...): {MAKE_SECRET}"
    if len(secret) < MIN_SECRET_CHARS:
        return f"{var} is {len(secret)} characters long; use at least {MIN_SECRET_CHARS}: {MAKE_SECRET}"
    return None


def require_secret(settings: NodeSettings) -> None:
    """End the process as :func:`load_settings` does (``configuration error:``, exit 2) when the cluster
    secret of ``settings`` is not usable (:func:`secret_problem`); called by every node at start."""
    if problem := secret_problem(settings.cluster.secret.get_secret_value()):
        print(f"configuration error:\n  {problem}", file=sys.stderr)
        raise SystemExit(2)


def print_config(settings: NodeSettings) -> None:
    """``--print-config`` of a node: ``settings`` as JSON on stdout, secrets redacted, after a warning on
    stderr for each ``PIXELFOX_`` variable no node reads (:mod:`pixelfox.cli.setting_names`)."""
    from pixelfox.cli.setting_names import warn_unknown_settings  # here: it imports every node's settings

    warn_unknown_settings(os.environ)
    print(settings.redacted())


#: set by ``pixelfox up`` for the nodes it starts: it warned about unknown settings itself
SETTINGS_CHECKED = "PIXELFOX_SETTINGS_CHECKED"


def log_unknown_settings(own: type[BaseModel]) -> int:
    """Log one warning per ``PIXELFOX_`` variable of this process's environment that no node reads
    (:func:`pixelfox.cli.setting_names.unknown_settings`): a node started by hand on another host says it
    in its own log, not only ``pixelfox up``. Called by every node once its logging is configured, with its
    own settings class ``own`` (the others are imported only when ``own`` does not know a variable);
    not for the nodes ``pixelfox up`` started (:data:`SETTINGS_CHECKED`).
    Returns how many were logged."""
    from pixelfox.cli.setting_names import unknown_settings  # here: it imports every node's settings

    if os.environ.get(SETTINGS_CHECKED):
        return 0
    lines = unknown_settings(os.environ, own)
    for line in lines:
        logging.getLogger("pixelfox.config").warning("%s", line.removeprefix("warning: "))
    return len(lines)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """``cls()`` read from the environment; a bad value ends the process with one line per problem
    naming the variable (:func:`setting_problems`) instead of pydantic's traceback. Raises
    SystemExit (exit status 2)."""
    got = _from_environment(cls)
    if isinstance(got, list):
        print("configuration error:\n  " + "\n  ".join(got), file=sys.stderr)
        raise SystemExit(2)
    return got
