"""The durable job queue on Redis Streams (see :mod:`pixelfox.queue.streams`)."""

from pixelfox.queue.streams import JobQueue, QueuedJob

__all__ = ["JobQueue", "QueuedJob"]
