"""Deterministic tar layers: writing (with OCI whiteouts) and safe extraction."""
