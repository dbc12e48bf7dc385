"""Upload benchmark (issue 4): single-stream gRPC and tus against two ceilings, then 500 concurrent uploads.

Run: ``.venv/bin/python bench/upload.py [--sizes 20,200] [--repeat 3] [--concurrent 500] [--photo-mib 2]``.
It starts its own local cluster in a temp folder (2 upload nodes, 1 storage node, no
processing node so image processing does not steal the CPU from the uploads being
measured), generates uncompressed PNGs of the wanted sizes, and prints:

* ceilings measured in the same run: an asyncio TCP socket copy on loopback with the same
  256 KiB chunk size (a reader that discards), iperf3 (Debian ``apt-get install iperf3``;
  "n/a" when missing), and a bare grpc-python client stream of the same chunks to a server
  process that only counts them (what the gRPC framework alone reaches here);
* ``--repeat`` uploads of each size over gRPC (``pixelfox.client.uploader.upload_file``:
  CRC32C per chunk, SHA-256, probe, verify, store) and over tus (one streamed PATCH), after one
  1 MiB warm-up upload per transport (the first upload of a fresh cluster also pays for its
  connections), with the median and best MiB/s, the median's ratio to the asyncio ceiling
  (goals: gRPC ≥ 0.45x, tus ≥ 0.7x) and to the bare gRPC stream, plus the upload node's own
  split of the time after the last byte (medians of its ``pixelfox_upload_step_seconds``:
  verify, store on the storage node, complete);
* N concurrent uploads of ~``photo-mib`` MiB photos over gRPC: completed count, p50/p99
  seconds, and each upload node's peak RSS during that phase (``VmHWM`` after resetting it
  through ``/proc/<pid>/clear_refs``; goal < 256 MB).

Benches are not run in CI. Figures of a run go in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.grpcx.server import server_options
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc

CHUNK = 256 * 1024
MIB = 1024 * 1024


def make_png(path: Path, mib: float, seed: int = 0) -> None:
    """An uncompressed RGB PNG of about ``mib`` MiB (a gradient with a random corner)."""
    side = int((mib * MIB / 3) ** 0.5)
    im = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    im.paste(Image.frombytes("RGB", (16, 16), os.urandom(768) if seed else bytes(768)), (0, 0))
    im.save(path, compress_level=0)


async def socket_ceiling(nbytes: int) -> float:
    """MiB/s of an asyncio TCP copy of ``nbytes`` over loopback in CHUNK writes (reader discards)."""
    done = asyncio.Event()
    got = 0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal got
        while data := await r.read(CHUNK):
            got += len(data)
        w.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    buf = os.urandom(CHUNK)
    start = time.perf_counter()
    _, w = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while sent < nbytes:
        w.write(buf)
        await w.drain()
        sent += CHUNK
    w.close()
    await done.wait()
    elapsed = time.perf_counter() - start
    server.close()
    return got / MIB / elapsed


class _Sink(upload_pb2_grpc.UploadServiceServicer):
    """An Upload service that only counts the chunk bytes it is sent."""

    async def Upload(self, stream, context):  # type: ignore[no-untyped-def]
        n = 0
        async for m in stream:
            n += len(m.chunk.data)
        return upload_pb2.UploadReceipt(size=n)


def _serve_sink(port: int) -> None:
    async def serve() -> None:
        server = grpc.aio.server(options=server_options(64 * MIB))
        upload_pb2_grpc.add_UploadServiceServicer_to_server(_Sink(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


async def grpc_ceiling(nbytes: int) -> float:
    """MiB/s of a bare grpc-python client stream of ``nbytes`` in CHUNK messages to another process."""
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_serve_sink, args=(port,), daemon=True)
    proc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", 64 * MIB), ("grpc.use_local_subchannel_pool", 1)]) as ch:
            await asyncio.wait_for(ch.channel_ready(), 30)
            stub = upload_pb2_grpc.UploadServiceStub(ch)
            buf = os.urandom(CHUNK)
            best = 0.0
            for _ in range(3):
                def messages():  # type: ignore[no-untyped-def]
                    for i in range(nbytes // CHUNK):
                        yield upload_pb2.UploadRequest(chunk=upload_pb2.UploadChunk(offset=i * CHUNK, data=buf))
                start = time.perf_counter()
                await stub.Upload(messages(), timeout=300)
                best = max(best, nbytes / MIB / (time.perf_counter() - start))
            return best
    finally:
        proc.kill()
        proc.join()


def step_seconds(local: LocalCluster) -> dict[str, float]:
    """Summed ``pixelfox_upload_step_seconds`` per step over every upload node."""
    out: dict[str, float] = {}
    for c in local.children:
        if not c.name.startswith("upload"):
            continue
        text = requests.get(local.metrics_url(c.name), timeout=10).text
        for step, value in re.findall(r'^pixelfox_upload_step_seconds_sum\{step="(\w+)"\} (\S+)$', text, re.M):
            out[step] = out.get(step, 0.0) + float(value)
    return out


STEPS = ("verify", "store", "complete")


def split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds per step between two :func:`step_seconds` readings."""
    return {k: after[k] - before.get(k, 0.0) for k in STEPS if k in after}


