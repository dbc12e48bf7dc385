"""pixelfox.text: titles are checked (refused), client file names are cleaned (never refused)."""

from __future__ import annotations

import pytest

from pixelfox import errors
from pixelfox.text import MAX_FILENAME, checked, checked_title, human_bytes, isolated, one_line, safe_filename


@pytest.mark.parametrize(("raw", "want"), [
    ("photo.jpg", "photo.jpg"),
    ("C:\\Users\\me\\Desktop\\shot.png", "shot.png"),
    ("../../etc/passwd", "passwd"),
    ("bad\x00na\x1fme.gif", "badname.gif"),
    ("", "upload"),
    ("/", "upload"),
    (None, "upload"),
    ("x" * 300 + ".jpeg", "x" * (MAX_FILENAME - 5) + ".jpeg"),  # the stem is cut, the extension kept
    ("x" * 300, "x" * MAX_FILENAME),  # no extension: cut
    ("x" * 300 + "." + "e" * 20, ("x" * 300 + ".")[:MAX_FILENAME]),  # 20 characters are no extension
    ("." + "x" * 300, ("." + "x" * 300)[:MAX_FILENAME]),  # a dot file has no stem
    ("..", "upload"), (".", "upload"), ("a/..", "upload"), (".hidden", ".hidden"),
    ("abc\u202egnp.exe", "abcgnp.exe"), ("\u2067name\u2069.png", "name.png"),  # bidi controls go
    ("\u05e9\u05dc\u05d5\u05dd.jpg", "\u05e9\u05dc\u05d5\u05dd.jpg"),  # right-to-left letters stay
])
def test_safe_filename(raw: str | None, want: str) -> None:
    got = safe_filename(raw)
    assert got == want and len(got) <= MAX_FILENAME


def test_a_cut_name_keeps_its_extension_and_length() -> None:
    got = safe_filename("é" * 400 + ".webp")
    assert got.endswith("é.webp") and len(got) == MAX_FILENAME


def test_checked_title() -> None:
    assert checked_title("  a title\u200d ") == "a title\u200d"  # ZWJ joins emoji: kept
    assert checked_title("t" * 255) == "t" * 255
    with pytest.raises(errors.BadRequest, match="title longer than 255 characters"):
        checked_title("t" * 256)
    with pytest.raises(errors.BadRequest, match=r"title contains a control character \(U\+000A\)"):
        checked_title("two\nlines")
    for sep in ("\u2028", "\u2029"):  # Unicode's line and paragraph separators are line breaks too
        with pytest.raises(errors.BadRequest, match=rf"^title contains a line separator \(U\+{ord(sep):04X}\)"):
            checked_title(f"two{sep}lines")
    assert one_line("a\u2028b\r\nc") == "a b c"  # a form's pasted title: one line
    # invisible characters at the ends are trimmed as spaces are: a title of only U+200B showed nothing
    assert checked_title("\u200b") == "" and checked_title(" \ufeff\u200b\u2060 ") == ""
    assert checked_title("\u200ba\u200bb\u00ad") == "a\u200bb"  # inside, kept


@pytest.mark.parametrize("code", [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
def test_a_bidi_control_in_a_title_is_refused_naming_it(code: int) -> None:
    """An override made a title read as other text ("abc<U+202E>gnp.exe" shows as "abcexe.png"): every
    bidirectional control is refused as the other control characters are, naming its code point."""
    said = rf"^title contains a bidirectional control character \(U\+{code:04X}\)$"
    with pytest.raises(errors.BadRequest, match=said):
        checked_title(f"abc{chr(code)}gnp.exe")


def test_right_to_left_text_needs_no_bidi_control() -> None:
    assert checked_title(" \u05e9\u05dc\u05d5\u05dd 2024 \u0645\u0631\u062d\u0628\u0627 ") == \
        "\u05e9\u05dc\u05d5\u05dd 2024 \u0645\u0631\u062d\u0628\u0627"


def test_isolated_wraps_only_text_with_bidi_controls() -> None:
    assert isolated("Sunset") == "Sunset"
    assert isolated("\u05e9\u05dc\u05d5\u05dd") == "\u05e9\u05dc\u05d5\u05dd"  # RTL letters need no isolate
    assert isolated("photo\u202egnp.exe") == "\u2068photo\u202egnp.exe\u2069"
    assert isolated("a\u2067b") == "\u2068a\u2067b\u2069\u2069"  # its RLI closed, then ours
    # a stray PDI in the title cannot close our isolate early (it left the override open after it)
    assert isolated("a\u2069\u202eevil") == "\u2068a\u202eevil\u2069"
    assert isolated("x\u202c\u202a") == "\u2068x\u202a\u2069"



@pytest.mark.parametrize(("n", "shown"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (46_619_668, "44.5 MiB"),
                                          (56_892_419_092, "53.0 GiB"), (5 * 1024**4, "5120.0 GiB")])
def test_human_bytes(n: int, shown: str) -> None:
    assert human_bytes(n) == shown


def test_same_text_ignores_crlf_and_surrounding_space_only() -> None:
    from pixelfox.text import same_text

    assert same_text("a\r\nb ", "a\nb") and same_text(" t\u202e", "t\u202e")
    assert not same_text("a\nb", "a b") and not same_text("t", None) and not same_text("t\u202e", "t")


def test_multiline_text_comes_back_with_lf_line_breaks() -> None:
    """A browser sends a textarea's line breaks as CRLF; its maxlength counts each as one character."""
    assert checked(" a\r\nb\rc\n\td\r\n", "description", multiline=True) == "a\nb\nc\n\td"
    assert len(checked("x\r\n" * 1000, "description", multiline=True)) == 1999  # the last break is trimmed
