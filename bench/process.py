"""Image-processing benchmark: the PixelFox core vs pyvips (libvips) vs Pillow, same job, one run.

The job for every engine and every source image: decode, apply EXIF orientation, then the
default recipe's sizes (200, 1024 and 2048 px boxes, fit inside, never upscaled; ``--boxes``
sets others), each
encoded as WebP (q80, method/effort 4) and AVIF. Every engine uses its fastest ordinary
setup:

* ours   - ``pixelfox.imaging.process`` (one decode, with JPEG shrink-on-load to 1/2 or 1/4
  when the largest box is at most half the source, SIMD Lanczos3 down the chain, libwebp,
  libaom through libavif, all in Rust/C with the GIL released);
* pyvips - ``thumbnail_buffer`` to the largest box (shrink-on-load, auto-rotate), decoded
  once into memory, each smaller size resized (lanczos3) from the next larger one,
  ``webpsave`` and ``heifsave(compression="av1")`` (libheif + libaom);
* Pillow - ``draft`` (JPEG DCT scaling; with the square 2048 px box it scales only sources of
  at least 4096 px on both sides) + ``exif_transpose`` + ``thumbnail`` with ``reducing_gap``
  (``reduce`` then Lanczos), down the chain, WebP and AVIF (libavif).

Engines are interleaved round by round, so a noisy neighbour hurts all of them alike. For
1 and 2 workers (threads; every engine releases the GIL) it prints images/s, megapixels/s
(source pixels), p50/p95 latency per image, mean output bytes per variant, the mean SSIM of
every output against one reference (the source resized by libvips lanczos3 to that output's
size, never encoded; SSIM on luma, scikit-image) and the ratios ours/pyvips and ours/Pillow.
It also times the rejection of a decompression bomb and the process's RSS growth from it.

Run (not part of CI)::

    .venv/bin/pip install pyvips scikit-image   # apt-get install libvips42 (Debian 12: 8.14)
    .venv/bin/python bench/process.py                    # corpus + 3 generated 12 MP + 2 of 24 MP
    .venv/bin/python bench/process.py --generated 6 --rounds 2 --workers 1 2
    .venv/bin/python bench/process.py --corpus 0 --generated 0 --generated-24mp 3   # shrink-on-load
    .venv/bin/python bench/process.py --boxes 200 --workers 1   # thumbnail only: mostly decode
    .venv/bin/python bench/process.py --engines ours --avif-speed 9   # tuning a setting
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips
from PIL import Image, ImageOps
from skimage.metrics import structural_similarity

from pixelfox import imaging

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
CACHE = Path(os.environ.get("PIXELFOX_BENCH_CACHE", "/tmp/pixelfox-bench"))
BOXES = (("large", 2048), ("medium", 1024), ("thumb", 200))  # --boxes replaces it
BOX_NAMES = {box: name for name, box in BOXES}


def set_boxes(boxes: list[int]) -> None:
    """Use these square boxes (px, any order) instead of the default recipe's, e.g. ``--boxes 200``
    for a thumbnail-only job, where decoding is most of the time."""
    global BOXES
    BOXES = tuple((BOX_NAMES.get(b, f"box{b}"), b) for b in sorted(set(boxes), reverse=True))
BOMB = CORPUS / "edge" / "bomb_100000x100000.png"


@dataclass
class Settings:
    webp_q: int = 80
    webp_method: int = 4
    avif_q_ours: float = imaging.DEFAULT_RECIPE.avif_quality
    avif_speed_ours: int = imaging.DEFAULT_RECIPE.avif_speed
    avif_q_vips: int = 50  # heifsave's default Q
    avif_effort_vips: int = 4  # heifsave's default effort
    avif_q_pil: int = 60
    avif_speed_pil: int = 8
    uniform_avif: bool = False  # one AVIF quality/speed for every box (flags, sweep), not the recipe's per box


@dataclass
class JobResult:
    seconds: float
    megapixels: float
    outputs: dict[str, bytes]  # "large.webp" -> encoded bytes


# --------------------------------------------------------------------------- engines


def run_ours(data: bytes, s: Settings) -> dict[str, bytes]:
    # per-variant AVIF settings as the default recipe has them, unless a flag set one for all
    own = {v.name: v for v in imaging.DEFAULT_RECIPE.variants}
    recipe = imaging.Recipe(
        variants=tuple(imaging.VariantSpec(
            name, box, box, ("webp", "avif"),
            avif_quality=None if s.uniform_avif or name not in own else own[name].avif_quality,
            avif_speed=None if s.uniform_avif or name not in own else own[name].avif_speed,
            avif_rect_partitions=s.uniform_avif or name not in own or own[name].avif_rect_partitions)
            for name, box in BOXES),
        webp_quality=s.webp_q,
        webp_method=s.webp_method,
        avif_quality=s.avif_q_ours,
        avif_speed=s.avif_speed_ours,
    )
    res = imaging.process(data, recipe, imaging.Limits(timeout_s=0))
    return {f"{v.name}.{v.format}": v.data for v in res.variants}


def run_pyvips(data: bytes, s: Settings) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    img = pyvips.Image.thumbnail_buffer(data, BOXES[0][1], height=BOXES[0][1], size="down").copy_memory()
    if img.bands in (1, 2):  # grey or grey+alpha
        img = img.colourspace("srgb")
    prev = img
    for name, box in BOXES:
        scale = min(1.0, box / prev.width, box / prev.height)
        cur = prev if scale >= 1.0 else prev.resize(scale, kernel="lanczos3").copy_memory()
        out[f"{name}.webp"] = cur.webpsave_buffer(Q=s.webp_q, effort=s.webp_method, strip=True)
        out[f"{name}.avif"] = cur.heifsave_buffer(
            compression="av1", Q=s.avif_q_vips, effort=s.avif_effort_vips, strip=True
        )
        prev = cur
    return out


def run_pillow(data: bytes, s: Settings) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (BOXES[0][1], BOXES[0][1]))
    img = ImageOps.exif_transpose(img)
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    prev = img
    for name, box in BOXES:
        cur = prev.copy()
        cur.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=2.0)
        for fmt, kw in (
            ("WEBP", {"quality": s.webp_q, "method": s.webp_method}),
            ("AVIF", {"quality": s.avif_q_pil, "speed": s.avif_speed_pil}),
        ):
            buf = io.BytesIO()
            cur.save(buf, fmt, **kw)
            out[f"{name}.{fmt.lower()}"] = buf.getvalue()
        prev = cur
    return out


ENGINES = {"ours": run_ours, "pyvips": run_pyvips, "pillow": run_pillow}


# --------------------------------------------------------------------------- inputs


def corpus_photos() -> list[Path]:
    """Still photos of the corpus that all three engines read (JPEG/PNG/WebP, one frame)."""
    out = []
    for p in sorted((CORPUS / "photos").iterdir()):
        if p.suffix not in (".jpg", ".png", ".webp"):
            continue
        if imaging.probe(p.read_bytes()[: 256 * 1024]).frames == 1:
            out.append(p)
    return out


def generated_photos(count: int, width: int = 4000, height: int = 3000) -> list[Path]:
    """``count`` camera-like JPEGs of ``width`` x ``height`` px (default 12 MP, 4000x3000; q92,
    4:2:0): each a 2x2 mosaic of different corpus photos at half that size, so they carry real
    photographic detail (not an upscale, which would compress unrealistically well). Cached in
    ``$PIXELFOX_BENCH_CACHE``. At 6000x4000 (24 MP) the default 2048 px box is under half the
    source, so our core decodes at 1/2 (shrink-on-load); 4000x3000 is decoded at full size."""
    CACHE.mkdir(parents=True, exist_ok=True)
    srcs = [p for p in corpus_photos() if p.suffix == ".jpg"]
    mp = round(width * height / 1e6)
    tw, th = width // 2, height // 2
    out = []
    for i in range(count):
        path = CACHE / f"generated_{mp}mp_{i}.jpg"
        if not path.exists():
            canvas = Image.new("RGB", (width, height))
            for t in range(4):
                src = ImageOps.exif_transpose(Image.open(srcs[(i + t) % len(srcs)])).convert("RGB")
                tile = ImageOps.fit(src, (tw, th), Image.Resampling.LANCZOS)
                canvas.paste(tile, ((t % 2) * tw, (t // 2) * th))
            canvas.save(path, "JPEG", quality=92, subsampling=2)
        out.append(path)
    return out


# --------------------------------------------------------------------------- quality


_REF_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def reference(path: Path, width: int, height: int) -> np.ndarray:
    """The source auto-rotated and resized by libvips lanczos3 to exactly ``width`` x
    ``height``, flattened on white, as a float luma array (never encoded)."""
    key = (str(path), width, height)
    if key not in _REF_CACHE:
        img = pyvips.Image.new_from_file(str(path)).autorot()
        if img.interpretation not in ("srgb", "b-w"):
            img = img.colourspace("srgb")
        img = img.resize(width / img.width, vscale=height / img.height, kernel="lanczos3")
        if (img.width, img.height) != (width, height):  # rounding: pad/crop by at most a pixel
            img = img.gravity("centre", width, height, extend="copy")
        if img.hasalpha():
            img = img.flatten(background=[255] * (img.bands - 1))
        img = img.cast("uchar")
        arr = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))
        _REF_CACHE[key] = luma(arr)
    return _REF_CACHE[key]


def luma(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2 or arr.shape[2] == 1:
        return arr.reshape(arr.shape[0], arr.shape[1]).astype(np.float64)
    rgb = arr[:, :, :3].astype(np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def ssim_of(path: Path, encoded: bytes) -> float:
    img = Image.open(io.BytesIO(encoded))
    img.load()
    if img.mode in ("RGBA", "LA", "PA", "P"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    arr = np.asarray(img.convert("RGB"))
    ref = reference(path, img.width, img.height)
    return float(structural_similarity(ref, luma(arr), data_range=255.0))


# --------------------------------------------------------------------------- measuring


def rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def bomb_figures(repeat: int = 50) -> tuple[float, float, int]:
    """(median ms, max ms, peak RSS growth KiB) of rejecting the 100000x100000 PNG bomb."""
    data = BOMB.read_bytes()
    before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = rss_kib()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        try:
            imaging.process(data)
        except imaging.LimitExceeded:
            pass
        else:  # pragma: no cover - would be a serious bug
            raise SystemExit("the bomb was NOT rejected")
        times.append((time.perf_counter() - t) * 1000)
    growth = max(rss_kib() - before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_peak, 0)
    return statistics.median(times), max(times), growth


@dataclass
class Stats:
    wall: float = 0.0
    images: int = 0
    megapixels: float = 0.0
    latencies: list[float] = field(default_factory=list)
    bytes: dict[str, list[int]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)


def job(engine: str, path: Path, data: bytes, s: Settings) -> JobResult:
    info = imaging.probe(data)
    t = time.perf_counter()
    outs = ENGINES[engine](data, s)
    return JobResult(time.perf_counter() - t, info.width * info.height / 1e6, outs)


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def run(args: argparse.Namespace) -> int:
    s = Settings(
        avif_q_ours=Settings.avif_q_ours if args.avif_quality is None else args.avif_quality,
        avif_speed_ours=Settings.avif_speed_ours if args.avif_speed is None else args.avif_speed,
        avif_q_vips=args.vips_avif_q,
        avif_q_pil=args.pil_avif_q,
        uniform_avif=args.avif_quality is not None or args.avif_speed is not None,
    )
    print(f"pyvips {pyvips.__version__} on libvips {pyvips.base.version(0)}.{pyvips.base.version(1)}."
          f"{pyvips.base.version(2)}; Pillow {Image.__version__}; pixelfox core {imaging._core.__version__}; "
          f"{os.cpu_count()} CPUs")
    print(f"settings: {s}; boxes {[b for _, b in BOXES]} px")
    med, worst, growth = bomb_figures()
    print(f"bomb {BOMB.name}: rejected in {med:.3f} ms median, {worst:.3f} ms worst; RSS growth {growth} KiB")

    sets = {
        "corpus": corpus_photos()[: args.corpus],
        "12mp": generated_photos(args.generated),
        "24mp": generated_photos(args.generated_24mp, 6000, 4000),
    }
    datas = {p: p.read_bytes() for paths in sets.values() for p in paths}
    engines = [e for e in ("ours", "pyvips", "pillow") if e in args.engines]
    results: dict[tuple[str, str, int], Stats] = {}
    for set_name, paths in sets.items():
        if not paths:
            continue
        for workers in args.workers:
            for rnd in range(args.rounds):
                order = engines[rnd % len(engines):] + engines[: rnd % len(engines)]
                for engine in order:
                    st = results.setdefault((set_name, engine, workers), Stats())
                    t = time.perf_counter()
                    with ThreadPoolExecutor(workers) as pool:
                        done = list(pool.map(lambda p, e=engine: (p, job(e, p, datas[p], s)), paths))
                    st.wall += time.perf_counter() - t
                    for path, r in done:
                        st.images += 1
                        st.megapixels += r.megapixels
                        st.latencies.append(r.seconds)
                        if workers == args.workers[0] and rnd == 0:
                            for key, enc in r.outputs.items():
                                st.bytes.setdefault(key, []).append(len(enc))
                                st.ssim.setdefault(key, []).append(ssim_of(path, enc))
    report(results, engines, args.workers, sets)
    return 0


def report(results: dict[tuple[str, str, int], Stats], engines: list[str], workers: list[int],
           sets: dict[str, list[Path]]) -> None:
    for set_name, paths in sets.items():
        if not paths:
            continue
        print(f"\n## {set_name}: {len(paths)} images")
        print(f"{'engine':8} {'workers':>7} {'img/s':>7} {'MP/s':>7} {'p50 s':>7} {'p95 s':>7}")
        for w in workers:
            for e in engines:
                st = results[(set_name, e, w)]
                print(f"{e:8} {w:>7} {st.images / st.wall:7.2f} {st.megapixels / st.wall:7.1f} "
                      f"{pct(st.latencies, 0.5):7.3f} {pct(st.latencies, 0.95):7.3f}")
            base = results[(set_name, "ours", w)] if "ours" in engines else None
            for other in ("pyvips", "pillow"):
                if base and other in engines:
                    o = results[(set_name, other, w)]
                    ratio = (base.images / base.wall) / (o.images / o.wall)
                    print(f"  throughput ours/{other} ({w} workers): {ratio:.2f}x")
        w0 = workers[0]
        print(f"\n{'variant':14} " + " ".join(f"{e + ' KiB':>11} {e + ' SSIM':>11}" for e in engines)
              + ("  bytes ours/pyvips  SSIM ours-pyvips" if {"ours", "pyvips"} <= set(engines) else ""))
        keys = list(results[(set_name, engines[0], w0)].bytes)
        for key in keys:
            cells, mean_b, mean_s = [], {}, {}
            for e in engines:
                st = results[(set_name, e, w0)]
                mean_b[e] = statistics.mean(st.bytes[key]) / 1024
                mean_s[e] = statistics.mean(st.ssim[key])
                cells.append(f"{mean_b[e]:11.1f} {mean_s[e]:11.4f}")
            extra = ""
            if {"ours", "pyvips"} <= set(engines):
                extra = f"  {mean_b['ours'] / mean_b['pyvips']:17.3f}  {mean_s['ours'] - mean_s['pyvips']:+18.4f}"
            print(f"{key:14} " + " ".join(cells) + extra)


def sweep(args: argparse.Namespace) -> int:
    """Our AVIF settings table: for each (AVIF speed, quality) the mean AVIF bytes and SSIM per
    box and the time of the whole job, over the generated 12 MP photos (1 worker)."""
    paths = generated_photos(args.generated)
    datas = {p: p.read_bytes() for p in paths}
    print(f"AVIF sweep over {len(paths)} generated 12 MP photos (ours; WebP q80 m4 in every job)")
    heads = " ".join(f"{n + ' KiB':>11} {n + ' SSIM':>11}" for n, _ in BOXES)
    print(f"{'speed':>5} {'quality':>7} {'s/img':>6} {heads}")
    for speed in args.sweep_speeds:
        for quality in args.sweep_qualities:
            s = Settings(avif_q_ours=quality, avif_speed_ours=speed, uniform_avif=True)
            times: list[float] = []
            by: dict[str, list[tuple[int, float]]] = {}
            for p in paths:
                r = job("ours", p, datas[p], s)
                times.append(r.seconds)
                for name, _ in BOXES:
                    enc = r.outputs[f"{name}.avif"]
                    by.setdefault(name, []).append((len(enc), ssim_of(p, enc)))
            cells = " ".join(
                f"{statistics.mean(b for b, _ in by[n]) / 1024:11.1f} {statistics.mean(q for _, q in by[n]):11.4f}"
                for n, _ in BOXES
            )
            print(f"{speed:>5} {quality:>7g} {statistics.mean(times):6.2f} {cells}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", nargs="+", default=["ours", "pyvips", "pillow"], choices=list(ENGINES))
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds per engine and worker count")
    ap.add_argument("--generated", type=int, default=3, help="how many generated 12 MP photos")
    ap.add_argument("--boxes", nargs="+", type=int, default=[b for _, b in BOXES],
                    help="square boxes in px (default: the recipe's 2048 1024 200)")
    ap.add_argument("--generated-24mp", type=int, default=2,
                    help="how many generated 24 MP (6000x4000) photos: JPEG shrink-on-load at the 2048 px box")
    ap.add_argument("--corpus", type=int, default=100, help="use at most this many corpus photos")
    ap.add_argument("--avif-quality", type=float, default=None, help="our AVIF quality (default: recipe's)")
    ap.add_argument("--avif-speed", type=int, default=None, help="our AVIF speed, every box (default: per box)")
    ap.add_argument("--vips-avif-q", type=int, default=Settings.avif_q_vips)
    ap.add_argument("--pil-avif-q", type=int, default=Settings.avif_q_pil)
    ap.add_argument("--sweep", action="store_true", help="only our AVIF speed x quality table")
    ap.add_argument("--sweep-speeds", nargs="+", type=int, default=[6, 8, 10])
    ap.add_argument("--sweep-qualities", nargs="+", type=float, default=[50, 60, 70])
    args = ap.parse_args()
    set_boxes(args.boxes)
    return sweep(args) if args.sweep else run(args)


if __name__ == "__main__":
    sys.exit(main())
