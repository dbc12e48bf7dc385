"""The whole cluster, end to end, on the real corpus (issue: start here).

Every node is its own process (``cluster`` fixture); files go in through the real
``pixelfox put --json --wait`` command over gRPC, and come back out over HTTP from the
storage nodes' own origin.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from tests.conftest import ClusterHandle, manifest_rows

pytestmark = pytest.mark.e2e

BOXES = {"thumb": 200, "medium": 1024, "large": 2048}
MAGIC = {
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "avif": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"),
    "jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
}
MIME = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg"}


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def put_json(cluster: ClusterHandle, files: list[Path], commands: int = 1) -> list[dict[str, Any]]:
    """``pixelfox put --json --wait`` of ``files``; with ``commands`` > 1 the files are shared among that
    many commands run at once (one command waits for each image before it sends the next, so it keeps
    one job running; the session cluster has two processing nodes). Answers in the order of ``files``."""
    if commands > 1:
        parts = [files[i::commands] for i in range(commands)]
        with ThreadPoolExecutor(commands) as pool:
            answers = {r["file"]: r for part in pool.map(lambda p: put_json(cluster, p), parts) for r in part}
        return [answers[str(f)] for f in files]
    res = cluster.pixelfox("put", "--json", "--wait", *map(str, files), timeout=600)
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == len(files), res.stderr
    assert [r["file"] for r in lines] == [str(f) for f in files]  # input order
    return lines


def upright_reference(path: Path, size: tuple[int, int]) -> Image.Image:
    """The source as Pillow shows it upright (exif_transpose), flattened on white, resized to ``size``."""
    with Image.open(path) as im:
        im.draft("RGB", (size[0] * 2, size[1] * 2))
        up = ImageOps.exif_transpose(im)
        return flatten(up).resize(size, Image.Resampling.LANCZOS)


def flatten(im: Image.Image) -> Image.Image:
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, im).convert("RGB")


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("L"), b.convert("L"))).mean)


def check_variant(v: dict[str, Any], disp: tuple[int, int]) -> bytes:
    """Headers, magic bytes, box size, aspect and metadata of one served variant; returns its bytes."""
    status, headers, body = fetch(v["url"])
    assert status == 200
    assert headers["content-type"] == MIME[v["format"]]
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["etag"].startswith('"') and len(headers["etag"]) > 10  # strong
    assert MAGIC[v["format"]](body), f"{v['url']} is not {v['format']}"
    assert len(body) == v["bytes"]
    box = BOXES[v["name"]]
    w, h = v["width"], v["height"]
    assert max(w, h) <= box and w <= disp[0] and h <= disp[1], "outside the box or upscaled"
    assert max(w, h) == min(box, max(disp)), "not fitted to the box"
    assert abs(w / h - disp[0] / disp[1]) < 0.02 * max(1.0, disp[0] / disp[1]) + 2 / min(w, h)
    with Image.open(io.BytesIO(body)) as im:
        assert im.size == (w, h)
        assert len(im.getexif()) == 0, "EXIF left in a variant"
        assert "exif" not in im.info and "xmp" not in im.info
    assert b"Exif\x00\x00" not in body and b"<x:xmpmeta" not in body
    return body


def check_clean_original(v: dict[str, Any], source: Path, disp: tuple[int, int]) -> None:
    """The upload with its metadata removed: same pixels as ``source``, upright size ``disp``, no EXIF but
    a non-1 orientation, no GPS/XMP/comment; served publicly (no signature) with the source's type."""
    status, headers, body = fetch(v["url"])
    assert status == 200 and "?" not in v["url"]
    raw = source.read_bytes()
    with Image.open(source) as src, Image.open(io.BytesIO(body)) as got:
        assert headers["content-type"] == Image.MIME[src.format]
        assert got.format == src.format and got.size == src.size
        orientation = src.getexif().get(0x0112, 1)
        assert dict(got.getexif()) == ({0x0112: orientation} if orientation != 1 else {}), "metadata left"
        assert ImageOps.exif_transpose(got).size == disp == (v["width"], v["height"])
        assert got.tobytes() == src.tobytes(), "pixels changed by stripping"
        assert "xmp" not in got.info and "comment" not in got.info
    assert b"GPS" not in body[:65536] and len(body) == v["bytes"] <= len(raw)


