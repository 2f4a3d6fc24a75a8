"""The content-addressed store: sha256 blobs and the SQLite index under one root."""
