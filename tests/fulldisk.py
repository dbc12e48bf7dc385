"""A full disk for tests: a small tmpfs mounted in a private mount namespace (``unshare -rm``), seen by
one command only; no root needed where unprivileged user namespaces are allowed (Debian's default)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def can_mount_tmpfs(folder: Path) -> bool:
    """Whether a tmpfs can be mounted on ``folder`` in a private mount namespace here."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{folder}'"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def on_small_tmpfs(folder: Path, size: str, argv: list[str], fill_bytes: int = 0) -> list[str]:
    """The command line that runs ``argv`` with a ``size`` tmpfs (``"1m"``, ``"8k"``) on ``folder``, first
    filled with ``fill_bytes`` bytes of zeros (file ``fill``), so ``argv`` finds the disk (nearly) full."""
    fill = f" && head -c {fill_bytes} /dev/zero > '{folder}/fill'" if fill_bytes else ""
    return ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs '{folder}'{fill} && exec \"$0\" \"$@\"",
            *argv]
