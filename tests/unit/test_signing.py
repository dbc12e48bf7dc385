"""Signed URLs (pixelfox.signing), private keys (pixelfox.storage.keys) and the read model codec."""

from __future__ import annotations

import pytest

from pixelfox import errors, readmodel, signing
from pixelfox.storage.keys import is_private_key, key_sha256, original_key, private_key, public_key, validate_key
from pixelfox.v1 import common_pb2

SHA = "ab" * 32
KEY = original_key(SHA, "jpg")
SALT = "0123456789abcdef0123456789abcdef"


def test_private_key_round_trip_and_validation() -> None:
    pk = private_key(KEY, SALT)
    assert pk == f"p/{SALT}/{KEY}" and is_private_key(pk) and not is_private_key(KEY)
    assert validate_key(pk) == pk and public_key(pk) == KEY and key_sha256(pk) == SHA
    assert private_key(pk, "f" * 32) == f"p/{'f' * 32}/{KEY}"  # re-salting replaces the salt
    for bad in (f"p/{SALT}/../{KEY}", f"p/{SALT[:-1]}/{KEY}", f"p/{SALT}/p/{SALT}/{KEY}", f"p/{SALT.upper()}/{KEY}"):
        with pytest.raises(errors.BadRequest):
            validate_key(bad)
    with pytest.raises(errors.BadRequest):
        private_key(KEY, "nothex")


def test_sign_verify_expiry_and_rotation() -> None:
    old, new = signing.keys_from("old secret"), signing.keys_from("old secret", signing.UrlSigningSettings(
        keys=["new secret"]))  # type: ignore[list-item]
    assert len(new) == 2 and new[1] == old[0]  # the new key signs, the old one still verifies
    pk = private_key(KEY, SALT)
    exp = signing.expiry(3600, 600, now=1_000_000)
    assert exp % 600 == 0 and 1_003_600 <= exp < 1_004_200
    q = dict(p.split("=", 1) for p in signing.sign(new[0], pk, exp).split("&"))
    assert signing.verify(new, pk, q["exp"], q["sig"], now=1_000_000)
    assert not signing.verify(old, pk, q["exp"], q["sig"], now=1_000_000)  # a node without the new key
    old_q = dict(p.split("=", 1) for p in signing.sign(old[0], pk, exp).split("&"))
    assert signing.verify(new, pk, old_q["exp"], old_q["sig"], now=1_000_000)  # rotation keeps old URLs alive
    assert not signing.verify(new, pk, q["exp"], q["sig"], now=exp + 1)  # expired
    assert not signing.verify(new, private_key(KEY, "f" * 32), q["exp"], q["sig"], now=1_000_000)  # other key
    assert not signing.verify(new, pk, str(exp + 600), q["sig"], now=1_000_000)  # moved expiry
    for e, s in ((None, q["sig"]), (q["exp"], None), ("-1", q["sig"]), ("1e9", q["sig"]), (q["exp"], "x" * 100)):
        assert not signing.verify(new, pk, e, s, now=1_000_000)


def test_readmodel_codec() -> None:
    img = common_pb2.Image(slug="abc", status=common_pb2.IMAGE_STATUS_READY, visibility="public", title="t")
    raw = b"I" + b"0123abcd|" + img.SerializeToString()
    entry = readmodel.decode(raw, b"0123abcd")
    assert entry is not None and entry.kind == "image" and entry.image == img
    # built under another storage placement (a node went down, moved port): rebuilt on this read
    assert readmodel.decode(raw, b"feedbeef") == readmodel.Entry("stale", raw=raw, placement=b"feedbeef")
    assert readmodel.decode(raw, b"") == readmodel.Entry("stale", raw=raw, placement=b"")  # no token: no cache
    old = b"I" + img.SerializeToString()  # written before tokens
    assert readmodel.decode(old, b"0123abcd") == readmodel.Entry("stale", raw=old, placement=b"0123abcd")
    assert readmodel.decode(b"P") == readmodel.Entry("private")
    assert readmodel.decode(b"D") == readmodel.Entry("deleted")
    # deleted by the expiry sweeper, at that unix time; a marker of a reason it does not know is a deletion
    assert readmodel.decode(b"Dexpired 1800000000") == readmodel.Entry("deleted", expired_at=1_800_000_000)
    assert readmodel.decode(b"Dexpired soon") == readmodel.decode(b"Dother 5") == readmodel.Entry("deleted")
    assert readmodel.decode(None) is None and readmodel.decode(b"Xjunk") is None
    assert readmodel.cacheable(img)
    assert not readmodel.cacheable(common_pb2.Image(status=common_pb2.IMAGE_STATUS_READY, visibility="private"))
    assert not readmodel.cacheable(common_pb2.Image(status=common_pb2.IMAGE_STATUS_PROCESSING))


def test_readmodel_ttl_ends_before_signed_urls_expire() -> None:
    now = 1_800_000_000
    img = common_pb2.Image(slug="x", original_url=f"http://s/o/o/aa/bb/x.jpg?exp={now + 1500}&sig=abc")
    img.variants.add(name="thumb", url="http://s/o/v/aa/thumb.webp")
    assert readmodel.ttl_s(img, now) == 1500 - readmodel.EXPIRY_MARGIN_S
    img.original_url = f"http://s/o/o/aa/bb/x.jpg?exp={now + 3 * readmodel.IMAGE_TTL_S}&sig=abc"
    assert readmodel.ttl_s(img, now) == readmodel.IMAGE_TTL_S  # never longer than the cache's own lifetime
    img.original_url = f"http://s/o/o/aa/bb/x.jpg?exp={now + 60}&sig=abc"
    assert readmodel.ttl_s(img, now) == 0  # about to expire: not cached at all
