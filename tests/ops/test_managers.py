"""Two managers against one database and one Redis; one of them is frozen, then one is killed mid-load.

Nodes and clients get both addresses (``PIXELFOX_CLUSTER__MANAGER=a,b``) and use both
(round-robin); after ``kill -9`` of one manager, every upload started before, during and
after the kill ends ``ready`` exactly once: nothing is lost (jobs the dead manager had
dispatched are taken over by the other after the queue lease, here 6 s).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.leases import lease_key
from tests.e2e.uploadkit import auth, tus_patch, web_ready
from tests.ops.conftest import admin_key, start_cluster, status, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_managers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("managers")
    local = start_cluster(root, Counts(upload=2, proc=2, storage=2, web=0, managers=2), {
        "PIXELFOX_LEASE_S": "6", "PIXELFOX_NODE_TIMEOUT_S": "3", "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def frozen_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two managers, one processing node, default heartbeat interval (1 s): a node whose heartbeats alternate
    between a live and a frozen manager goes 5 s without an answer, more than its 3 s window."""
    local = start_cluster(tmp_path_factory.mktemp("frozen"), Counts(upload=2, proc=1, storage=1, web=1, managers=2))
    try:
        yield local
    finally:
        local.stop()


def work_stream_holder(local: LocalCluster) -> str:
    """The manager that logged proc1's Work stream last (its log line "processing node proc1 connected")."""
    last = {}
    for name in ("manager1", "manager2"):
        lines = [ln for ln in (local.state / "logs" / f"{name}.log").read_text().splitlines()
                 if "processing node proc1 connected" in ln]
        last[name] = lines[-1][:23] if lines else ""
    return max(last, key=lambda k: last[k])


