"""The upload journal: which of this machine's files have an unfinished upload, so that the next
``pixelfox put`` of the same file goes on where the last one stopped (Ctrl-C, a closed laptop lid,
a killed process) instead of sending it all again, as tus clients keep their upload URLs
(tus-js-client's ``urlStorage``, tuspy's ``store_url``).

One JSON file, ``$XDG_STATE_HOME/pixelfox/uploads.json`` (``~/.local/state/pixelfox/`` by default),
mode 0600, shaped ``{"version": 1, "entries": {KEY: ENTRY}}``. ``KEY`` joins the site (manager
address), the fingerprint of the credential (never the credential) and the file's real path; the
``ENTRY`` holds the file's size and mtime it was made for, and what ``CreateUpload`` answered
(:class:`Entry`). Every change happens under an exclusive ``flock`` of ``uploads.json.lock`` (two
``pixelfox put`` runs at once do not lose each other's entries) and replaces the file atomically
(a temp file, then ``os.replace``); entries whose upload is surely gone (:meth:`Entry.expired`: its
ticket's end plus the time the server keeps an unfinished upload's state) are pruned on every write.

An entry names the process sending its upload (``owner_pid``, ``owner_start``): a run never resumes an
upload another live process is sending (two ``pixelfox put`` of one file at once make two uploads, and
the later one to complete is deduplicated). A file's entry lives at ``FileKey.slot``, or at
``SLOT|UPLOAD_ID`` while that slot is another live run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VERSION = 1


def default_path() -> Path:
    """``$XDG_STATE_HOME/pixelfox/uploads.json``; ``~/.local/state/pixelfox/uploads.json`` when the
    variable is unset, empty or not an absolute path (as the XDG base directory spec says)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "pixelfox" / "uploads.json"


def fingerprint(metadata: Sequence[tuple[str, str]]) -> str:
    """Hex SHA-256 of a caller's credential (its gRPC metadata: API key, or cluster secret and acting
    user), so that entries of one key are never resumed with another and the file holds no secret."""
    return hashlib.sha256(json.dumps([list(m) for m in metadata]).encode()).hexdigest()