def iperf3_ceiling() -> float | None:
    """MiB/s of a 3 s iperf3 TCP test on loopback, None when iperf3 is not installed."""
    exe = shutil.which("iperf3")
    if exe is None:
        return None
    port = free_port()
    server = subprocess.Popen([exe, "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run([exe, "-c", "127.0.0.1", "-p", str(port), "-t", "3", "-J"], capture_output=True,
                             text=True, check=True, timeout=30)
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]) / 8 / MIB
    finally:
        server.kill()
        server.wait()


async def grpc_upload(local: LocalCluster, key: str, path: Path) -> float:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        start = time.perf_counter()
        await upload_file(stub, api_key_metadata(key), path)
        return time.perf_counter() - start


async def tus_upload(local: LocalCluster, key: str, path: Path) -> float:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        t = await stub.CreateUpload(manager_pb2.CreateUploadRequest(filename=path.name, size=path.stat().st_size),
                                    metadata=api_key_metadata(key))

    def patch() -> float:
        start = time.perf_counter()
        with path.open("rb") as f:
            r = requests.patch(t.upload_url, data=f, timeout=600, headers={
                "Authorization": f"Bearer {t.ticket}", "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"})
        if r.status_code != 204:
            raise RuntimeError(f"tus PATCH answered {r.status_code}: {r.text[:200]}")
        return time.perf_counter() - start

    return await asyncio.to_thread(patch)


def upload_pids(local: LocalCluster) -> dict[str, int]:
    return {c.name: c.proc.pid for c in local.children if c.name.startswith("upload")}


