"""Download names and their Content-Disposition (pixelfox.disposition), and signed download URLs."""

from __future__ import annotations

import pytest

from pixelfox import disposition, signing
from pixelfox.storage.keys import original_key


@pytest.mark.parametrize(("filename", "ext", "want"), [
    ("cat.jpg", "jpg", "cat.jpg"),
    ("cat.JPEG", "jpg", "cat.JPEG"),             # the same format: the name as uploaded
    ("cat.jpg", "jpeg", "cat.jpg"),
    ("scan.avif", "jpg", "scan.jpg"),            # served as another format: its extension
    ("upload", "jpeg", "upload.jpg"),            # no extension: the served one's usual spelling
    ("", "png", "Ab12.png"),                     # nothing: <slug>.<ext>
    ("..", "png", "Ab12.png"),
    ("../../etc/passwd", "png", "passwd.png"),
    ("C:\\Users\\me\\cat.png", "png", "cat.png"),
    ('say "cheese".png', "png", "say cheese.png"),
    ("a\r\nSet-Cookie: x.png", "png", "aSet-Cookie: x.png"),
    ("abc\u202egnp.exe", "png", "abcgnp.png"),  # no bidi override to disguise it
    ('"".png', "png", "Ab12.png"),                # no hidden file
    (".bashrc", "png", "Ab12.png"),
    ("x" * 400 + ".png", "png", "x" * 251 + ".png"),
])
def test_download_name(filename: str, ext: str, want: str) -> None:
    got = disposition.download_name(filename, "Ab12", ext)
    assert got == want and disposition.is_download_name(got)


@pytest.mark.parametrize("bad", ["", " x.jpg", "x.jpg ", "a/b.jpg", "a\\b.jpg", 'a".jpg', "a\nb.jpg", "a\x00.jpg",
                                 "..", ".png", "x" * 256, "a\u2066b.jpg", "\ud800.jpg"])
def test_is_download_name_refuses(bad: str) -> None:
    assert not disposition.is_download_name(bad)


def test_attachment_header() -> None:
    assert disposition.attachment("cat.jpg") == "attachment; filename=\"cat.jpg\"; filename*=UTF-8''cat.jpg"
    assert disposition.attachment("Été à l'eau; 1%.jpg") == (
        "attachment; filename=\"_t_ _ l'eau; 1%.jpg\"; filename*=UTF-8''%C3%89t%C3%A9%20%C3%A0%20l%27eau%3B%201%25.jpg")
    assert disposition.attachment("日本.png").isascii()


def test_download_url_signs_the_name() -> None:
    key, other = signing.keys_from("secret")[0], signing.keys_from("other")[0]
    obj = original_key("ab" * 32, "jpg")
    url = signing.download_url(f"http://s1:8000/base/o/{obj}?exp=1&sig=old", "Été.jpg", key, 2_000_000_000)
    base, _, query = url.partition("?")
    assert base == f"http://s1:8000/base/o/{obj}"
    assert query.startswith("exp=2000000000&download=%C3%89t%C3%A9.jpg&sig=")
    sig = query.rpartition("sig=")[2]
    assert signing.verify([key], obj, "2000000000", sig, download="Été.jpg")
    assert not signing.verify([key], obj, "2000000000", sig, download="x.jpg")
    assert not signing.verify([key], obj, "2000000000", sig)  # the name cannot be dropped
    assert not signing.verify([other], obj, "2000000000", sig, download="Été.jpg")
    plain = signing.sign(key, obj, 2_000_000_000).rpartition("sig=")[2]
    assert not signing.verify([key], obj, "2000000000", plain, download="Été.jpg")  # nor added
    with pytest.raises(ValueError, match="not a storage object URL"):
        signing.download_url("http://s1:8000/x.jpg", "x.jpg", key, 1)