PHOTOS = [r for r in manifest_rows() if r["file"].startswith("photos/")]


@pytest.fixture(scope="module")
def photo_results(cluster: ClusterHandle, corpus: Path) -> dict[str, dict[str, Any]]:
    files = [corpus / r["file"] for r in PHOTOS]
    return {Path(r["file"]).name: r for r in put_json(cluster, files, commands=2)}


@pytest.mark.parametrize("row", PHOTOS, ids=lambda r: Path(r["file"]).name)
def test_corpus_photo_end_to_end(row: dict[str, str], photo_results: dict[str, dict[str, Any]],
                                 corpus: Path) -> None:
    res = photo_results[Path(row["file"]).name]
    if row["format"] == "AVIF" and res["status"] == "rejected":
        assert res["error"]["code"] == "unsupported-format"
        assert "unsupported format" in res["error"]["message"].lower()
        return
    assert res["status"] == "ready", res
    path = corpus / row["file"]
    with Image.open(path) as im:
        disp = ImageOps.exif_transpose(im).size if row["format"] != "GIF" else im.size
    assert (res["width"], res["height"]) == disp
    kinds = {(v["name"], v["format"]) for v in res["variants"]}
    assert kinds == {("thumb", "webp"), ("thumb", "avif"), ("medium", "webp"), ("medium", "avif"),
                     ("medium", "jpeg"), ("large", "webp"), ("large", "avif"), ("original", row["format"].lower())}
    for v in res["variants"]:
        if v["name"] == "original":
            check_clean_original(v, path, disp)
            continue
        body = check_variant(v, disp)
        if v["name"] == "thumb" and v["format"] == "webp":
            with Image.open(io.BytesIO(body)) as thumb:
                thumb.seek(0)
                got = flatten(thumb)
            ref = upright_reference(path, got.size)
            diff = mean_diff(got, ref)
            assert diff < 12, f"thumbnail differs from the upright reference by {diff:.1f}"
            orientation = Image.open(path).getexif().get(0x0112, 1)
            if orientation in (3, 6, 8):  # pixels must be turned, not only the size
                wrong = ref.rotate(180)
                assert mean_diff(got, wrong) > diff * 1.5


def test_case_b01_orientation_6_thumbnail_is_150x200(photo_results: dict[str, dict[str, Any]]) -> None:
    res = photo_results["samsung_j3_orient6.jpg"]
    thumb = next(v for v in res["variants"] if v["name"] == "thumb" and v["format"] == "webp")
    assert (thumb["width"], thumb["height"]) == (150, 200)


def test_original_served_with_detected_type(photo_results: dict[str, dict[str, Any]]) -> None:
    res = photo_results["painting_rgb.png"]
    status, headers, body = fetch(res["stored_original_url"])
    assert status == 200 and headers["content-type"] == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    assert headers["x-content-type-options"] == "nosniff"
    # the original (which keeps the uploader's metadata) is never served without a signature, though a public
    # variant's key names its SHA-256
    unsigned = res["stored_original_url"].split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(unsigned)
    assert refused.value.code == 403


def test_put_json_original_url_carries_no_gps(photo_results: dict[str, dict[str, Any]]) -> None:
    """``put --json`` lines get pasted: ``original_url`` is the clean original (no EXIF, no GPS,
    a lasting URL); the stored upload, GPS and all, is only ``stored_original_url`` (signed)."""
    res = photo_results["iphone5_orient3_gps.jpg"]
    clean = next(v for v in res["variants"] if v["name"] == "original")
    assert res["original_url"] == clean["url"] and "sig=" not in res["original_url"]
    status, _, body = fetch(res["original_url"])
    with Image.open(io.BytesIO(body)) as got:
        assert status == 200 and not got.getexif().get_ifd(0x8825) and len(body) == clean["bytes"]
    status, _, stored = fetch(res["stored_original_url"])
    with Image.open(io.BytesIO(stored)) as got:
        gps = got.getexif().get_ifd(0x8825)
    assert status == 200 and "sig=" in res["stored_original_url"] and len(stored) == 2366947
    assert gps and 2 in gps and 4 in gps  # GPSLatitude, GPSLongitude kept for the owner


