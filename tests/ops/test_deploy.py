"""The deployment files in ``deploy/``: Prometheus rules (promtool), nginx config (``nginx -t``), the
compose file and Kubernetes manifests (shape, probes), and the gRPC health probe command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian package `prometheus`, in scripts/install DEB_PACKAGES)")
    return exe


def test_alert_rules_check_and_unit_tests() -> None:
    exe = promtool()
    d = DEPLOY / "prometheus"
    res = subprocess.run([exe, "check", "rules", "alerts.yml"], cwd=d, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
    res = subprocess.run([exe, "test", "rules", "alerts_test.yml"], cwd=d, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([exe, "check", "config", "prometheus.yml"], cwd=d, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_names_cover_the_issue() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"PixelfoxNodeDown", "PixelfoxStorageUnavailable", "PixelfoxSessionStoreUnreachable",
            "PixelfoxQueueBacklog", "PixelfoxHighCpu", "PixelfoxHighMemory"} <= names


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOSTS = re.compile(r"\b(web\d|storage\d|manager\d|upload\d|proc\d)(?=:\d)")


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (Debian: apt-get install nginx-light)")
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    directives = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())  # comments removed
    assert "ip_hash" not in directives and "sticky" not in directives and "hash " not in directives
    assert conf.count("server web") == 3
    # compose service names only resolve inside compose: map them to loopback for `nginx -t`
    local = HOSTS.sub("127.0.0.1", conf)
    local = local.replace("listen 80;", "listen 127.0.0.1:18080;").replace("listen 8081;", "listen 127.0.0.1:18081;")
    assert "/var/cache/nginx/pixelfox " in local and "proxy_cache pixelfox_objects;" in local  # image origin caches
    local = local.replace("/var/cache/nginx/pixelfox ", f"{tmp_path}/cache ")
    assert "include page-cache.conf;" in local  # resolved next to nginx.conf, as compose mounts it
    local = local.replace("/var/cache/nginx/pages ", f"{tmp_path}/pages ")
    shutil.copy(DEPLOY / "nginx" / "page-cache.conf", tmp_path / "page-cache.conf")
    (tmp_path / "nginx.conf").write_text(local)
    res = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                          "-g", f"pid {tmp_path}/nginx.pid;"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "syntax is ok" in res.stderr and "test is successful" in res.stderr


def test_compose_file_shape() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    roles = {"web": 3, "upload": 2, "proc": 2, "storage": 2, "manager": 2}
    for role, n in roles.items():
        names = sorted(s for s in services if re.fullmatch(rf"{role}\d", s))
        assert len(names) == n, (role, names)
        ids = {services[s]["environment"]["PIXELFOX_NODE_ID"] for s in names}
        assert ids == set(names), f"{role}: node ids must be unique per instance"
        for s in names:
            env = services[s]["environment"]
            assert env["PIXELFOX_CLUSTER__MANAGER"] == "manager1:7070,manager2:7070"
            assert "PIXELFOX_CLUSTER__SECRET" in env and env["PIXELFOX_METRICS_PORT"] == "9100"
            assert "healthcheck" in services[s], s
    for infra in ("redis", "postgres", "seaweedfs", "nginx", "prometheus"):
        assert infra in services
    assert services["manager1"]["environment"]["PIXELFOX_DATABASE__URL"].startswith("postgresql+asyncpg://")
    assert services["storage2"]["environment"]["PIXELFOX_BACKEND"] == "s3"
    upload_vols = {tuple(services[s]["volumes"]) for s in ("upload1", "upload2")}
    assert len(upload_vols) == 1, "upload nodes must share the staging volume"
    assert services["manager1"]["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "pixelfox.grpcx.probe"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                  check=False).returncode == 0:
        env = {**os.environ, "PIXELFOX_CLUSTER_SECRET": "x", "PIXELFOX_DB_PASSWORD": "x", "PIXELFOX_S3_SECRET": "x"}
        res = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                             capture_output=True, text=True, env=env, check=False)
        assert res.returncode == 0, res.stderr


def test_kubernetes_manifests_have_probes() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pixelfox.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "storage") in kinds and ("Service", "pixelfox-web") in kinds
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {d["metadata"]["name"] for d in workloads} == {
        "pixelfox-manager", "pixelfox-upload", "pixelfox-proc", "storage", "pixelfox-web"}
    for d in workloads:
        assert d["apiVersion"] == "apps/v1" and d["spec"]["selector"]["matchLabels"].items() <= \
            d["spec"]["template"]["metadata"]["labels"].items()
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, (d["metadata"]["name"], c["name"])
            if c["name"] != "web":
                assert "grpc" in c["readinessProbe"], c["name"]  # gRPC health: dependencies + draining
    web = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "pixelfox-web")
    assert web["spec"]["sessionAffinity"] == "None"



def test_kubernetes_share_links_and_image_urls_lead_somewhere() -> None:
    """The managers had no PIXELFOX_SITE_URL (share links named one web pod), and each storage pod's
    public URL (img.example.com/<pod>) was routed by nothing."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pixelfox.yaml").read_text()) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    manager = by_name[("Deployment", "pixelfox-manager")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PIXELFOX_SITE_URL", "value": "https://pixelfox.example.com"} in manager["env"]
    storage = by_name[("StatefulSet", "storage")]
    env = {e["name"]: e.get("value") for e in storage["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PIXELFOX_HTTP__PUBLIC_URL"] == "https://img.example.com/$(POD_NAME)"
    rule, = by_name[("Ingress", "pixelfox-images")]["spec"]["rules"]
    assert rule["host"] == "img.example.com"
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    pods = [f"storage-{i}" for i in range(storage["spec"]["replicas"])]
    assert routes == {f"/{pod}(/|$)(.*)": pod for pod in pods}
    for pod in pods:  # each Service selects that one pod of the StatefulSet, on its HTTP port
        svc = by_name[("Service", pod)]["spec"]
        assert svc["selector"]["statefulset.kubernetes.io/pod-name"] == pod and svc["ports"][0]["port"] == 8000


def test_probe_command_against_a_real_server() -> None:
    import asyncio

    from pixelfox.grpcx.server import GrpcServer

    async def scenario() -> tuple[int, int, tuple[int, str], int]:
        server = GrpcServer([], host="127.0.0.1", port=0, secret="s")
        await server.start()
        addr = f"127.0.0.1:{server.port}"

        def run() -> int:
            return subprocess.run([sys.executable, "-m", "pixelfox.grpcx.probe", addr], capture_output=True,
                                  check=False).returncode

        def unknown() -> tuple[int, str]:
            # a misspelt service reached the server: "not serving" (1), not "unreachable" (2, as before)
            res = subprocess.run([sys.executable, "-m", "pixelfox.grpcx.probe", addr, "pixelfox.v1.NoSuch"],
                                 capture_output=True, text=True, check=False)
            return res.returncode, res.stdout

        await server.set_serving(False)  # what run_node shows while dependencies are down or draining
        not_serving = await asyncio.to_thread(run)
        await server.set_serving(True)
        serving = await asyncio.to_thread(run)
        no_such = await asyncio.to_thread(unknown)
        await server.stop(0)
        gone = await asyncio.to_thread(run)
        return not_serving, serving, no_such, gone

    not_serving, serving, (no_such, said), gone = asyncio.run(scenario())
    assert (not_serving, serving, no_such, gone) == (1, 0, 1, 2)
    assert said.endswith(" pixelfox.v1.NoSuch: SERVICE_UNKNOWN (the server has no such service)\n"), said


def _dockerfile_stages() -> list[str]:
    """deploy/Dockerfile's stages (the text from one FROM to the next), comments removed."""
    text = "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "Dockerfile").read_text().splitlines())
    return re.split(r"^FROM ", text, flags=re.M)[1:]


def test_the_image_build_installs_what_scripts_install_does() -> None:
    """Docker is not run here: the build stage installed nasm, liblcms2-dev and pkg-config only (no
    cmake: libaom's build fails), never ran `npm ci` (the upload page's tus.min.js missing), and
    without a .dockerignore `COPY . .` sent .venv, core_rs/target and .pixelfox/ (the cluster secret,
    the admin password, the database) to the builder."""
    install = (DEPLOY.parent / "scripts" / "install").read_text()
    build_debs = re.search(r"^BUILD_DEBS=\(([^)]*)\)", install, re.M)
    assert build_debs is not None
    wanted = set(build_debs.group(1).split())
    assert {"cmake", "nasm", "meson", "ninja-build", "liblcms2-dev", "pkg-config"} <= wanted
    build, runtime = _dockerfile_stages()
    apt = re.search(r"apt-get install -y --no-install-recommends([^&]*)&&", build.replace("\\\n", " "))
    assert apt is not None
    installed = set(apt.group(1).split())
    assert wanted | {"npm"} <= installed, wanted - installed
    assert "npm ci --prefix web" in build and "npm ci --prefix web" in install
    assert "/src/web/node_modules/tus-js-client/dist" in runtime  # served from next to the installed web package
    ignored = {line.strip() for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "core_rs/target", ".pixelfox", "web/node_modules"} <= ignored
