"""Named failpoints: crash the process at a chosen step to prove recovery (RELIABILITY.md D8).

Set ``PIXELFOX_FAILPOINT`` to a comma-separated list of names; when the code reaches
:func:`hit` with one of them, the process ends at once with ``os._exit(137)`` (the exit
code of SIGKILL): no ``finally`` blocks, no flushing, no goodbye to Redis or the database -
the same as a power cut at that line. Unset (the default), :func:`hit` is a set lookup.

A name written ``name=sleep(MS)`` (the action syntax of TiKV's ``fail-rs``) instead makes
:func:`pause` wait MS milliseconds there: it widens a window (a job in flight) so that a
chaos test's kills land inside it.

This is a test hook, so it reads the environment itself rather than a node's settings.
Names in use (grep ``failpoints.hit``):

* ``after-image-commit`` - manager, CompleteUpload: image and outbox rows committed, job not
  yet in Redis;
* ``after-enqueue`` - manager, CompleteUpload: job in Redis, the reply not yet sent;
* ``after-dispatch`` - manager: job sent to a processing node;
* ``after-result-commit`` - manager: variants recorded in the database, queue entry not acked;
* ``after-variant-put`` - processing node: variants stored, result not yet reported.

Pauses (:func:`pause`):

* ``before-process`` - processing node: original fetched, not yet decoded;
* ``before-result`` - processing node: variants stored, result not yet reported (the storage pool
  shows the keys a job writes; the image may change meanwhile);
* ``before-complete`` - upload node: original stored, ``CompleteUpload`` not yet called.
* ``before-delete-commit`` - manager, DeleteImage: the image's rows removed and its row held,
  not yet committed (a dedup lookup of the same bytes waits meanwhile).
* ``before-change-commit`` - manager, UpdateImage: the change made (a visibility change's copies
  written and journalled), not yet committed (a delete of the image lands meanwhile).
* ``dedup-expiry-read`` - manager, CreateUpload and CompleteUpload: the user's images of the same
  bytes found, their expirations not yet read from Redis (a slow Redis);
* ``before-complete-answer`` - manager, CompleteUpload: the new image committed and queued, the
  answer not yet sent (a delete of the image lands meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys

ENV = "PIXELFOX_FAILPOINT"
EXIT_CODE = 137
_SLEEP = re.compile(r"^(?P<name>[\w-]+)=sleep\((?P<ms>\d+)\)$")


def _parse(spec: str) -> tuple[frozenset[str], dict[str, float]]:
    """``"a,b=sleep(800)"`` -> ({"a"}, {"b": 0.8}); raises ValueError on an unknown action."""
    exits: set[str] = set()
    sleeps: dict[str, float] = {}
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            exits.add(item)
        elif m := _SLEEP.match(item):
            sleeps[m["name"]] = int(m["ms"]) / 1000
        else:
            raise ValueError(f"{ENV}: cannot parse {item!r} (expected NAME or NAME=sleep(MS))")
    return frozenset(exits), sleeps


_active, _sleeps = _parse(os.environ.get(ENV, ""))


def active() -> frozenset[str]:
    """The failpoint names armed (to exit) in this process."""
    return _active


async def pause(name: str) -> None:
    """Wait the armed ``name=sleep(MS)`` milliseconds; return at once if ``name`` is not armed."""
    if (seconds := _sleeps.get(name)) is not None:
        await asyncio.sleep(seconds)


def hit(name: str) -> None:
    """End the process with exit code 137 if failpoint ``name`` is armed; otherwise return."""
    if name in _active:
        logging.getLogger(__name__).critical("failpoint %s: exiting with %d", name, EXIT_CODE)
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE)
