"""The solver's cache in the store's index: input key → the layer a step made (or none)."""

from __future__ import annotations

from typing import Any

from layerbuild.solve.solver import Output
from layerbuild.store import NO_RESULT, Lease, Store


class StoreCache:
    """Cache records in `store.index`; `result` is the diff_id, so prune can see what a record needs."""

    def __init__(self, store: Store, lease: Lease | None = None) -> None:
        self.store = store
        # A build's lease: a hit is held from the moment it is found, so prune cannot take its
        # layer away while the build goes on to use it.
        self.lease = lease

    def get(self, key: str) -> Output | None:
        record = self.lease.hold_cache(key) if self.lease is not None else self.store.index.get_cache(key)
        if record is None:
            return None
        meta: dict[str, Any] = dict(record.metadata or {}) if isinstance(record.metadata, dict) else {}
        diff_id = record.result or None
        return Output(
            diff_id=diff_id,
            size=meta.get("size"),
            created=float(meta.get("created", record.created)),
            extra=meta.get("extra") or {},
        )

    def put(self, key: str, kind: str, output: Output) -> None:
        metadata = {"size": output.size, "created": output.created, "extra": dict(output.extra)}
        self.store.index.put_cache(key, kind, output.diff_id or NO_RESULT, metadata)
