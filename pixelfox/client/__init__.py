"""Client library shared by the CLI and the web node: uploads over gRPC, image JSON."""
