"""One exception tree for the whole cluster, with stable codes and their gRPC/HTTP mapping.

Every error a user can see is a :class:`PixelfoxError` subclass carrying three class
attributes: a stable kebab-case ``code`` (pict-rs ``ErrorCode`` style), the ``grpc_status``
it crosses gRPC with, and the ``http_status`` the web and HTTP faces answer with. The
server-side wrapper (:mod:`pixelfox.grpcx.server`) aborts with the mapped status and puts
``code`` in the trailing metadata key ``pixelfox-error-code``; the client helper
(:func:`pixelfox.grpcx.client.map_rpc_errors`) turns status plus code back into the same
class. Anything that is not a ``PixelfoxError`` is reported as ``internal`` with a generic
public message; the traceback goes to the log only.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

ERROR_CODE_KEY = "pixelfox-error-code"
#: trailing metadata beside the code: a :class:`RateLimited`'s ``retry_after_s`` (whole seconds)
RETRY_AFTER_KEY = "pixelfox-retry-after-s"


#: gRPC statuses that mean the caller asked for something wrong: bad input, a name that is not there
#: or already taken, no right to it, a state that does not allow it. The ``pixelfox`` command exits 2
#: on an error with one of these, and 1 on every other (the environment failed: unavailable, timed
#: out, internal, unknown, out of room or over a quota, aborted, data lost). See
#: :attr:`PixelfoxError.exit_status`.
CALLER_STATUSES: frozenset[grpc.StatusCode] = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
})


class PixelfoxError(Exception):
    """Root of all PixelFox errors; ``str(exc)`` is the public, human message."""

    code: ClassVar[str] = "internal"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"
    #: the message is safe to show anyone even on a 5xx (it names no peer address, no internals); the
    #: web shows a 5xx's ``default_message`` instead unless this is True
    public: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def exit_status(self) -> int:
        """The ``pixelfox`` command's exit status for this error: 2 when the caller is at fault
        (``grpc_status`` in :data:`CALLER_STATUSES`), 1 when the environment is."""
        return 2 if self.grpc_status in CALLER_STATUSES else 1

    def to_dict(self) -> dict[str, str]:
        """``{"code", "message"}``, the JSON error body shape."""
        return {"code": self.code, "message": self.message}


class BadRequest(PixelfoxError):
    code = "bad-request"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    default_message = "bad request"


class FileChanged(BadRequest):
    """A file changed size while ``pixelfox put`` sent it (a tool still writing it): the upload can
    never complete, so the client cancels it. The caller's to fix (send it once it is written)."""

    code = "file-changed"
    default_message = "the file changed while it was being sent"


class InvalidImage(BadRequest):
    code = "invalid-image"
    default_message = "not a valid image"


class EmptyFile(InvalidImage):
    code = "empty-file"
    default_message = "empty file"


class CorruptImage(InvalidImage):
    code = "corrupt-image"
    default_message = "corrupt or truncated image"


class UnsupportedFormat(InvalidImage):
    code = "unsupported-format"
    http_status = 415
    default_message = "unsupported format"


class ImageTooLarge(InvalidImage):
    code = "image-too-large"
    http_status = 413
    default_message = "image exceeds the configured limits"


class PayloadTooLarge(BadRequest):
    code = "payload-too-large"
    http_status = 413
    default_message = "upload larger than allowed"

    @classmethod
    def declared(cls, size: int, limit: int) -> PayloadTooLarge:
        """A declared upload size over the upload limit (both bytes), said alike wherever it is checked."""
        return cls(f"file is {size} bytes; the limit is {limit} bytes")


class BodyTimeout(BadRequest):
    """No byte of an HTTP request body arrived for the web node's ``body_idle_s`` seconds (408)."""

    code = "body-timeout"
    http_status = 408
    default_message = "the request body stopped arriving"


class ChecksumMismatch(BadRequest):
    code = "checksum-mismatch"
    grpc_status = grpc.StatusCode.DATA_LOSS
    default_message = "checksum mismatch"


class Unauthenticated(PixelfoxError):
    code = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    default_message = "authentication required"


class InvalidTicket(Unauthenticated):
    code = "invalid-ticket"
    default_message = "invalid upload ticket"


class InvalidCredentials(Unauthenticated):
    code = "invalid-credentials"
    default_message = "invalid user name or password"


class AccountDisabled(Unauthenticated):
    """The user's account was disabled by an admin: no login, no API key, no session works."""

    code = "account-disabled"
    default_message = "this account is disabled; ask an administrator"


class Forbidden(PixelfoxError):
    code = "forbidden"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_message = "not allowed"


class NotFound(PixelfoxError):
    code = "not-found"
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404
    default_message = "not found"


class AlreadyExists(PixelfoxError):
    code = "already-exists"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    default_message = "already exists"


class Conflict(PixelfoxError):
    """The resource is in a state that does not allow this now (e.g. still processing)."""

    code = "conflict"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    default_message = "not possible in the resource's current state"


class OffsetMismatch(PixelfoxError):
    code = "offset-mismatch"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    default_message = "chunk offset does not match the committed offset"


