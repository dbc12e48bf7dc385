"""The processing node: turns originals into variants with the Rust core."""
