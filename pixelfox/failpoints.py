"""Named failpoints: crash the process at a chosen step to prove recovery (RELIABILITY.md D8).

Set ``PIXELFOX_FAILPOINT`` to a comma-separated list of names; when the code reaches
:func:`hit` with one of them, the process ends at once with ``os._exit(137)`` (the exit
code of SIGKILL): no ``finally`` blocks, no flushing, no goodbye to Redis or the database -
the same as a power cut at that line. Unset (the default), :func:`hit` is a set lookup.

This is a test hook, so it reads the environment itself rather than a node's settings.
Names in use (grep ``failpoints.hit``):

* ``after-image-commit`` - manager, CompleteUpload: image and outbox rows committed, job not
  yet in Redis;
* ``after-enqueue`` - manager, CompleteUpload: job in Redis, the reply not yet sent;
* ``after-dispatch`` - manager: job sent to a processing node;
* ``after-result-commit`` - manager: variants recorded in the database, queue entry not acked;
* ``after-variant-put`` - processing node: variants stored, result not yet reported.
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "PIXELFOX_FAILPOINT"
EXIT_CODE = 137

_active = frozenset(n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip())


def active() -> frozenset[str]:
    """The failpoint names armed in this process."""
    return _active


def hit(name: str) -> None:
    """End the process with exit code 137 if failpoint ``name`` is armed; otherwise return."""
    if name in _active:
        logging.getLogger(__name__).critical("failpoint %s: exiting with %d", name, EXIT_CODE)
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE)
