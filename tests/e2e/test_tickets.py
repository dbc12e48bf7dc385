"""Upload tickets at a real upload node: expired, forged, edited, alg none, re-used, wrong size, mutated.

Every bad ticket must get ``UNAUTHENTICATED`` with the reason, from the upload node itself
(it checks tickets offline with the cluster's ticket key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from pathlib import Path

import grpc
import pytest

from pixelfox import tickets
from pixelfox.v1 import upload_pb2
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import chunk, create, header, refused_stream, upload_stub

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


async def query(address: str, token: str, upload_id: str) -> grpc.aio.AioRpcError | upload_pb2.QueryUploadResponse:
    ch, stub = upload_stub(address)
    try:
        return await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=token, upload_id=upload_id), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        await ch.close()


async def refused(address: str, token: str, upload_id: str, reason: str) -> None:
    got = await query(address, token, upload_id)
    assert isinstance(got, grpc.aio.AioRpcError), "a bad ticket was accepted"
    assert got.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in (got.details() or ""), got.details()


@pytest.fixture
async def fresh(cluster: ClusterHandle):  # type: ignore[no-untyped-def]
    return await create(cluster.manager_address, cluster.admin_api_key, 1000)


async def test_good_ticket_is_accepted(fresh) -> None:  # type: ignore[no-untyped-def]
    got = await query(fresh.upload_address, fresh.ticket, fresh.upload_id)
    assert isinstance(got, upload_pb2.QueryUploadResponse) and (got.offset, got.size) == (0, 1000)


async def test_expired_ticket(cluster: ClusterHandle, fresh) -> None:  # type: ignore[no-untyped-def]
    key = tickets.derive_key(cluster.secret)
    old = tickets.sign(key, fresh.upload_id, "", 1000, "image/png", ttl_s=-(tickets.LEEWAY_S + 5))
    await refused(fresh.upload_address, old, fresh.upload_id, "expired")


async def test_ticket_signed_with_another_key(fresh) -> None:  # type: ignore[no-untyped-def]
    forged = tickets.sign(tickets.derive_key("not the cluster secret"), fresh.upload_id, "", 1000, "", 600)
    await refused(fresh.upload_address, forged, fresh.upload_id, "signature is not valid")


async def test_edited_claims(fresh) -> None:  # type: ignore[no-untyped-def]
    h, p, s = fresh.ticket.split(".")
    claims = json.loads(unb64(p))
    claims["max"] = 10**9  # a bigger upload, same signature
    await refused(fresh.upload_address, f"{h}.{b64(json.dumps(claims).encode())}.{s}", fresh.upload_id,
                  "signature is not valid")


async def test_alg_none_and_alg_swap(cluster: ClusterHandle, fresh) -> None:  # type: ignore[no-untyped-def]
    _, p, _ = fresh.ticket.split(".")
    none = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{p}."
    await refused(fresh.upload_address, none, fresh.upload_id, "not valid")
    # HS384 with the right key is still refused: only HS256 is accepted
    head = b64(json.dumps({"alg": "HS384", "typ": "JWT"}).encode())
    sig = hmac.new(tickets.derive_key(cluster.secret), f"{head}.{p}".encode(), hashlib.sha384).digest()
    swapped = f"{head}.{p}.{b64(sig)}"
    await refused(fresh.upload_address, swapped, fresh.upload_id, "not valid")


async def test_ticket_for_another_upload(cluster: ClusterHandle, fresh) -> None:  # type: ignore[no-untyped-def]
    other = await create(cluster.manager_address, cluster.admin_api_key, 1000)
    await refused(fresh.upload_address, other.ticket, fresh.upload_id, "another upload")


async def test_wrong_size(fresh) -> None:  # type: ignore[no-untyped-def]
    err = await refused_stream(fresh.upload_address, [header(fresh, 2000), chunk(0, b"x" * 10)])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "ticket is for 1000 bytes, not 2000" in (err.details() or "")


async def test_reused_after_completion(cluster: ClusterHandle, corpus: Path) -> None:
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = await create(cluster.manager_address, cluster.admin_api_key, len(data))
    ch, stub = upload_stub(t.upload_address)
    try:
        call = stub.Upload()
        await call.write(header(t, len(data)))
        for off in range(0, len(data), 256 * 1024):
            await call.write(chunk(off, data[off:off + 256 * 1024]))
        await call.done_writing()
        await call
        for _ in range(2):  # once more, and once more again
            err = await refused_stream(t.upload_address, [header(t, len(data)), chunk(0, data[:1000])])
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "already used" in (err.details() or "")
    finally:
        await ch.close()


def mutate(token: str, rng: random.Random) -> str:
    """One random edit of a JWT: a character, a segment swap, a truncation, a claim or header change."""
    h, p, s = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    kind = rng.randrange(6)
    if kind == 0:  # flip one character anywhere
        i = rng.randrange(len(token))
        c = rng.choice([a for a in alphabet + "." if a != token[i]])
        return token[:i] + c + token[i + 1:]
    if kind == 1:
        return ".".join(rng.sample([h, p, s], 3))
    if kind == 2:
        return token[: rng.randrange(len(token))]
    claims = json.loads(unb64(p))
    if kind == 3:
        field = rng.choice(["sub", "max", "exp", "iss", "uid", "iat"])
        claims[field] = rng.choice([0, -1, 10**12, "", "x", None, [1], claims.get(field, 0)])
        return f"{h}.{b64(json.dumps(claims).encode())}.{s}"
    if kind == 4:
        alg = rng.choice(["none", "None", "NONE", "HS512", "RS256", "ES256", ""])
        return f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{p}.{rng.choice([s, ''])}"
    return token + rng.choice([".", "..", "=", " ", "." + s])


def same_bytes(a: str, b: str) -> bool:
    """True when ``a`` decodes to exactly ``b``'s segments (a base64 padding-bit edit is no edit)."""
    try:
        return a.count(".") == 2 and [unb64(x) for x in a.split(".")] == [unb64(x) for x in b.split(".")]
    except ValueError:
        return False


async def test_mutated_tickets_are_never_accepted(fresh) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(4)
    ch, stub = upload_stub(fresh.upload_address)
    tried = 0
    try:
        for _ in range(400):
            bad = mutate(fresh.ticket, rng)
            if bad == fresh.ticket or same_bytes(bad, fresh.ticket):
                continue
            tried += 1
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=bad, upload_id=fresh.upload_id),
                                       timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (bad, err.value.details())
    finally:
        await ch.close()
    assert tried > 300
