"""The upload journal of ``pixelfox put`` (pixelfox/client/journal.py): what resumes, what is pruned,
who sees an entry, and two processes writing at once; ``put --limit-rate`` values."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelfox.cli.argtypes import byte_rate
from pixelfox.client.journal import Entry, FileKey, Journal, default_path, fingerprint
from pixelfox.grpcx.auth import api_key_metadata

REPO = Path(__file__).resolve().parents[2]


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def entry(upload_id: str = "01JA0000000000000000000000", expires_in: float = 900) -> Entry:
    return Entry(upload_id=upload_id, upload_address="127.0.0.1:5001", ticket="t." + upload_id,
                 expires_at=iso(time.time() + expires_in), chunk_size=262144, sha256="ab" * 32)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(b"x" * 1000)
    return path


def test_an_entry_is_found_again_only_for_the_same_file_caller_and_site(tmp_path: Path, photo: Path) -> None:
    journal = Journal(tmp_path / "state" / "uploads.json")
    alice, bob = fingerprint(api_key_metadata("pfx_alice")), fingerprint(api_key_metadata("pfx_bob"))
    key = FileKey.of(photo, "127.0.0.1:7000", alice)
    made = entry()
    journal.put(key, made)
    got = journal.get(FileKey.of(photo, "127.0.0.1:7000", alice))
    assert got is not None
    assert (got.upload_id, got.ticket, got.expires_at, got.chunk_size, got.sha256, got.size, got.mtime_ns) == (
        made.upload_id, made.ticket, made.expires_at, 262144, "ab" * 32, 1000, photo.stat().st_mtime_ns)
    assert journal.get(FileKey.of(photo, "127.0.0.1:7000", bob)) is None  # another key's upload: never
    assert journal.get(FileKey.of(photo, "10.0.0.9:7000", alice)) is None  # another cluster
    assert journal.get(FileKey.of(tmp_path / "state" / ".." / "photo.png", "127.0.0.1:7000", alice)) is not None

    text = journal.path.read_text()
    assert "pfx_alice" not in text and alice in text  # the fingerprint, never the key
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


def test_a_changed_size_or_mtime_does_not_resume(tmp_path: Path, photo: Path) -> None:
    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    journal.put(key, entry())
    os.utime(photo, ns=(key.mtime_ns, key.mtime_ns + 1))
    assert journal.get(FileKey.of(photo, "m:1", "c")) is None
    os.utime(photo, ns=(key.mtime_ns, key.mtime_ns))
    assert journal.get(FileKey.of(photo, "m:1", "c")) is not None
    photo.write_bytes(b"x" * 999)
    os.utime(photo, ns=(key.mtime_ns, key.mtime_ns))  # same mtime, other size
    assert journal.get(FileKey.of(photo, "m:1", "c")) is None
    journal.put(FileKey.of(photo, "m:1", "c"), entry("01JB0000000000000000000000"))
    assert [e.upload_id for e in journal.entries().values()] == ["01JB0000000000000000000000"]  # replaced


def test_expired_entries_are_not_resumed_and_are_pruned_on_the_next_write(tmp_path: Path, photo: Path) -> None:
    journal = Journal(tmp_path / "uploads.json")
    old = FileKey.of(photo, "m:1", "c")
    journal.put(old, entry("01JA0000000000000000000000", expires_in=900))
    data = json.loads(journal.path.read_text())
    data["entries"][old.slot]["expires_at"] = iso(time.time() - 1)  # its ticket ended a second ago
    journal.path.write_text(json.dumps(data))
    assert journal.get(old) is None
    assert len(journal.entries()) == 1  # reading prunes nothing
    other = photo.with_name("other.png")
    other.write_bytes(b"y")
    journal.put(FileKey.of(other, "m:1", "c"), entry("01JC0000000000000000000000"))
    assert [e.upload_id for e in journal.entries().values()] == ["01JC0000000000000000000000"]


def test_an_entry_whose_ticket_ended_is_kept_while_the_upload_may_live(tmp_path: Path, photo: Path) -> None:
    """The owner renews an ended ticket (RenewUpload) while the upload's state lives, ``state_ttl_s`` after
    its last chunk, which comes before the ticket's end: the entry is kept until then, and pruned after."""
    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    journal.put(key, dataclasses.replace(entry(expires_in=-60), state_ttl_s=3600))  # ticket ended a minute ago
    kept = journal.get(key)
    assert kept is not None and kept.ticket_expired() and not kept.expired()
    assert kept.alive_until() == pytest.approx(time.time() + 3540, abs=2)
    other = photo.with_name("other.png")
    other.write_bytes(b"y")
    journal.put(FileKey.of(other, "m:1", "c"), dataclasses.replace(entry("01JC0000000000000000000000", -3601),
                                                                    state_ttl_s=3600))  # its state is gone too
    assert [e.upload_id for e in journal.entries().values()] == ["01JA0000000000000000000000"]


