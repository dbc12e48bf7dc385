"""When an upload gives up: no byte through for a while (a stall), or no upload node answering it.

:class:`Watch` follows one upload (:func:`pixelfox.client.uploader.upload_file`) across its retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

NoNode = Callable[[bool, str], None]
"""Called as ``no_node(True, why)`` when no upload node answers the upload (the uploader keeps asking for
``no_node_s`` seconds: :data:`NO_NODE_S`), and as ``no_node(False, "")`` when one answers again. ``why`` is
the manager's words when it refused to start the upload because no upload node takes uploads ("no upload
node takes new uploads (upload1: maintenance)"), ``""`` once the upload started (its nodes stopped answering)."""


#: seconds an upload goes on asking once no upload node answers it (every node the manager names for it
#: refused or timed out, or the manager says no upload node is healthy) before it gives up, kept
#: (Unavailable: ``pixelfox put`` ends ``paused``, the same command resumes it); a node restarting within
#: that long is ridden out. The manager calls a node down ``node_timeout_s`` (5 s) after its last heartbeat.
NO_NODE_S = 20.0


class Watch:
    """One upload's progress across retries: :meth:`gave_up` after ``max_stall_s`` seconds without a newly
    committed byte, or ``no_node_s`` seconds after no upload node answered (:meth:`lost`); ``delay`` is the
    next wait (seconds) before asking the node. ``no_node`` (:data:`NoNode`) is told when no node answers
    and when one answers again."""

    def __init__(self, size: int, max_stall_s: float, no_node_s: float = NO_NODE_S,
                 no_node: NoNode | None = None) -> None:
        self.size, self.max_stall_s, self.no_node_s, self.no_node = size, max_stall_s, no_node_s, no_node
        self.best, self.last, self.delay = 0, time.monotonic(), 0.1
        self.cause = ""  # the last answer that interrupted the upload, for the stall message
        self.failed: set[str] = set()  # upload node addresses that did not answer since one last did
        self.lost_at = 0.0  # time.monotonic() when no upload node answered; 0.0: one answers

    def moved(self, offset: int) -> None:
        """The server holds ``offset`` bytes: more than before restarts the stall clock and the delay."""
        if offset > self.best:
            self.best, self.last, self.delay = offset, time.monotonic(), 0.1

    def sent(self, at: float) -> None:
        """A stream took a chunk at ``at`` (``time.monotonic()``): the stall counts from then at the earliest."""
        self.last = max(self.last, at)

    def node_failed(self, address: str) -> None:
        """The upload node at ``address`` did not answer (refused, timed out, took nothing)."""
        self.failed.add(address)

    def offered(self, address: str) -> None:
        """The manager named the node at ``address`` for the upload: one that did not answer since a node last
        did means every node it names was tried (:meth:`lost`)."""
        if address in self.failed:
            self.lost()

    def lost(self, why: str = "") -> None:
        """No upload node answers: the clock of ``no_node_s`` starts (once), and ``no_node(True, why)`` is told
        (``why``: the manager's refusal when it said no upload node takes uploads, see :data:`NoNode`)."""
        if not self.lost_at:
            self.lost_at = time.monotonic()
            logger.info("%s; asking again for up to %g s", why or "no upload node answers", self.no_node_s)
            if self.no_node:
                self.no_node(True, why)

    def answered(self) -> None:
        """An upload node answered: nothing is lost (``no_node(False, "")`` is told when something was)."""
        self.failed.clear()
        if self.lost_at:
            self.lost_at = 0.0
            if self.no_node:
                self.no_node(False, "")

    def left_s(self) -> float:
        """Seconds until :meth:`gave_up` for want of a node (``inf`` while nodes answer)."""
        return self.lost_at + self.no_node_s - time.monotonic() if self.lost_at else float("inf")

    def stalled(self) -> bool:
        """True once no byte went through for ``max_stall_s``."""
        return time.monotonic() - self.last > self.max_stall_s

    def gave_up(self) -> bool:
        """True once the upload stalled (:meth:`stalled`) or no upload node answered for ``no_node_s``."""
        return self.stalled() or self.left_s() <= 0

    def message(self, offset: int) -> str:
        """What an upload that gave up says: one sentence with the bytes the server has (``offset``, or more as
        it said earlier); the last transport error goes to the debug log."""
        if self.cause:
            logger.debug("upload stopped; the last answer was: %s", self.cause)
        held = f"{max(offset, self.best)} of {self.size} bytes on the server"
        if self.left_s() <= 0:
            return (f"no upload node answered for {self.no_node_s:g} s, with {held}; run the same command again "
                    "to resume once an upload node runs")
        return (f"the upload stalled: nothing went through for {self.max_stall_s:.0f} s, with {held}; "
                "run the same command again to resume")
