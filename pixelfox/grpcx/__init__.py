"""gRPC plumbing shared by every node: server bootstrap, the one servicer wrapper, client channels."""
