"""``S3Store``: objects in any S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW, Garage).

Object ``k`` is ``<prefix>k`` in the bucket, with user metadata ``x-amz-meta-sha256`` (the
hex SHA-256 of its bytes) and the exact ``Content-Type`` and ``Cache-Control`` for the key.

A put first spools the stream to a temp file (memory up to 8 MiB, then disk), hashing it;
size and SHA-256 are checked *before* anything is sent, so a checksum mismatch never reaches
the bucket. The bytes then go up in one ``PutObject`` with ``Content-MD5``, so the server
refuses them (``BadDigest``) if they are damaged in transit. An S3 PUT becomes visible only
when complete, so no reader ever sees a partial object. Re-putting the same content is a
``HeadObject`` and nothing else; a key holding other bytes is ``AlreadyExists``.

The SDK's default CRC checksums are switched off (``request_checksum_calculation`` and
``response_checksum_validation`` = ``when_required``): several S3-compatible servers reject
them (boto/s3transfer#327). Addressing is path-style by default (what self-hosted servers
need); retries use botocore's ``standard`` mode (3 attempts, jittered backoff).

S3 has no notion of free space: ``usage()`` reports ``capacity_bytes - used`` from the
settings, ``used`` being counted by :meth:`S3Store.scan` (``ListObjectsV2``) and kept up to
date by puts and deletes of this process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field, SecretStr

from pixelfox import errors
from pixelfox.config import FINITE
from pixelfox.storage.base import CHUNK_SIZE, ObjectInfo
from pixelfox.storage.keys import content_type_for, key_sha256, validate_key

logger = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
#: a put is held in memory up to this size, then spooled to a temp file
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Settings(BaseModel):
    """Where the bucket is and how to reach it (``PIXELFOX_S3__*`` on a storage node)."""

    model_config = FINITE

    endpoint_url: str = Field("", description="e.g. http://127.0.0.1:8333; empty = AWS for the region")
    region: str = Field("us-east-1", description="signing region")
    bucket: str = Field("pixelfox", min_length=3, max_length=63)
    prefix: str = Field("", description="key prefix inside the bucket, e.g. 'hot/'")
    path_style: bool = Field(True, description="path-style addressing (SeaweedFS, MinIO, most self-hosted)")
    access_key_id: SecretStr = SecretStr("")
    secret_access_key: SecretStr = SecretStr("")
    capacity_bytes: int = Field(1 << 40, gt=0, description="bytes this pool may hold (S3 has no free-space figure)")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_pool_connections: int = Field(32, ge=1)


def _error_code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _translate(exc: Exception, what: str) -> errors.PixelfoxError:
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in _MISSING:
            return errors.NotFound(f"no object {what}")
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return errors.ChecksumMismatch(f"the S3 server refused {what}: {code}")
        if code in ("EntityTooLarge", "QuotaExceeded"):
            return errors.StorageFull(f"the S3 server refused {what}: {code}")
        return errors.Unavailable(f"S3 error on {what}: {code}")
    return errors.Unavailable(f"S3 unreachable for {what}: {type(exc).__name__}")


class S3Store:
    """A :class:`~pixelfox.storage.base.Store` on an S3 bucket (see module doc).

    Use as ``async with S3Store(settings) as store`` or call :meth:`start` / :meth:`close`.
    Errors: ``NotFound``, ``ChecksumMismatch``, ``AlreadyExists``, ``BadRequest``, ``StorageFull``;
    any other S3 or network failure is ``Unavailable`` (retryable).
    """

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        prefix = settings.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.bucket = settings.bucket
        self._used = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> S3Store:
        if self._client is not None:
            return self
        s = self.settings
        config = Config(
            region_name=s.region,
            s3={"addressing_style": "path" if s.path_style else "virtual"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            max_pool_connections=s.max_pool_connections,
        )
        session = aioboto3.Session(
            aws_access_key_id=s.access_key_id.get_secret_value() or None,
            aws_secret_access_key=s.secret_access_key.get_secret_value() or None,
            region_name=s.region,
        )
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            session.client("s3", endpoint_url=s.endpoint_url or None, config=config)
        )
        self._stack = stack
        return self

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> S3Store:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Store.start() was not called")
        return self._client

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def local_path(self, key: str) -> Path | None:
        return None

    # -- reads -------------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise _translate(exc, key) from exc
        except BotoCoreError as exc:
            raise _translate(exc, key) from exc
        sha = str(head.get("Metadata", {}).get("sha256", "")).lower()
        if len(sha) != 64:  # written by something else: hash it once and remember it in metadata
            sha = await self._hash_remote(key)
        return ObjectInfo(key, int(head["ContentLength"]), content_type_for(key), sha,
                          head["LastModified"].timestamp())

    async def _hash_remote(self, key: str) -> str:
        h = hashlib.sha256()
        async for chunk in self.open_range(key):
            h.update(chunk)
        sha = h.hexdigest()
        name = self._name(key)
        with contextlib.suppress(ClientError, BotoCoreError):
            await self.client.copy_object(
                Bucket=self.bucket, Key=name, CopySource={"Bucket": self.bucket, "Key": name},
                Metadata={"sha256": sha}, MetadataDirective="REPLACE", ContentType=content_type_for(key),
                CacheControl=IMMUTABLE,
            )
        logger.warning("rebuilt sha256 metadata for %s", key)
        return sha

    async def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        name = self._name(key)
        if offset < 0 or (length is not None and length < 0):
            raise errors.BadRequest("offset and length must not be negative")
        if length == 0:
            return
        rng = f"bytes={offset}-" if length is None else f"bytes={offset}-{offset + length - 1}"
        try:
            resp = await self.client.get_object(Bucket=self.bucket, Key=name, Range=rng)
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":
                return  # offset at or past the end: nothing to send
            raise _translate(exc, key) from exc
        except BotoCoreError as exc:
            raise _translate(exc, key) from exc
        body = resp["Body"]
        try:
            async for chunk in body.iter_chunks(CHUNK_SIZE):
                yield chunk
        finally:
            body.close()

    # -- writes ------------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, sha256: str, size: int
    ) -> ObjectInfo:
        name = self._name(key)
        sha256 = sha256.lower()
        expected_type = content_type_for(key)
        if content_type and content_type.split(";")[0].strip().lower() != expected_type:
            raise errors.BadRequest(f"content type {content_type[:64]!r} does not match the key ({expected_type})")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise errors.BadRequest("sha256 must be 64 hex digits")
        if size <= 0:
            raise errors.BadRequest("size must be positive")
        promised = key_sha256(key)
        if promised is not None and promised != sha256:
            raise errors.ChecksumMismatch("an original's key must carry the sha256 of its bytes")
        existing = await self.stat(key)
        if existing is not None:
            if existing.sha256 == sha256 and existing.size == size:
                return existing  # idempotent re-put: the stream is not read
            raise errors.AlreadyExists(f"{key} already holds other bytes")
        if size > self.settings.capacity_bytes - self._used:
            raise errors.StorageFull(f"{size} bytes do not fit in the pool's capacity")
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            h, md5, got = hashlib.sha256(), hashlib.md5(), 0
            async for chunk in chunks:
                got += len(chunk)
                if got > size:
                    raise errors.BadRequest(f"more bytes than the declared size {size}")
                h.update(chunk)
                md5.update(chunk)
                spool.write(chunk)
            if got != size:
                raise errors.BadRequest(f"got {got} bytes, declared {size}")
            if h.hexdigest() != sha256:
                raise errors.ChecksumMismatch("sha256 of the received bytes does not match")
            spool.seek(0)
            body = spool.read() if size <= SPOOL_MEMORY_BYTES else spool
            try:
                await self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=body, ContentLength=size,
                    ContentMD5=base64.b64encode(md5.digest()).decode(), ContentType=expected_type,
                    CacheControl=IMMUTABLE, Metadata={"sha256": sha256},
                )
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, key) from exc
        self._used += size
        info = await self.stat(key)
        if info is None:
            raise errors.Unavailable(f"{key} is not visible after its put")
        return info

    async def delete(self, key: str) -> bool:
        info = await self.stat(key)
        if info is None:
            return False
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        self._used = max(0, self._used - info.size)
        return True

    # -- space, health -----------------------------------------------------------------------

    async def usage(self) -> tuple[int, int]:
        return self._used, max(0, self.settings.capacity_bytes - self._used)

    def filesystem(self) -> str:
        """``s3:ENDPOINT/BUCKET/PREFIX`` (ENDPOINT without any user or password in its URL, ``aws-REGION``
        when empty): the free bytes are ``capacity_bytes`` less what the prefix holds, the same figure on
        every node that serves that prefix of that bucket."""
        url = urlsplit(self.settings.endpoint_url)
        endpoint = f"{url.scheme}://{url.netloc.rpartition('@')[2]}" if url.netloc else f"aws-{self.settings.region}"
        return f"s3:{endpoint}/{self.bucket}/{self.prefix}"

    async def scan(self) -> int:
        """Recount the bytes under the prefix (``ListObjectsV2``); returns ``used_bytes``."""
        used = 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                used += sum(int(o["Size"]) for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"bucket {self.bucket}") from exc
        self._used = used
        return used

    async def list_keys(self) -> AsyncIterator[str]:
        """Every valid object key under the prefix, in listing order (for migrations)."""
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for o in page.get("Contents", []):
                key = str(o["Key"])[len(self.prefix):]
                with contextlib.suppress(errors.BadRequest):
                    yield validate_key(key)

    async def writable(self) -> bool:
        """True while the bucket answers ``HeadBucket``."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("bucket %s not reachable: %s", self.bucket, exc)
            return False
        return True