REJECTS = [r for r in manifest_rows() if r["expected_outcome"] == "reject-with-error"]
REASONS = {
    "empty.jpg": "empty",
    "text_renamed.jpg": "not",
    "svg_with_script.svg": "svg",
    "bomb_100000x100000.png": "pixel",
    "bomb_65535x66601.gif": "pixel",
    "heif_unsupported.heic": "heic",
    "truncated.jpg": "truncated",
    "cut.avif": "truncated",
    "gif_stall_issue101.gif": "",
    "page.png": "html",
}


def queue_length(cluster: ClusterHandle) -> int:
    import redis

    r = redis.Redis.from_url(cluster.redis_url)
    try:
        return int(r.xlen("pixelfox:{jobs}:stream"))
    finally:
        r.close()


def test_bad_inputs_rejected_nothing_stored(cluster: ClusterHandle, corpus: Path, tmp_path: Path) -> None:
    before_files = set(cluster.storage_files())
    files = [corpus / r["file"] for r in REJECTS]
    # a text file named .jpg and an HTML page declared as an image, generated here too
    html = tmp_path / "page.png"
    html.write_text("<html><script>alert(1)</script></html>")
    files.append(html)
    avif = (corpus / "photos/canon70d_20mp_gps.avif").read_bytes()
    (tmp_path / "cut.avif").write_bytes(avif[: len(avif) * 3 // 4])  # a cut-off upload of a real AVIF
    files.append(tmp_path / "cut.avif")
    results = put_json(cluster, files)
    for res in results:
        name = Path(res["file"]).name
        assert res["status"] in ("rejected", "failed"), res
        assert res["error"]["message"], res
        reason = REASONS.get(name, "not")
        assert reason in res["error"]["message"].lower(), (name, res["error"])
    rejected = [r for r in results if r["status"] == "rejected"]
    assert len(rejected) == len(results), "every reject-with-error file is caught at upload"
    assert set(cluster.storage_files()) == before_files, "a rejected upload left bytes in storage"
    assert queue_length(cluster) == 0
    # the cluster still serves: every node healthy, and a good photo still goes through
    status = json.loads(cluster.pixelfox("status", "--json").stdout)
    assert all(n["health"] == "healthy" for n in status["nodes"])
    ok = put_json(cluster, [corpus / "photos" / "painting_rgb.png"])
    assert ok[0]["status"] == "ready"


EDGE_ACCEPTS = [r for r in manifest_rows() if r["file"].startswith("edge/") and r["expected_outcome"] == "accept"]


def test_edge_accepts_become_ready(cluster: ClusterHandle, corpus: Path) -> None:
    results = put_json(cluster, [corpus / r["file"] for r in EDGE_ACCEPTS], commands=2)
    bad = [(r["file"], r["status"], r["error"]) for r in results if r["status"] != "ready"]
    assert not bad
    for res in results:
        for v in res["variants"]:
            if v["name"] == "original":  # the upload itself, metadata removed: its own size
                assert (v["width"], v["height"]) == (res["width"], res["height"])
            else:  # renditions are clamped to WebP's side limit
                assert v["width"] <= 16383 and v["height"] <= 16383


def test_put_title_names_new_images_only(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``pixelfox put --title``: a new image gets it; the same bytes again (dedup) return the image
    as it was, and say so; an over-long title is a usage error (exit 2), before any file is sent."""
    photo = tmp_path / "titled.png"
    Image.new("RGB", (40, 30), tuple(os.urandom(3))).save(photo, "PNG")
    first = cluster.pixelfox("put", "--json", "--title", "Harbour at dusk", str(photo), timeout=120)
    again = cluster.pixelfox("put", "--json", "--title", "Something else", str(photo), timeout=120)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert (a["title"], b["title"], b["id"]) == ("Harbour at dusk", "Harbour at dusk", a["id"])
    assert (a["deduplicated"], b["deduplicated"]) == (False, True)
    plain = cluster.pixelfox("put", str(photo), timeout=120)  # no --json: stdout is the share link alone
    assert plain.returncode == 0 and plain.stdout == f"{a['url']}\n", (plain.stdout, plain.stderr)
    assert "(already uploaded: the existing image, unchanged)" in plain.stderr, plain.stderr
    long = cluster.pixelfox("put", "--json", "--title", "t" * 256, str(photo), timeout=120)
    assert (long.returncode, long.stdout) == (2, ""), long.stdout
    assert long.stderr.startswith("pixelfox: argument --title: title longer than 255 characters"), long.stderr


def test_put_of_a_folder_says_so_and_a_closed_pipe_is_no_traceback(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A file put cannot send is the caller's error: exit 2, as a usage error (it was 1, as a failure of
    the cluster), also beside a file that went; a symlink loop says so (it said "no such file"); a file
    name starting with "-" is refused by argparse with how to pass it, and that way works."""
    res = cluster.pixelfox("put", "--json", str(tmp_path), timeout=60)
    out = json.loads(res.stdout)
    said = f"{tmp_path} is a folder: pass the files in it ({tmp_path}/*)"
    assert res.returncode == 2 and out["error"] == {"code": "bad-request", "message": said}, out
    device = cluster.pixelfox("put", "--json", "/dev/null", timeout=60)
    assert device.returncode == 2, device.stderr
    assert json.loads(device.stdout)["error"]["message"] == "/dev/null is not a regular file (a device or a pipe)"
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    res = cluster.pixelfox("put", str(loop), timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"✗ {loop}: {loop} is a symlink loop (ELOOP): a link in "
                                                               "it leads back to itself; point it at a file\n")
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "gone.png")  # it said "no such file: .../dangling.png", which is there
    res = cluster.pixelfox("put", str(dangling), timeout=60)
    assert (res.returncode, res.stderr) == (2, f"✗ {dangling}: {dangling} is a symlink to {tmp_path / 'gone.png'}, "
                                               "which does not exist\n"), res.stderr
    photo = tmp_path / "piped.png"
    Image.new("RGB", (20, 10), tuple(os.urandom(3))).save(photo, "PNG")
    res = cluster.pixelfox("put", "--json", str(tmp_path / "missing.png"), str(photo), timeout=120)
    missing, sent = map(json.loads, res.stdout.splitlines())
    assert (res.returncode, missing["error"], sent["status"]) == (
        2, {"code": "not-found", "message": f"no such file: {tmp_path / 'missing.png'}"}, "processing"), res.stdout
    dash = cluster.root / f"-{photo.name}"  # a name starting with "-": passed after `--`, as the usage error says
    dash.write_bytes(photo.read_bytes())
    try:
        refused = cluster.pixelfox("put", dash.name, timeout=60)
        assert (refused.returncode, refused.stderr) == (2, (
            f"pixelfox: the following arguments are required: FILE; {dash.name} starts with '-', so it was read "
            f"as an option: to pass a file of that name, write ./{dash.name}, or put it after `--`: "
            f"`pixelfox put -- {dash.name}` (see `pixelfox put --help`)\n"))
        sent = cluster.pixelfox("put", "--json", "--", dash.name, timeout=120)
        assert sent.returncode == 0 and json.loads(sent.stdout)["file"] == dash.name, sent.stderr
        # "-" alone, standard input to other tools, says why put takes no pipe (it said "no such file: -")
        stdin = cluster.pixelfox("put", "--", "-", timeout=60)
        assert (stdin.returncode, stdin.stderr) == (2, (
            "✗ -: no such file: - (put sends files, not standard input: it needs the size first and resumes "
            "from the file; save what the pipe sends to a file and put that)\n")), stdin.stderr
    finally:
        dash.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "pixelfox", "put", "--json", str(photo), str(photo)],
                            cwd=cluster.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -c 0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err
    with open("/dev/full", "w") as full:  # `> out.json` on a full disk: said in one line, exit 1
        res = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--json", str(photo)], cwd=cluster.root,
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert res.returncode == 1 and res.stderr == "pixelfox: No space left on device\n", res.stderr


def test_put_of_an_unreadable_file_refuses_that_file_only(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A file the user may not read ended the whole run, "pixelfox: Permission denied: FILE" with exit 1,
    and the files after it were never tried; it is now that file's refusal (the caller's: exit 2). As
    root (who reads any file), the command runs without the capabilities that let root read it."""
    locked, photo = tmp_path / "locked.png", tmp_path / "open.png"
    for path in (locked, photo):
        Image.new("RGB", (20, 10), tuple(os.urandom(3))).save(path, "PNG")
    locked.chmod(0)
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads every file, and setpriv (util-linux) is not here to drop that right")
        as_user = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search"]
    res = subprocess.run([*as_user, sys.executable, "-m", "pixelfox", "put", "--json", str(locked), str(photo)],
                         cwd=cluster.root, capture_output=True, text=True, timeout=120, check=False)
    refused, sent = map(json.loads, res.stdout.splitlines())
    assert (res.returncode, refused["status"], refused["error"], sent["status"]) == (2, "rejected", {
        "code": "bad-request", "message": f"{locked} cannot be read (Permission denied): check its permissions"},
        "processing"), (res.stdout, res.stderr)


def test_status_lists_every_node(cluster: ClusterHandle) -> None:
    res = cluster.pixelfox("status", "--json")
    assert res.returncode == 0, res.stderr
    nodes = json.loads(res.stdout)["nodes"]
    roles = sorted(n["role"] for n in nodes if n["role"] != "web")
    assert roles == sorted(["manager", "upload", "upload", "proc", "proc", "storage", "storage"])
    assert [n["role"] for n in nodes].count("web") >= 1  # later tests of the session add web nodes
    for n in nodes:
        assert {"role", "id", "address", "health", "load", "http_url", "metrics_url"} <= n.keys()
    storage = [n for n in nodes if n["role"] == "storage"]
    assert all(n["http_url"].startswith("http://127.0.0.1:") for n in storage)
    assert all(n["metrics_url"].endswith("/metrics") for n in nodes if n["role"] != "manager")
    table = cluster.pixelfox("status")  # piped, as in a script or a CI log: whole cells, no "manag…"
    assert table.returncode == 0 and "…" not in table.stdout, table.stdout
    assert all(n["id"] in table.stdout and n["http_url"] in table.stdout for n in nodes), table.stdout
    for n in storage:  # a storage node's figures are bytes: shown in binary units, not raw numbers
        row = next(line for line in table.stdout.splitlines() if f" {n['id']} " in line)
        assert re.search(r"(\d+ B|\d+\.\d (KiB|MiB|GiB)) / \d+\.\d GiB", row), row
        assert str(n["capacity"]) not in row


def test_node_without_cluster_secret_is_refused(cluster: ClusterHandle) -> None:
    import asyncio

    import grpc

    from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc

    async def rogue() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(cluster.manager_address) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            try:
                await stub.Register(manager_pb2.RegisterRequest(
                    role=common_pb2.NODE_ROLE_STORAGE, node_id="rogue", grpc_address="127.0.0.1:9"),
                    metadata=(("pixelfox-cluster-token", "wrong"),), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    assert asyncio.run(rogue()) == grpc.StatusCode.UNAUTHENTICATED


def test_users_and_keys_commands(cluster: ClusterHandle, corpus: Path) -> None:
    res = cluster.pixelfox("users", "create", "carol", "--password-stdin", input="correct horse battery\n")
    assert res.returncode == 0, res.stderr
    assert "carol" in res.stdout
    dup = cluster.pixelfox("users", "create", "carol", "--password-stdin", input="another password\n")
    assert dup.returncode == 2 and "taken" in dup.stderr
    key = cluster.pixelfox("keys", "create", "carol")
    assert key.returncode == 0 and key.stdout.strip().startswith("pfx_")
    import subprocess
    import sys
    put = subprocess.run(
        [sys.executable, "-m", "pixelfox", "put", "--json", "--wait", "--manager", cluster.manager_address,
         "--api-key", key.stdout.strip(), str(corpus / "photos" / "painting_rgb.png")],
        capture_output=True, text=True, timeout=120, check=False, cwd="/",
    )
    assert put.returncode == 0, put.stderr
    out = json.loads(put.stdout)
    assert out["status"] == "ready" and out["url"].endswith("/i/" + out["id"])
    bad = subprocess.run(
        [sys.executable, "-m", "pixelfox", "put", "--manager", cluster.manager_address, "--api-key", "pfx_nope",
         str(corpus / "photos" / "painting_rgb.png")], capture_output=True, text=True, timeout=60, check=False,
        cwd="/",
    )
    assert bad.returncode == 2 and "invalid API key" in bad.stderr  # a wrong key is the caller's (it was 1)