def photos(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` distinct small PNG photos (random blocks), so no two share a content hash."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        im = Image.new("RGB", (320, 240))
        for _ in range(40):
            x, y = rnd.randrange(300), rnd.randrange(220)
            im.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)), (x, y, x + 40, y + 30))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        p = folder / f"p{seed}_{i}.png"
        p.write_bytes(buf.getvalue())
        out.append(p)
    return out


def put(root: Path, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", "--timeout", "120",
                             *map(str, files)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def results(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = proc.communicate(timeout=300)
    return [json.loads(line) for line in out.splitlines() if line.strip()] or [{"stderr": err}]


def heartbeats(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == "Heartbeat")


def api_me(local: LocalCluster) -> int:
    """``GET /api/v1/me`` on the web node with the admin's API key (a ``WhoAmI`` call to a manager each
    time); the status code, or 599 when no answer came within 15 s."""
    req = urllib.request.Request(f"{local.web_urls[0]}/api/v1/me",
                                 headers={"Authorization": f"Bearer {admin_key(local)}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except TimeoutError:
        return 599


def uploads_ready(root: Path) -> bool:
    rows = status(root)
    return all(v.get("ready") and v["health"] == "healthy" for v in rows.values() if v["role"] == "upload")


def test_a_frozen_manager_leaves_upload_nodes_ready(frozen_pair: LocalCluster, tmp_path: Path) -> None:
    """SIGSTOP keeps the frozen manager's sockets open (the kernel still accepts connections), so calls sent
    to it wait for their deadline: nodes must leave it out and go on through the other manager. The frozen
    one is the manager holding the processing node's Work stream, so the job must move too."""
    local = frozen_pair
    holder = work_stream_holder(local)
    frozen = local.child(holder).proc.pid
    assert [api_me(local) for _ in range(6)] == [200] * 6  # the web node's connections to both managers are up
    os.kill(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # the web node's calls go to the live manager once a heartbeat to the frozen one timed out (3 s): its
        # shared channel handed every other call to the frozen one, held for the 10 s deadline, until gRPC's
        # keepalive (a ping every 10 s, 5 s to answer) closed that connection
        time.sleep(4.5)
        me = []  # (seconds since the freeze, the web node's answer to a call that needs a manager, its seconds)
        while time.monotonic() - stopped < 8:
            t0 = time.monotonic()
            me.append((round(t0 - stopped, 1), api_me(local), round(time.monotonic() - t0, 2)))
        assert len(me) >= 6 and all(code == 200 and took < 2 for _t, code, took in me), me
        samples = []  # (seconds since the freeze, both upload nodes ready and healthy)
        while time.monotonic() - stopped < 15:
            samples.append((round(time.monotonic() - stopped, 1), uploads_ready(local.root)))
            time.sleep(0.3)
        # a heartbeat to the frozen manager times out after 3 s; from 6 s on the upload nodes are ready throughout
        assert all(ok for t, ok in samples if t > 6), samples
        start = time.monotonic()
        done = results(put(local.root, photos(tmp_path, 1, seed=3)))
        took = time.monotonic() - start
        assert [d.get("status") for d in done] == ["ready"], done
        assert took < 20, took  # it took over 60 s when the upload or the job was held by the frozen manager
    finally:
        os.kill(frozen, signal.SIGCONT)
    wait_for(lambda: status(local.root)[holder]["health"] == "healthy", timeout_s=30)
    print(json.dumps({"metric": "put_with_frozen_manager_s", "value": round(took, 1), "frozen": holder,
                      "unready_samples": sum(not ok for _t, ok in samples), "samples": len(samples)}))


def test_uploads_in_flight_when_a_manager_freezes_complete_through_the_other(
    frozen_pair: LocalCluster, tmp_path: Path
) -> None:
    """An upload node asks the managers in turn (PlaceObject, then CompleteUpload once the original is
    stored); a call sent to a manager that froze meanwhile waited its whole deadline (30.9 s for an
    upload in flight when a tester froze one of two managers). It is now asked again of the other manager
    once the frozen one misses a heartbeat (3 s here)."""
    local = frozen_pair
    wait_for(lambda: all(v["health"] == "healthy" for v in status(local.root).values()), timeout_s=30)
    key = admin_key(local)
    files = photos(tmp_path, 6, seed=21)
    ups = []
    for p in files:
        r = requests.post(f"{local.web_urls[0]}/api/v1/uploads", headers=auth(key), timeout=15,
                          json={"filename": p.name, "size": p.stat().st_size, "content_type": "image/png"})
        assert r.status_code == 201, r.text
        ups.append(r.json())

    def send(up: dict[str, str], path: Path) -> tuple[int, float, str]:
        t0 = time.monotonic()
        r = tus_patch(up, path.read_bytes())
        return r.status_code, round(time.monotonic() - t0, 1), r.headers.get("Pixelfox-Image-Slug", r.text)

    frozen = local.child("manager2")
    os.kill(frozen.proc.pid, signal.SIGSTOP)  # each upload node's next calls go to both managers in turn
    try:
        with ThreadPoolExecutor(len(ups)) as pool:
            sent = list(pool.map(send, ups, files))
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    assert [code for code, _t, _s in sent] == [204] * len(ups), sent
    # the frozen manager is left out within one heartbeat deadline (3 s) after the interval (1 s); each
    # upload then takes well under a second. A call held for its deadline takes 10 s (PlaceObject) or 30 s
    assert max(t for _c, t, _s in sent) < 9, sent
    logs = "".join((local.state / "logs" / f"upload{i}.log").read_text() for i in (1, 2))
    assert "stopped answering heartbeats during" in logs  # at least one call did meet the frozen manager
    for _c, _t, slug in sent:
        assert web_ready(local, key, slug)["width"] == 320
    print(json.dumps({"metric": "tus_upload_with_a_manager_freezing_s", "value": max(t for _c, t, _s in sent)}))


def test_web_reads_in_flight_when_a_manager_freezes_answer_through_the_other(frozen_pair: LocalCluster) -> None:
    """A web node sends its calls to the managers in turn; a read already on its way to a manager that froze
    waited out its whole deadline (10 s) and the page got a 504. A read is now asked again of the other
    manager once the frozen one misses a heartbeat (about 4 s here: interval 1 s, then 3 s without an answer)."""
    local = frozen_pair
    wait_for(lambda: all(v["health"] == "healthy" for v in status(local.root).values()), timeout_s=30)
    assert [api_me(local) for _ in range(6)] == [200] * 6  # the web node's links to both managers are live

    def timed(_: int) -> tuple[int, float]:
        t0 = time.monotonic()
        return api_me(local), round(time.monotonic() - t0, 1)

    frozen = local.child("manager1")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(timed, range(8)))  # about half of them go to the frozen manager
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    assert [code for code, _t in answers] == [200] * 8, answers
    assert max(t for _c, t in answers) < 8, answers  # one held for its deadline takes 10 s and is a 504
    logs = (local.state / "logs" / "web1.log").read_text()
    assert "stopped answering heartbeats during WhoAmI" in logs  # at least one read did meet the frozen manager
    wait_for(lambda: status(local.root)["manager1"]["health"] == "healthy", timeout_s=30)
    print(json.dumps({"metric": "web_read_with_a_manager_freezing_s", "value": max(t for _c, t in answers)}))


def test_both_managers_serve_and_killing_one_loses_nothing(two_managers: LocalCluster, tmp_path: Path) -> None:
    local = two_managers
    rows = status(local.root)
    managers = {k: v for k, v in rows.items() if v["role"] == "manager"}
    assert set(managers) == {"manager1", "manager2"}
    assert all(m["health"] == "healthy" for m in managers.values())
    # nodes spread their calls over both managers
    assert all(heartbeats(str(m["metrics_url"])) > 0 for m in managers.values())
    # run-once work: exactly one manager holds the registry-sweep lease
    r = redis.Redis.from_url(local.redis_url)
    holder = (r.get(lease_key("registry-sweep")) or b"").decode()
    r.close()
    assert holder.split(":")[0] in managers, holder

    before = put(local.root, photos(tmp_path, 6, seed=1))
    time.sleep(1.5)  # uploads and jobs in flight on both managers
    local.child("manager1").proc.kill()
    killed = time.monotonic()
    after = put(local.root, photos(tmp_path, 6, seed=2))
    done = results(before) + results(after)
    elapsed = time.monotonic() - killed
    assert len(done) == 12, done
    bad = [(d.get("file"), d.get("status"), d.get("error")) for d in done if d.get("status") != "ready"]
    assert not bad, bad
    assert len({d["id"] for d in done}) == 12  # one image per upload, none twice

    deadline = time.monotonic() + 20  # the dead manager turns unhealthy once its heartbeat is older than the timeout
    rows = status(local.root)
    while rows["manager1"]["health"] != "unhealthy" and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = status(local.root)
    assert rows["manager1"]["health"] == "unhealthy" and rows["manager2"]["health"] == "healthy"
    assert all(v["health"] == "healthy" for k, v in rows.items() if k != "manager1")
    print(json.dumps({"metric": "uploads_ready_after_manager_kill_s", "value": round(elapsed, 1), "uploads": 12}))
