"""A SHA-256 whose running state can be saved and resumed: OpenSSL's SHA256_CTX through ctypes.

hashlib cannot export its state, so a layer written as frames could not continue its digests from a
frame boundary. libcrypto's low-level SHA256_Init/Update/Final keep the whole state in a plain
112-byte struct (eight words, the bit length, the partial block): saved as bytes, it resumes exactly.
The calls release the GIL (ctypes does for every foreign call) and use the CPU's SHA extensions.
Where libcrypto is missing, `available()` is False and callers hash everything with hashlib.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

_CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len (32-bit words)
_lib: Any = None
_tried = False


def _load() -> Any:
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    for name in _names():
        try:
            lib = ctypes.CDLL(name)
            for fn in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
                fn.restype = ctypes.c_int
            lib.SHA256_Update.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
            lib.SHA256_Init.argtypes = (ctypes.c_void_p,)
            lib.SHA256_Final.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        except (OSError, AttributeError):
            continue
        _lib = lib
        break
    return _lib


def _names() -> Iterator[str]:
    """Where libcrypto may be: its sonames first (the one hashlib's OpenSSL already loaded answers at
    once), then what `find_library` finds, which runs ldconfig and loads tempfile: only when those
    fail."""
    yield from ("libcrypto.so.3", "libcrypto.so.1.1")
    import ctypes.util

    name = ctypes.util.find_library("crypto")
    if name:
        yield name
    yield "libcrypto.so"


def available() -> bool:
    """Whether resumable hashing works here (libcrypto found)."""
    return _load() is not None


class Sha256:
    """sha256 with `state()` (bytes) and `Sha256(state)` to continue from it; `hexdigest()` does not
    end the hash (it finishes a copy), as hashlib's does not."""

    def __init__(self, state: bytes | None = None) -> None:
        lib = _load()
        if lib is None:
            raise RuntimeError("libcrypto is not available")
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
        if state is None:
            lib.SHA256_Init(self._ctx)
        else:
            if len(state) != _CTX_SIZE:
                raise ValueError(f"a sha256 state is {_CTX_SIZE} bytes, not {len(state)}")
            ctypes.memmove(self._ctx, state, _CTX_SIZE)
        self._lib = lib

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        if view.readonly:
            buf: Any = ctypes.c_char_p(bytes(view) if not isinstance(data, bytes) else data)
        else:
            buf = (ctypes.c_char * view.nbytes).from_buffer(view)
        self._lib.SHA256_Update(self._ctx, buf, view.nbytes)

    def state(self) -> bytes:
        return self._ctx.raw

    def copy(self) -> Sha256:
        return Sha256(self.state())

    def digest(self) -> bytes:
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, ctx)
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()