class UploadBusy(PixelfoxError):
    code = "upload-busy"
    grpc_status = grpc.StatusCode.ABORTED
    http_status = 409
    default_message = "another stream is writing this upload"


class ResourceExhausted(PixelfoxError):
    code = "resource-exhausted"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    default_message = "resource exhausted"


class StorageFull(ResourceExhausted):
    code = "storage-full"
    http_status = 507
    default_message = "no space left on the storage node"


class QuotaExceeded(ResourceExhausted):
    """The user's storage quota is full, or this upload does not fit in it. RESOURCE_EXHAUSTED on gRPC as
    a rate limit is (the ``code`` tells them apart), but HTTP 413, not 429: retrying does not help until
    images are deleted or the quota raised, and clients retry a 429 (RFC 6585 §4, RFC 9110 §15.5.14)."""

    code = "quota-exceeded"
    http_status = 413
    default_message = "storage quota exceeded"


class RateLimited(ResourceExhausted):
    """Over a rate limit; ``retry_after_s`` (seconds, 0 = unknown) becomes HTTP ``Retry-After``."""

    code = "rate-limited"
    default_message = "too many requests"

    def __init__(self, message: str | None = None, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyOpenUploads(RateLimited):
    """More unfinished uploads than the per-user limit; ``retry_after_s`` is when the next one expires."""

    code = "too-many-open-uploads"
    default_message = "too many unfinished uploads"


class Unavailable(PixelfoxError):
    code = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "service unavailable, try again"


class NotAnswering(Unavailable):
    """The peer took no connection within :data:`pixelfox.grpcx.client.CONNECT_TIMEOUT_MS`: a frozen
    (SIGSTOPped) or swamped process, whose kernel still accepts TCP connections. Trying it again at
    once costs the same wait, so writes to several nodes give up on it at the first (replicate.py)."""

    code = "not-answering"
    default_message = "the node took no connection in time"


class NoNodeAvailable(Unavailable):
    code = "no-node-available"
    default_message = "no healthy node available"
    public = True  # the manager's text says which role is missing


class Timeout(PixelfoxError):
    code = "timeout"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    default_message = "timed out"

    @classmethod
    def no_answer(cls, who: str, seconds: float) -> Timeout:
        """``who`` (a role, "the cluster's manager", never an address) gave no answer in ``seconds``: a
        :attr:`public` message that says what happened and what to do."""
        err = cls(f"{who} did not answer in {seconds:g} s; try again shortly")
        err.public = True
        return err


def _all_subclasses(cls: type[PixelfoxError]) -> list[type[PixelfoxError]]:
    out: list[type[PixelfoxError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


#: stable code -> class, for turning a wire error back into the same exception
BY_CODE: dict[str, type[PixelfoxError]] = {c.code: c for c in _all_subclasses(PixelfoxError)}

#: gRPC status -> the class used when a peer sent no ``pixelfox-error-code``
BY_GRPC_STATUS: dict[grpc.StatusCode, type[PixelfoxError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Forbidden,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: OffsetMismatch,
    grpc.StatusCode.ABORTED: UploadBusy,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.DATA_LOSS: ChecksumMismatch,
}


def exit_status_of(code: str) -> int:
    """The ``pixelfox`` command's exit status for an error of stable ``code`` given as text (a ``put
    --json`` line's): that of its class (:attr:`PixelfoxError.exit_status`: 2 the caller's, 1 the
    environment's); 1 for a code this version does not know."""
    cls = BY_CODE.get(code)
    return 2 if cls is not None and cls.grpc_status in CALLER_STATUSES else 1


def from_wire(code: str | None, status: grpc.StatusCode | None, message: str, retry_after_s: int = 0
              ) -> PixelfoxError:
    """Rebuild the exception a peer raised from its stable ``code`` (preferred) or gRPC ``status``;
    ``retry_after_s`` (seconds) goes back onto a :class:`RateLimited`."""
    cls = BY_CODE.get(code) if code else None
    if cls is None and status is not None:
        cls = BY_GRPC_STATUS.get(status)
    if cls is not None and issubclass(cls, RateLimited):
        return cls(message, retry_after_s=retry_after_s)
    return (cls or PixelfoxError)(message)


def wire_metadata(err: PixelfoxError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that carries ``err`` across gRPC: its code, and a retry-after when known."""
    md: tuple[tuple[str, str], ...] = ((ERROR_CODE_KEY, err.code),)
    if isinstance(err, RateLimited) and err.retry_after_s > 0:
        md += ((RETRY_AFTER_KEY, str(int(err.retry_after_s))),)
    return md


def from_image_error(exc: Exception) -> PixelfoxError:
    """Map a :mod:`pixelfox.imaging` error (same stable codes) to this tree."""
    code = getattr(exc, "code", "")
    message = str(exc)
    if code == "corrupt-image" and message == "empty file":  # the core's word for 0 bytes (probe.rs), not
        return EmptyFile(message)                             # "Missing or empty image item" of a 276 KB AVIF
    return BY_CODE.get(code, InvalidImage)(message)
