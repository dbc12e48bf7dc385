"""Generated gRPC stubs for package pixelfox.v1 (scripts/gen_proto.py; do not edit)."""