def test_drop_forgets_only_the_named_upload(tmp_path: Path, photo: Path) -> None:
    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    journal.put(key, entry("01JA0000000000000000000000"))
    journal.drop(key, "01JZ0000000000000000000000")  # an older run's upload: this entry stays
    assert journal.get(key) is not None
    journal.drop(key, "01JA0000000000000000000000")
    assert journal.get(key) is None and journal.entries() == {}


def test_a_damaged_or_unusable_journal_reads_as_empty(tmp_path: Path, photo: Path) -> None:
    journal = Journal(tmp_path / "uploads.json")
    journal.path.write_text("{not json")
    key = FileKey.of(photo, "m:1", "c")
    assert journal.get(key) is None
    journal.put(key, entry())
    assert journal.get(key) is not None
    blocked = Journal(photo / "pixelfox" / "uploads.json")  # its folder would be under a file
    blocked.put(key, entry())
    assert blocked.get(key) is None


def test_default_path_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "pixelfox" / "uploads.json"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # not absolute: ignored, as the spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".local" / "state" / "pixelfox" / "uploads.json"


WRITER = """
import sys, time
from pathlib import Path
from pixelfox.client.journal import Entry, FileKey, Journal
journal, who = Journal(Path(sys.argv[1])), sys.argv[2]
for i in range(25):
    journal.put(FileKey("m:1", who, f"/f/{i}", 1, 1),
                Entry(f"{who}{i}", "a:1", "t", "2999-01-01T00:00:00Z", 1, "s"))
"""


def test_two_runs_writing_at_once_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "uploads.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who], env=env) for who in "abcd"]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(Journal(path).entries()) == 100
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".uploads.")] == []  # no temp file left


@pytest.mark.parametrize(("text", "rate"), [("512K", 524288), ("2M", 2097152), ("1.5m", 1572864), ("1000000", 1000000)])
def test_limit_rate_reads_binary_units(text: str, rate: int) -> None:
    assert byte_rate(text) == rate