def epoch(iso: str) -> float:
    """Unix seconds of an ISO 8601 time such as ``2026-11-30T17:32:00Z``; 0.0 when it cannot be read."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class FileKey:
    """One file as one caller uploads it to one site.

    ``site``: the manager address; ``credential``: :func:`fingerprint`; ``path``: the file's real
    path; ``size``: bytes; ``mtime_ns``: its modification time in nanoseconds. An entry resumes
    only for a key equal in all five.
    """

    site: str
    credential: str
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, site: str, credential: str) -> FileKey:
        """The key of ``path`` as it is now (``os.stat``); OSError when it cannot be read."""
        st = path.stat()
        return cls(site, credential, os.path.realpath(path), st.st_size, st.st_mtime_ns)

    @property
    def slot(self) -> str:
        """Where its entry lives in the file: one per site, credential and path (a changed file's
        entry is replaced, not kept beside it)."""
        return f"{self.site}|{self.credential}|{self.path}"


@dataclass(frozen=True)
class Entry:
    """An unfinished upload, as ``CreateUpload`` answered it (``manager_pb2.CreateUploadResponse``).

    ``upload_id``: ULID; ``upload_address``: the upload node's gRPC ``host:port``; ``ticket``: the
    signed upload ticket; ``expires_at``: ISO 8601 UTC, the ticket's end (after it the owner renews
    the ticket: ``RenewUpload``); ``chunk_size``: bytes per chunk; ``sha256``: hex digest of the file
    when it was created (a resume first checks the file still has it); ``size``/``mtime_ns``: the
    file's, as in :class:`FileKey`; ``state_ttl_s``: seconds the upload's state lives after its last
    committed chunk (0: unknown, from a manager without ``RenewUpload``); ``owner_pid``/``owner_start``:
    the process sending it (:func:`me`; 0: none recorded).
    """

    upload_id: str
    upload_address: str
    ticket: str
    expires_at: str
    chunk_size: int
    sha256: str
    size: int = 0
    mtime_ns: int = 0
    state_ttl_s: int = 0
    owner_pid: int = 0
    owner_start: int = 0

    @classmethod
    def of(cls, answer: Any, sha256: str) -> Entry:
        """The entry of ``CreateUpload``'s (or ``RenewUpload``'s) ``answer`` for a file of hash ``sha256``."""
        return cls(upload_id=answer.upload_id, upload_address=answer.upload_address, ticket=answer.ticket,
                   expires_at=answer.expires_at, chunk_size=answer.chunk_size, sha256=sha256,
                   state_ttl_s=answer.state_ttl_s)

    def ticket_expired(self, now: float | None = None) -> bool:
        """Whether its ticket ended (or its ``expires_at`` cannot be read) at unix time ``now``."""
        return epoch(self.expires_at) <= (time.time() if now is None else now)

    def alive_until(self) -> float:
        """Unix time after which the server surely no longer has the upload: no byte can be committed
        after its ticket's end, and its state lives ``state_ttl_s`` after the last one (0 when unknown:
        the ticket's end, or 0.0 when ``expires_at`` cannot be read)."""
        end = epoch(self.expires_at)
        return end + self.state_ttl_s if end else 0.0

    def expired(self, now: float | None = None) -> bool:
        """Whether the upload is surely gone at unix time ``now`` (:meth:`alive_until`): its entry is
        pruned then. An entry whose ticket ended before that is renewed by its owner to resume."""
        return self.alive_until() <= (time.time() if now is None else now)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/PID/stat``'s field 22), to tell it
    from a later process given the same pid; ``None`` when no such process runs; 0 when it runs but the
    system has no ``/proc`` (its start is unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except (OSError, ValueError, IndexError):
        return 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def me() -> tuple[int, int]:
    """This process as an entry names its owner: ``(pid, start)`` (:func:`process_start`)."""
    pid = os.getpid()
    return pid, process_start(pid) or 0


def held_elsewhere(entry: Entry) -> bool:
    """Whether another process that still runs is sending ``entry``'s upload (its owner is alive and not
    this process); an entry of a process that ended (Ctrl-C, killed) is free to resume."""
    if not entry.owner_pid or (entry.owner_pid, entry.owner_start) == me():
        return False
    started = process_start(entry.owner_pid)
    return started is not None and (not started or not entry.owner_start or started == entry.owner_start)


def _of_file(entries: dict[str, Entry], key: FileKey) -> list[tuple[str, Entry]]:
    """``key``'s path's entries (any size and mtime) as ``(slot, entry)``: its slot, and ``SLOT|UPLOAD_ID``
    (a second run's entry beside a live one's) for the upload that entry names. Not ``startswith``
    alone: a file named ``photo|2.jpg`` beside ``photo`` would count as ``photo``'s."""
    return [(k, e) for k, e in entries.items() if k in (key.slot, f"{key.slot}|{e.upload_id}")]


class Journal:
    """The journal file at ``path`` (default :func:`default_path`); methods take the lock each time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def get(self, key: FileKey) -> Entry | None:
        """The entry recorded for ``key`` (same size and mtime too) whose upload may still be alive (its
        ticket may have ended: see :meth:`Entry.expired`) and no other live process sends (this one's
        first), else ``None``."""
        with self._locked() as entries:
            found = [e for _, e in _of_file(entries, key) if self._usable(e, key)]
        found.sort(key=lambda e: (e.owner_pid, e.owner_start) != me())
        return found[0] if found else None

    def claim(self, key: FileKey, resume: bool = True) -> tuple[Entry | None, list[Entry]]:
        """In one locked step, :meth:`get`'s entry for ``key``, now this process's to resume (so that no
        other run resumes it at once), and the path's stale entries, removed: made for another size or
        mtime of the file, not sent by a live process and not surely gone (their uploads are still open
        on the server: the caller cancels them). With ``resume`` False (``pixelfox put --no-resume``)
        nothing is resumed: every such entry of the path is stale, the same file's included."""
        with self._locked(write=True) as entries:
            stale, found = [], None
            for slot, e in _of_file(entries, key):
                if e.expired() or held_elsewhere(e):
                    continue
                if not resume or (e.size, e.mtime_ns) != (key.size, key.mtime_ns):
                    stale.append(entries.pop(slot))
                elif found is None or (e.owner_pid, e.owner_start) == me():
                    found = (slot, e)
            if found is None:
                return None, stale
            pid, start = me()
            entries[found[0]] = dataclasses.replace(found[1], owner_pid=pid, owner_start=start)
            return entries[found[0]], stale

    def put(self, key: FileKey, entry: Entry) -> None:
        """Record ``entry`` for ``key`` as this process's (its size and mtime are taken from the key),
        replacing the path's earlier ones but those another live process sends."""
        pid, start = me()
        with self._locked(write=True) as entries:
            held = {k for k, e in _of_file(entries, key) if held_elsewhere(e)}
            for k, _ in _of_file(entries, key):
                if k not in held:
                    del entries[k]
            slot = f"{key.slot}|{entry.upload_id}" if key.slot in held else key.slot
            entries[slot] = dataclasses.replace(entry, size=key.size, mtime_ns=key.mtime_ns, owner_pid=pid,
                                                owner_start=start)

    def drop(self, key: FileKey, upload_id: str = "") -> None:
        """Forget ``key``'s path's entry for ``upload_id`` (every one of the path but those another live
        process sends, when it is not given)."""
        with self._locked(write=True) as entries:
            for k, e in _of_file(entries, key):
                if e.upload_id == upload_id or not (upload_id or held_elsewhere(e)):
                    del entries[k]

    def release(self) -> int:
        """Give up this process's hold on its entries (``owner_pid`` 0): a process that lives on after its
        uploads (``pixelfox up --import``) must not keep a later ``pixelfox put`` from resuming or
        cancelling them (:func:`held_elsewhere`). Returns how many entries it held."""
        mine = me()
        with self._locked(write=True) as entries:
            held = [k for k, e in entries.items() if e.owner_pid and (e.owner_pid, e.owner_start) == mine]
            for k in held:
                entries[k] = dataclasses.replace(entries[k], owner_pid=0, owner_start=0)
        return len(held)

    @staticmethod
    def _usable(e: Entry, key: FileKey) -> bool:
        return (e.size, e.mtime_ns) == (key.size, key.mtime_ns) and not e.expired() and not held_elsewhere(e)

    def entries(self) -> dict[str, Entry]:
        """Every entry, expired ones included, by slot (``FileKey.slot``)."""
        with self._locked() as entries:
            return dict(entries)

    @contextlib.contextmanager
    def _locked(self, write: bool = False) -> Iterator[dict[str, Entry]]:
        """The entries under the lock; with ``write``, saved (expired ones pruned) when the block ends.
        A journal that cannot be used (a read-only home) reads as empty and keeps nothing, with a
        warning: uploads still work, they only do not resume across runs."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            logger.warning("upload journal %s cannot be used (%s): uploads will not resume across runs",
                           self.path, exc)
            fd = -1
        if fd < 0:
            yield {}
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            if write:
                now = time.time()
                self._write({k: e for k, e in entries.items() if not e.expired(now)})
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[str, Entry]:
        try:
            data: Any = json.loads(self.path.read_bytes())
            return {k: Entry(**v) for k, v in data["entries"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # damaged: start afresh, say so
            logger.warning("upload journal %s is unreadable (%s): its entries are dropped", self.path, exc)
            return {}

    def _write(self, entries: dict[str, Entry]) -> None:
        body = json.dumps({"version": VERSION, "entries": {k: dataclasses.asdict(e) for k, e in entries.items()}},
                          indent=1, sort_keys=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".uploads.", dir=self.path.parent)  # mkstemp: mode 0600
        except OSError as exc:
            logger.warning("upload journal %s cannot be written (%s)", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not isinstance(exc, OSError):
                raise
            logger.warning("upload journal %s cannot be written (%s)", self.path, exc)