def reset_peak_rss(pids: dict[str, int]) -> None:
    for pid in pids.values():
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def concurrent(local: LocalCluster, key: str, photos: list[Path], n: int) -> tuple[int, list[float], int]:
    """``n`` clients at once, each with its own connection to the manager (as separate people would)."""
    times: list[float] = []
    failures: list[str] = []
    address = local.manager_address.split(",")[0]

    async def one(i: int) -> None:
        async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            start = time.perf_counter()
            try:
                await upload_file(stub, api_key_metadata(key), photos[i % len(photos)], timeout_s=900,
                                  max_stall_s=300)
                times.append(time.perf_counter() - start)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(n)))
    if failures:
        print(f"  first failures: {failures[:3]}")
    return len(times), times, len(failures)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else (values or [0.0])[0]


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="pixelfox-bench-"))
    sizes = [float(s) for s in args.sizes.split(",") if s]
    env = {"PIXELFOX_LIMITS__MAX_UPLOAD_BYTES": str(int(max([*sizes, 1]) * 1.2 * MIB) + MIB),
           "PIXELFOX_LIMITS__USER_OPEN_UPLOADS": "0", "PIXELFOX_LIMITS__USER_UPLOADS_PER_MINUTE": "0",
           "PIXELFOX_LIMITS__IP_UPLOADS_PER_MINUTE": "0",
           "PIXELFOX_LOG__LEVEL": "WARNING"}
    local = LocalCluster(root, Counts(upload=2, proc=0, storage=1, web=0), extra_env=env)
    try:
        local.start()
        await local.wait_ready(120)
        key = await local.ensure_admin()
        print(f"cluster in {root}; cpus={os.cpu_count()}")
        ceiling = max([await socket_ceiling(256 * MIB) for _ in range(3)])
        print(f"asyncio TCP copy ceiling (256 KiB chunks, best of 3 x 256 MiB): {ceiling:.1f} MiB/s")
        bare = await grpc_ceiling(256 * MIB)
        print(f"bare grpc-python stream (256 KiB messages, best of 3 x 256 MiB): {bare:.1f} MiB/s "
              f"({bare / ceiling:.2f}x the asyncio copy)")
        print(f"size | transport median MiB/s (x asyncio copy, x bare gRPC), best MiB/s, median seconds [after the "
              f"last byte: verify, store, complete seconds, medians] over {args.repeat} uploads")
        uploads = {"gRPC": grpc_upload, "tus": tus_upload}
        warm = root / "warm-up.png"
        for n, upload in enumerate(uploads.values()):
            make_png(warm, 1, seed=1000 + n)
            await upload(local, key, warm)
        for mib in sizes:
            path = root / f"file{int(mib)}.png"
            for t, (transport, upload) in enumerate(uploads.items()):
                took, steps = [], []
                for i in range(args.repeat):
                    make_png(path, mib, seed=1 + t + 2 * i)  # new bytes each time: no dedup shortcut
                    before = step_seconds(local)
                    took.append(await upload(local, key, path))
                    steps.append(split(before, step_seconds(local)))
                size_mib = path.stat().st_size / MIB
                rate, best = size_mib / statistics.median(took), size_mib / min(took)
                after = " ".join(f"{k} {statistics.median(s.get(k, 0.0) for s in steps):.2f}" for k in STEPS)
                print(f"{size_mib:7.1f} MiB | {transport:4} {rate:7.1f} MiB/s ({rate / ceiling:.2f}x, "
                      f"{rate / bare:.2f}x), best {best:7.1f} MiB/s, {statistics.median(took):6.2f} s [{after}]")
        ip = iperf3_ceiling()
        print(f"iperf3 loopback: {ip:.1f} MiB/s" if ip else "iperf3 loopback: n/a (apt-get install iperf3)")
        if args.concurrent:
            photos = []
            for i in range(20):
                p = root / f"photo{i}.png"
                make_png(p, args.photo_mib, seed=i + 10)
                photos.append(p)
            pids = upload_pids(local)
            reset_peak_rss(pids)
            start = time.perf_counter()
            ok, times, failed = await concurrent(local, key, photos, args.concurrent)
            wall = time.perf_counter() - start
            rss = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            print(f"{args.concurrent} concurrent {photos[0].stat().st_size / MIB:.1f} MiB uploads: {ok} completed, "
                  f"{failed} failed in {wall:.1f} s; p50 {pct(times, 50):.2f} s, p99 {pct(times, 99):.2f} s; "
                  "peak RSS " + ", ".join(f"{n} {v:.0f} MB" for n, v in sorted(rss.items())))
    finally:
        local.stop()
        if args.keep:
            print(f"kept {root} (logs in .pixelfox/logs)")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20,200", help="single-upload sizes in MiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per size and transport (median and best)")
    parser.add_argument("--concurrent", type=int, default=500, help="concurrent uploads (0 skips)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster folder (logs) afterwards")
    parser.add_argument("--photo-mib", type=float, default=2.0, help="size of each concurrent upload in MiB")
    asyncio.run(main(parser.parse_args()))
