"""``pixelfox up``: a whole local cluster on loopback, every node a child process.

Layout under ``<cwd>/.pixelfox/``: ``cluster.json`` (what other commands read), ``secret``
(the cluster credential, kept across restarts), ``pixelfox.db`` (SQLite metadata),
``redis/`` (the private Redis' AOF, when no Redis URL is given), ``data/<node>/`` (storage
pools and upload staging) and ``logs/<node>.log``. Ports are picked free on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelfox import errors
from pixelfox.cli.context import STATE_DIR, STATE_FILE, choose_database_url, storage_settings
from pixelfox.config import SETTINGS_CHECKED
from pixelfox.grpcx.auth import api_key_metadata, node_metadata
from pixelfox.grpcx.client import channel, trailer
from pixelfox.schemes import LOCAL_ADMIN_KEY_LABEL, LOCAL_ADMIN_NAME
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc

_HANDED_OUT: set[int] = set()
#: Ports are picked below Linux's ephemeral range (32768-60999), so the kernel never hands one of
#: them to an outgoing connection between the moment we pick it and the moment the node binds it.
PORT_RANGE = (20000, 32000)


def _bindable(port: int) -> bool:
    """Whether a server could bind ``port`` now (servers set SO_REUSEADDR, so TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


#: files and folders the cluster writes are its own: the database holds password and API-key
#: hashes, Redis' AOF holds session ids
PRIVATE_UMASK = 0o077


def private_folder(path: Path) -> bool:
    """Create ``path`` (and parents) with mode 0700, or make an existing one 0700 (not readable by
    group or others). Returns True when an existing folder's mode had to change."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
        return True
    return False


def private_tree(path: Path) -> int:
    """Take group and other permissions off everything under ``path`` (files and folders an older
    PixelFox wrote before the cluster ran with :data:`PRIVATE_UMASK`: the SQLite file at 0644, say),
    without following symlinks. Returns how many entries changed. Raises OSError as ``os.chmod``."""
    changed = 0
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = os.path.join(top, name)
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode) or not mode & 0o077:
                continue
            os.chmod(entry, stat.S_IMODE(mode) & ~0o077)
            changed += 1
    return changed


def start_child(argv: list[str], log: Path, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start one child of the cluster: output appended to ``log``, its own session (a terminal's
    Ctrl-C reaches ``up`` only, which stops the children in order), umask 077. A child that outlives a
    SIGKILLed ``up`` is stopped by the next ``up`` (:mod:`pixelfox.cli.leftovers`). Not tied to
    ``up`` with ``PR_SET_PDEATHSIG``: through a ``preexec_fn`` (fork instead of vfork, grpcio's fork
    handlers) a child crashed now and then, and through ``setpriv --pdeathsig`` the chaos test's Redis
    got a SIGTERM nobody sent; neither was understood in time."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True, umask=PRIVATE_UMASK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and was not handed out before by this process."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Counts:
    upload: int = 2
    proc: int = 2
    storage: int = 2
    web: int = 1
    managers: int = 1  # several managers share Redis and the database (issue 6)


#: glibc malloc arenas of a processing node (``MALLOC_ARENA_MAX``), unless the environment sets it: with
#: glibc's default (8 per core) the pool threads' arenas keep the top of their heaps, which
#: ``malloc_trim`` does not give back; with 2 the idle trim brings a node back to within 10-45 MB of
#: its start (docs/benchmarks.md, "Processing node: idle memory after a burst")
PROC_MALLOC_ARENA_MAX = "2"

#: the command line's own variables (which cluster to talk to, as whom, tracebacks), not node settings
CLIENT_ONLY = frozenset({"PIXELFOX_MANAGER", "PIXELFOX_API_KEY", "PIXELFOX_DEBUG"})


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)  # how to start it again (restart)
    env: dict[str, str] | None = None


@dataclass
class LocalCluster:
    """Start, watch and stop the children of one local cluster rooted at ``root``."""

    root: Path
    counts: Counts = field(default_factory=Counts)
    redis_url: str = ""
    host: str = "127.0.0.1"
    children: list[Child] = field(default_factory=list)
    manager_address: str = ""
    web_urls: list[str] = field(default_factory=list)
    web_names: dict[str, str] = field(default_factory=dict)  # base URL -> child name
    redis_appendfsync: str = "everysec"  # the private Redis' AOF fsync policy: always | everysec | no
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> PIXELFOX_* settings (tests)
    extra_env: dict[str, str] = field(default_factory=dict)  # PIXELFOX_* settings for every node (tests)
    made_admin_password: bool = False  # ensure_admin created user admin with admin_password_file's password

    def _port(self, key: str) -> int:
        """The port this folder's cluster used for ``key`` last time if it is still free, else a new one.

        Keeping ports across restarts keeps every share link, embed code and stored URL valid.
        """
        if not hasattr(self, "_ports"):
            path = self.state / "ports.json"
            self._saved_ports: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
            self._ports: dict[str, int] = {}
        if key in self._ports:
            return self._ports[key]
        saved = self._saved_ports.get(key)
        port = saved if saved and saved not in _HANDED_OUT and _bindable(saved) else free_port()
        _HANDED_OUT.add(port)
        self._ports[key] = port
        if saved and port != saved:  # never silently: links naming the saved port stop working
            print(f"WARNING: port {saved} ({key}) of this folder's cluster is taken by another program; "
                  f"using {port} for now (links naming port {saved} do not work until it is free again "
                  f"and the cluster restarts)", file=sys.stderr, flush=True)
        # a port we had to move off stays on record: the next start tries it again
        moved = {k: p for k, p in self._ports.items() if k not in self._saved_ports}
        (self.state / "ports.json").write_text(json.dumps({**self._saved_ports, **moved}, indent=2))
        return port

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    def _secret(self) -> str:
        path = self.state / "secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def _env(self, node_id: str, **extra: str) -> dict[str, str]:
        """The environment of node ``node_id``: this process' own (``PIXELFOX_*`` settings included,
        so ``PIXELFOX_ALLOW_ANONYMOUS=false pixelfox up`` reaches the managers), without the command
        line's own variables (:data:`CLIENT_ONLY`), then what the launcher sets per node (id, ports,
        folders, addresses, secret: these win; a processing node's ``MALLOC_ARENA_MAX`` only when unset:
        :data:`PROC_MALLOC_ARENA_MAX`), then the tests' ``extra_env``/``role_env``, then ``extra``."""
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_ONLY}
        env.update({
            "PIXELFOX_NODE_ID": node_id,
            "PIXELFOX_CLUSTER__MANAGER": self.manager_address,
            "PIXELFOX_CLUSTER__SECRET": self.secret,
            "PIXELFOX_GRPC__HOST": self.host,
            "PIXELFOX_GRPC__ADVERTISE_HOST": self.host,  # what the others dial: never an address from the shell
            "PIXELFOX_METRICS_PORT": str(self._port(f"{node_id}.metrics")),
            "PIXELFOX_LOG__LEVEL": os.environ.get("PIXELFOX_LOG__LEVEL", "INFO"),
            SETTINGS_CHECKED: "1",  # up named unknown settings once: the node skips its own check
            "PYTHONUNBUFFERED": "1",
        })
        if node_id.rstrip("0123456789") == "proc":
            env.setdefault("MALLOC_ARENA_MAX", PROC_MALLOC_ARENA_MAX)
        env.update(self.extra_env)
        env.update(self.role_env.get(node_id.rstrip("0123456789"), {}))
        env.update(extra)
        return env

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> Child:
        log = self.state / "logs" / f"{name}.log"
        proc = start_child([sys.executable, "-m", module], log, env, self.root)
        child = Child(name, proc, log, [sys.executable, "-m", module], env)
        self.children.append(child)
        return child

    def _start_redis(self) -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server not found: install it (Debian: apt-get install redis-server) "
                             "or set PIXELFOX_REDIS__URL to an existing Redis")
        port = self._port("redis")
        folder = self.state / "redis"
        folder.mkdir(mode=0o700, exist_ok=True)
        log = self.state / "logs" / "redis.log"
        proc = start_child(
            [exe, "--bind", self.host, "--port", str(port), "--dir", str(folder), "--appendonly", "yes",
             "--appendfsync", self.redis_appendfsync, "--save", "", "--protected-mode", "yes"], log)
        self.children.append(Child("redis", proc, log, list(proc.args)))  # type: ignore[arg-type]
        return f"redis://{self.host}:{port}/0"

    def start(self) -> None:
        """Start Redis (unless a URL is set), the manager, then every other node."""
        private_folder(self.state)
        for sub in ("logs", "data"):
            (self.state / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secret = self._secret()
        self.redis_url = self.redis_url or os.environ.get("PIXELFOX_REDIS__URL", "") or self._start_redis()
        ports = [self._port(f"manager{i}.grpc") for i in range(1, max(1, self.counts.managers) + 1)]
        self.manager_address = ",".join(f"{self.host}:{p}" for p in ports)
        db = self.database_url()
        # share links name the first web node's address (fixed per folder, see _port), not whichever
        # web node registered first
        self.site_url = f"http://{self.host}:{self._port('web1.http')}" if self.counts.web else ""
        for i, port in enumerate(ports, 1):
            self.add_manager(f"manager{i}", port, db)
        for i in range(1, self.counts.storage + 1):
            self.add_storage(f"storage{i}")
        for i in range(1, self.counts.upload + 1):
            self.add_upload(f"upload{i}")
        workers = max(1, (os.cpu_count() or 1) // max(1, self.counts.proc))
        for i in range(1, self.counts.proc + 1):
            name = f"proc{i}"
            self._spawn(name, "nodes.proc", self._env(name, PIXELFOX_GRPC__PORT=str(self._port(f"{name}.grpc")),
                                                      PIXELFOX_WORKERS=str(workers)))
        for i in range(1, self.counts.web + 1):
            self.add_web(f"web{i}")
        self.record_pids()  # now, not at ready: a SIGKILL while starting leaves them findable

    def database_url(self) -> str:
        """What the managers are given: ``PIXELFOX_DATABASE__URL``, else the database the last start
        recorded in ``cluster.json``, else this folder's SQLite file (:func:`choose_database_url`)."""
        return choose_database_url(self.state, os.environ.get("PIXELFOX_DATABASE__URL", ""))[0]

    def add_manager(self, name: str, port: int, db: str = "") -> None:
        """Start a manager on ``port`` (all managers share Redis and the database)."""
        db = db or self.database_url()
        self._spawn(name, "nodes.manager", self._env(
            name, PIXELFOX_GRPC__PORT=str(port), PIXELFOX_REDIS__URL=self.redis_url, PIXELFOX_DATABASE__URL=db,
            PIXELFOX_SITE_URL=getattr(self, "site_url", ""),
            PIXELFOX_REPLICAS=str(min(2, self.counts.storage))))

    def add_storage(self, name: str, **env: str) -> Child:
        """Start one storage node: its pool is ``data/<name>``, or with ``PIXELFOX_BACKEND=s3`` in the
        environment the prefix ``<PIXELFOX_S3__PREFIX>/<name>/`` of that bucket (each node its own pool,
        so two replicas are two copies); ``env`` adds or overrides variables (e.g. ``PIXELFOX_BACKEND=s3``
        and the ``PIXELFOX_S3__*`` settings of an S3 pool). Returns the child."""
        port = self._port(f"{name}.http")
        pool: dict[str, str] = {"PIXELFOX_DATA_DIR": str(self.state / "data" / name)}
        if os.environ.get("PIXELFOX_BACKEND", "").lower() == "s3":
            prefix = os.environ.get("PIXELFOX_S3__PREFIX", "")
            pool["PIXELFOX_S3__PREFIX"] = f"{prefix}{'/' if prefix and not prefix.endswith('/') else ''}{name}/"
        return self._spawn(name, "nodes.storage", self._env(
            name, PIXELFOX_GRPC__PORT=str(self._port(f"{name}.grpc")), PIXELFOX_HTTP__HOST=self.host,
            PIXELFOX_HTTP__PORT=str(port), PIXELFOX_HTTP__PUBLIC_URL=f"http://{self.host}:{port}",
            **{**pool, **env}))

    def add_upload(self, name: str) -> None:
        """Start one upload node; all of them share ``data/staging`` and Redis, so any one resumes an upload."""
        port = self._port(f"{name}.http")
        self._spawn(name, "nodes.upload", self._env(
            name, PIXELFOX_GRPC__PORT=str(self._port(f"{name}.grpc")), PIXELFOX_REDIS__URL=self.redis_url,
            PIXELFOX_STAGING_DIR=str(self.state / "data" / "staging"), PIXELFOX_HTTP__HOST=self.host,
            PIXELFOX_HTTP__PORT=str(port), PIXELFOX_HTTP__PUBLIC_URL=f"http://{self.host}:{port}"))

    def add_web(self, name: str, port: int = 0) -> str:
        """Start one more web node (on ``port``, or a free one); returns its base URL."""
        port = port or self._port(f"{name}.http")
        url = f"http://{self.host}:{port}"
        self._spawn(name, "web", self._env(
            name, PIXELFOX_HTTP__HOST=self.host, PIXELFOX_HTTP__PORT=str(port), PIXELFOX_HTTP__PUBLIC_URL=url,
            PIXELFOX_REDIS__URL=self.redis_url))
        if url not in self.web_urls:
            self.web_urls.append(url)
        self.web_names[url] = name
        return url

    def child(self, name: str) -> Child:
        """The most recent child process called ``name``."""
        for c in reversed(self.children):
            if c.name == name:
                return c
        raise KeyError(name)

    def metrics_url(self, node_id: str) -> str:
        """The Prometheus ``/metrics`` URL of a started node (KeyError for one this cluster did not start)."""
        return f"http://{self.host}:{self._ports[f'{node_id}.metrics']}/metrics"

    def terminate(self, name: str, timeout_s: float = 15.0) -> None:
        """SIGTERM one child and wait for it to exit (SIGKILL after ``timeout_s``)."""
        c = self.child(name)
        if c.proc.poll() is None:
            c.proc.terminate()
            try:
                c.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def restart(self, name: str, *, sig: int = signal.SIGKILL, env: dict[str, str] | None = None,
                timeout_s: float = 15.0) -> Child:
        """Stop child ``name`` with ``sig`` (SIGKILL by default; SIGKILL after ``timeout_s``) and start it again
        with the same command, ports and folders; ``env`` overrides some of its variables. Returns the new child."""
        c = self.child(name)
        if c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(sig)
            try:
                c.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        new_env = None if c.env is None else {**c.env, **(env or {})}
        proc = start_child(c.argv, c.log, new_env, self.root)
        self.children.remove(c)
        child = Child(name, proc, c.log, c.argv, new_env)
        self.children.append(child)
        return child

    def add_proc(self, name: str, workers: int = 1) -> Child:
        """Start one more processing node with ``workers`` slots."""
        return self._spawn(name, "nodes.proc", self._env(name, PIXELFOX_GRPC__PORT=str(free_port()),
                                                         PIXELFOX_WORKERS=str(workers)))

    def dead_children(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    async def wait_ready(self, timeout_s: float = 60.0) -> list[common_pb2.Node]:
        """Wait until the manager is SERVING and every node is registered and healthy, or heartbeating
        in maintenance (an operator's choice that outlives a restart: such a node must not keep the
        cluster from starting). SystemExit when a node exits or ``timeout_s`` runs out."""
        expected = self.counts.upload + self.counts.proc + self.counts.storage + self.counts.web
        deadline = time.monotonic() + timeout_s
        md = node_metadata(self.secret)
        async with channel(self.manager_address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            while True:
                if dead := self.dead_children():
                    names = ", ".join(f"{c.name} (see {c.log})" for c in dead)
                    tails = "".join(f"\n--- last lines of {c.log}:\n{_tail(c.log)}" for c in dead)
                    raise SystemExit(f"a node exited during start-up: {names}{tails}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"cluster not ready after {timeout_s:.0f} s; logs are in {self.state / 'logs'}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    h = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if h.status == health_pb2.HealthCheckResponse.SERVING:
                        nodes = (await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=md, timeout=2)).nodes
                        if sum(1 for n in nodes if _up_for_start(n)) >= expected:
                            return list(nodes)
                await asyncio.sleep(0.25)

    @staticmethod
    def in_maintenance(nodes: list[common_pb2.Node]) -> list[str]:
        """Ids of the nodes that came up in maintenance mode (set before the last stop)."""
        return sorted(n.node_id for n in nodes if n.status == common_pb2.NODE_STATUS_MAINTENANCE)

    @property
    def admin_password_file(self) -> Path:
        """Where the first start leaves the web password of user ``admin`` (mode 0600; removed by the
        first start after that password was changed: :meth:`forget_changed_password`)."""
        return self.state / "admin-password"

    async def ensure_admin(self) -> str:
        """The local admin's API key, creating user ``admin`` (its random web password written to
        :attr:`admin_password_file`) and a key on first start. The last start's key stays while it is
        valid, also when user ``admin`` is disabled (enabling it makes that key work again; a new one
        for a disabled user would not, and every start would leave one more)."""
        path = self.state / STATE_FILE
        old = json.loads(path.read_text()) if path.exists() else {}
        md = node_metadata(self.secret)
        async with channel(self.manager_address) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            if old.get("admin_api_key"):  # still valid? (the database may have been removed since)
                try:
                    await stub.WhoAmI(manager_pb2.WhoAmIRequest(), metadata=api_key_metadata(old["admin_api_key"]),
                                      timeout=10)
                    return str(old["admin_api_key"])
                except grpc.aio.AioRpcError as exc:
                    if trailer(exc, errors.ERROR_CODE_KEY) == errors.AccountDisabled.code:
                        return str(old["admin_api_key"])
            password = secrets.token_urlsafe(18)
            try:
                await stub.CreateUser(manager_pb2.CreateUserRequest(
                    name=LOCAL_ADMIN_NAME, password=password, admin=True), metadata=md, timeout=30)
                self.made_admin_password = True  # nothing for forget_changed_password to check in this run
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # keep its password (and its file)
                    password = ""
                elif exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                # DEADLINE_EXCEEDED: the user may have been made with this password (a busy manager): the
                # file keeps it, else the password was never told; a wrong one goes at the next start
                # (forget_changed_password)
            if password:
                self.admin_password_file.write_text(password + "\n")
                self.admin_password_file.chmod(0o600)
            request = manager_pb2.CreateApiKeyRequest(user_name=LOCAL_ADMIN_NAME, label=LOCAL_ADMIN_KEY_LABEL)
            reply = await stub.CreateApiKey(request, metadata=md, timeout=10)
        return reply.key

    async def forget_changed_password(self) -> bool:
        """Remove :attr:`admin_password_file` when its password no longer logs user ``admin`` in (it was
        changed under Settings since): True when removed. A missing file, or a check that fails
        otherwise (the manager busy), leaves everything as it is (False). No check (no argon2 hash on the
        manager, False) when :meth:`ensure_admin` just created user ``admin`` with that very password."""
        if self.made_admin_password:
            return False
        try:
            password = self.admin_password_file.read_text().strip()
        except OSError:
            return False
        async with channel(self.manager_address) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            try:
                await stub.VerifyPassword(manager_pb2.VerifyPasswordRequest(name=LOCAL_ADMIN_NAME, password=password),
                                          metadata=node_metadata(self.secret), timeout=10)
            except grpc.aio.AioRpcError as exc:
                # the right password of a disabled admin is refused too (account-disabled): it still is the password
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED or trailer(
                        exc, errors.ERROR_CODE_KEY) == errors.AccountDisabled.code:
                    return False
                self.admin_password_file.unlink(missing_ok=True)
                return True
        return False

    def _state_pools(self) -> dict[str, dict[str, str]]:
        """Each storage child's pool as its environment selects it (``backend`` fs: ``data_dir``; s3: bucket...)."""
        pools: dict[str, dict[str, str]] = {}
        for c in self.children:
            if c.name.rstrip("0123456789") != "storage" or c.env is None:
                continue
            env = c.env
            if env.get("PIXELFOX_BACKEND", "fs") == "s3":
                pools[c.name] = {"backend": "s3", "endpoint_url": env.get("PIXELFOX_S3__ENDPOINT_URL", ""),
                                 "region": env.get("PIXELFOX_S3__REGION", "us-east-1"),
                                 "bucket": env.get("PIXELFOX_S3__BUCKET", "pixelfox"),
                                 "prefix": env.get("PIXELFOX_S3__PREFIX", "")}
            else:
                data_dir = Path(env.get("PIXELFOX_DATA_DIR", "data/storage"))
                pools[c.name] = {"backend": "fs", "data_dir": os.path.realpath(self.root / data_dir)}
        return pools

    def write_state(self, admin_key: str) -> Path:
        """Write ``cluster.json`` for the other commands: addresses, credentials, the database URL
        the managers use (``database_url``), each running child's pid, each storage node's pool and the
        storage variables of this start (``storage_env``: the next start without them keeps the pools)."""
        managers = [c for c in self.children if c.name.startswith("manager") and c.env]
        database_url = (managers[0].env or {}).get("PIXELFOX_DATABASE__URL", "") if managers else ""
        return self._write_state_file({
            "manager": self.manager_address, "web_url": self.web_urls[0] if self.web_urls else "",
            "web_urls": self.web_urls, "redis_url": self.redis_url, "secret": self.secret,
            "admin_api_key": admin_key, "pid": os.getpid(), "pids": self._pids(),
            "database_url": database_url or self.database_url(),
            "pools": self._state_pools(), "storage_env": storage_settings(os.environ),
        })

    def record_pids(self) -> None:
        """Rewrite ``pids`` in ``cluster.json`` (at start, before the nodes are ready, and after a
        restart) so the next ``up`` finds the children of one that was SIGKILLed
        (:mod:`pixelfox.cli.leftovers`). The rest of the file is kept; a folder's first start writes
        the pids alone (no ``pid``: other commands still say the cluster is not running)."""
        try:
            data = json.loads((self.state / STATE_FILE).read_text())
        except (OSError, ValueError):
            data = {}
        self._write_state_file({**(data if isinstance(data, dict) else {}), "pids": self._pids()})

    def _pids(self) -> dict[str, int]:
        """Each running child's process id, by name."""
        return {c.name: c.proc.pid for c in self.children if c.proc.poll() is None}

    def _update_state(self, **fields: Any) -> None:
        """Set ``fields`` in ``cluster.json``; a missing or unreadable file is left alone."""
        try:
            data = json.loads((self.state / STATE_FILE).read_text())
        except (OSError, ValueError):
            return
        self._write_state_file({**data, **fields})

    def _write_state_file(self, data: dict[str, Any]) -> Path:
        """``cluster.json``, whole: written beside it with mode 0600 from its creation (it holds the
        secret, the admin key and the database URL with any password) and renamed over it, so a
        reader never sees half a file."""
        path = self.state / STATE_FILE
        part = path.with_name(path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # a .part left from before may have had another mode
            f.write(json.dumps(data, indent=2))
        os.replace(part, path)
        return path

    def stop(self, grace_s: float = 15.0) -> tuple[int, list[str]]:
        """SIGTERM every child (web and workers first, Redis last), then SIGKILL what outlives ``grace_s``
        (seconds). Returns how many children were running, and the names of those it had to SIGKILL."""
        order = {"web": 0, "upload": 1, "proc": 1, "storage": 2, "manager": 3, "redis": 4}
        stopped, killed = 0, []
        ranked = sorted(self.children, key=lambda c: order.get(c.name.rstrip("0123456789"), 5))
        for rank in sorted({order.get(c.name.rstrip("0123456789"), 5) for c in ranked}):
            group = [c for c in ranked if order.get(c.name.rstrip("0123456789"), 5) == rank and c.proc.poll() is None]
            stopped += len(group)
            for c in group:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for c in group:
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
                    killed.append(c.name)
        with contextlib.suppress(OSError):
            self._update_state(pid=None)
        return stopped, killed


def _up_for_start(node: common_pb2.Node) -> bool:
    """A non-manager node that counts as started: healthy, or in maintenance with a fresh heartbeat."""
    if node.role == common_pb2.NODE_ROLE_MANAGER:
        return False
    return node.healthy or (node.status == common_pb2.NODE_STATUS_MAINTENANCE and node.last_heartbeat_age_s < 10)
