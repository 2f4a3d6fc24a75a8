"""The library's public entry points (build, parse), shared by the CLI and other programs."""