@pytest.mark.parametrize("text", ["", "K", "1", "1000", "2MB", "-2M", "nanM", "２M"])
def test_limit_rate_refuses_what_is_not_a_rate_of_at_least_1k(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        byte_rate(text)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_an_entry_another_live_run_sends_is_neither_resumed_nor_replaced(tmp_path: Path, photo: Path) -> None:
    """Two ``pixelfox put`` of one file at once: the second used to find the first's entry and "resume"
    it, both streaming one upload. An entry names its process (pid and start time): while that process
    runs, another neither gets it nor replaces it (its own upload goes beside it, ``SLOT|UPLOAD_ID``);
    once the process ended, the entry is free to resume again (claimed by the next run)."""
    from pixelfox.client.journal import process_start

    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    other = _sleeper()
    try:
        start = process_start(other.pid)
        assert start is not None and start > 0
        journal.put(key, entry("01JA0000000000000000000000"))
        data = json.loads(journal.path.read_text())
        data["entries"][key.slot].update(owner_pid=other.pid, owner_start=start)  # as the other run wrote it
        journal.path.write_text(json.dumps(data))
        assert journal.get(key) is None
        assert journal.claim(key) == (None, [])
        journal.put(key, entry("01JB0000000000000000000000"))  # this run's own upload, beside it
        b = "01JB0000000000000000000000"
        assert {s: e.upload_id for s, e in journal.entries().items()} == {
            key.slot: "01JA0000000000000000000000", f"{key.slot}|{b}": b}
        got = journal.get(key)
        assert got is not None and (got.upload_id, got.owner_pid) == ("01JB0000000000000000000000", os.getpid())
        journal.drop(key, "01JB0000000000000000000000")
        assert [e.upload_id for e in journal.entries().values()] == ["01JA0000000000000000000000"]
    finally:
        other.kill()
        other.wait()
    claimed, stale = journal.claim(key)  # its process ended: free again, and now this process's
    assert claimed is not None and (claimed.upload_id, claimed.owner_pid) == ("01JA0000000000000000000000", os.getpid())
    assert stale == [] and journal.entries()[key.slot].owner_pid == os.getpid()


def test_claim_hands_back_the_entries_of_a_changed_file_and_forgets_them(tmp_path: Path, photo: Path) -> None:
    """The caller cancels those uploads: made for bytes the file no longer has, they can never complete."""
    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    journal.put(key, entry("01JA0000000000000000000000"))
    photo.write_bytes(b"z" * 2000)
    claimed, stale = journal.claim(FileKey.of(photo, "m:1", "c"))
    assert claimed is None and [e.upload_id for e in stale] == ["01JA0000000000000000000000"]
    assert journal.entries() == {}


def test_a_file_whose_name_extends_another_with_a_bar_keeps_its_own_entry(tmp_path: Path, photo: Path) -> None:
    """``photo.png|2`` is not ``photo.png``'s second entry (``SLOT|UPLOAD_ID``): a changed ``photo.png``
    must not hand it back as stale (its upload would be cancelled) nor forget it."""
    other = photo.with_name("photo.png|2")
    other.write_bytes(b"y" * 1000)
    journal = Journal(tmp_path / "uploads.json")
    journal.put(FileKey.of(other, "m:1", "c"), entry("01JB0000000000000000000000"))
    journal.put(FileKey.of(photo, "m:1", "c"), entry("01JA0000000000000000000000"))
    photo.write_bytes(b"z" * 2000)
    claimed, stale = journal.claim(FileKey.of(photo, "m:1", "c"))
    assert claimed is None and [e.upload_id for e in stale] == ["01JA0000000000000000000000"]
    assert [e.upload_id for e in journal.entries().values()] == ["01JB0000000000000000000000"]
    assert journal.get(FileKey.of(other, "m:1", "c")) is not None


def test_release_frees_this_process_entries_for_another_run(tmp_path: Path, photo: Path) -> None:
    """``pixelfox up --import`` lives on after its uploads: what it left unfinished must be another
    process's to resume (held, a ``pixelfox put`` beside it would start over and leave it open)."""
    journal = Journal(tmp_path / "uploads.json")
    key = FileKey.of(photo, "m:1", "c")
    journal.put(key, entry("01JA0000000000000000000000"))
    data = json.loads(journal.path.read_text())  # and one another live process sends: not ours to free
    data["entries"]["m:1|c|/elsewhere.png"] = {**data["entries"][key.slot], "owner_pid": 1, "owner_start": 0}
    journal.path.write_text(json.dumps(data))
    assert journal.release() == 1
    owners = {s: (e.owner_pid, e.owner_start) for s, e in journal.entries().items()}
    assert owners == {key.slot: (0, 0), "m:1|c|/elsewhere.png": (1, 0)}
    assert journal.release() == 0
    check = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from pixelfox.client.journal import Journal, FileKey; "
             f"from pathlib import Path; j = Journal(Path({str(journal.path)!r})); "
             f"e, _ = j.claim(FileKey.of(Path({str(photo)!r}), 'm:1', 'c')); print(e.upload_id if e else None)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "01JA0000000000000000000000"  # another run resumes it
