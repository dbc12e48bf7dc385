#!/usr/bin/env python3
"""Generate the committed Python gRPC stubs in ``pixelfox/v1/`` from ``proto/``.

Usage::

    python scripts/gen_proto.py          # regenerate in place
    python scripts/gen_proto.py --check  # regenerate into a temp dir, exit 1 on any difference

The generated files are committed (see STYLE.md "proto/ and generated code"); CI runs
``--check`` so a proto edit without regeneration fails. Needs grpcio-tools and mypy-protobuf.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("pixelfox") / "v1"
INIT_TEXT = '"""Generated gRPC stubs for package pixelfox.v1 (scripts/gen_proto.py; do not edit)."""\n'


def generate(out_dir: Path) -> list[Path]:
    """Run protoc for every ``proto/pixelfox/v1/*.proto`` into ``out_dir``; return the files written."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under proto/pixelfox/v1")
    (out_dir / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy-protobuf plugins on PATH: put this interpreter's bin dir first.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_dir / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    return sorted((out_dir / PACKAGE_DIR).iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs differ")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target = ROOT / PACKAGE_DIR
        names = {p.name for p in fresh}
        if opts.check:
            existing = {p.name for p in target.glob("*") if p.is_file()}
            stale = sorted(existing ^ names)
            changed = [p.name for p in fresh if p.name in existing and not filecmp.cmp(p, target / p.name, False)]
            if stale or changed:
                print(f"generated stubs are out of date: {sorted(set(stale) | set(changed))}", file=sys.stderr)
                print("run: python scripts/gen_proto.py", file=sys.stderr)
                return 1
            print(f"stubs up to date ({len(names)} files)")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*"):
            if old.is_file() and old.name not in names:
                old.unlink()
        for p in fresh:
            shutil.copyfile(p, target / p.name)
        print(f"wrote {len(fresh)} files to {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
