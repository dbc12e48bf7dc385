"""Telling a dead upload writer from a slow one, so a resume on another node need not wait out its lock.

An upload's writer lock (:mod:`pixelfox.uploadstate`) names the node holding it. A node SIGKILLed
mid-stream leaves the lock behind until its TTL (``PIXELFOX_LOCK_TTL_S``, 10 s); until then the
client's resume on another node is refused (``ABORTED`` / tus 423). Another node takes the lock
over at once when both of these say the holder's process is gone:

* its *alive mark* in Redis has expired: every upload node refreshes it every
  :data:`REFRESH_S` seconds with a TTL of :data:`ALIVE_MS`, from start until its process ends
  (after its drain: a node finishing its last streams still marks itself alive);
* a TCP connect to its gRPC address is *refused*: nothing listens there any more. A process that
  is alive but stopped (SIGSTOP, swapped out, its event loop stuck) still has its listening
  socket, and the kernel completes the handshake; a host that is down or cut off does not answer
  at all (time-out). Either way the holder is not known dead and its lock is left to its TTL.

A live writer, however slow, never loses its lock this way; a restarted node with the same id
marks itself alive again, and its dead predecessor's locks then expire as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from pixelfox.uploadstate import UploadStates, lock_holder

logger = logging.getLogger(__name__)

#: milliseconds an alive mark lasts unless refreshed, and seconds between refreshes
ALIVE_MS = 1500
REFRESH_S = 0.4
#: seconds a connect to a holder's gRPC address may take before it counts as "no answer" (not dead)
CONNECT_TIMEOUT_S = 1.0


async def keep_alive(states: UploadStates, node_id: str, address: str) -> None:
    """Refresh this node's alive mark until cancelled (when the process ends); Redis errors are logged."""
    while True:
        try:
            await states.mark_alive(node_id, address, ALIVE_MS)
        except Exception as exc:
            logger.debug("could not refresh the alive mark of %s: %s", node_id, exc)
        await asyncio.sleep(REFRESH_S)


async def holder_dead(states: UploadStates, token: str) -> bool:
    """True when the node holding the lock ``token`` is known dead (module doc); False when it lives, may
    live, or cannot be told (no address known, an unspecified or unanswering address, Redis errors)."""
    node_id = lock_holder(token)
    if not node_id:
        return False
    try:
        alive, address = await states.node_alive(node_id)
    except Exception as exc:
        logger.debug("cannot read the alive mark of %s: %s", node_id, exc)
        return False
    if alive or not address:
        return False
    return await _refused(address)


async def _refused(address: str) -> bool:
    """True when a TCP connect to ``address`` (``host:port``) is refused outright."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:  # 0.0.0.0 is not where the holder listens
            return False
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False
