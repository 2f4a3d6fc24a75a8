"""The resumable sha256 (OpenSSL's SHA256_CTX through ctypes) equals hashlib, however it is split and saved."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layerbuild.layer import sha256state
from layerbuild.layer.frames import StateHash

pytestmark = pytest.mark.skipif(not sha256state.available(), reason="no libcrypto")


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_saved_and_resumed_equals_hashlib(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    h = sha256state.Sha256()
    start = 0
    for point in points:
        h.update(memoryview(data)[start:point])
        h = sha256state.Sha256(h.state())  # every piece continues from a saved state
        start = point
    h.update(bytearray(data[start:]))
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert h.digest() == hashlib.sha256(data).digest()


@given(st.binary(max_size=500), st.binary(max_size=500))
def test_a_digest_does_not_end_the_hash(a: bytes, b: bytes) -> None:
    h = StateHash()
    h.update(a)
    assert h.hexdigest() == hashlib.sha256(a).hexdigest()
    h.update(b)
    assert h.hexdigest() == hashlib.sha256(a + b).hexdigest()


def test_a_state_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="112 bytes"):
        sha256state.Sha256(b"short")


def test_libcrypto_is_found_by_its_soname_without_running_ldconfig() -> None:
    """A layer written as frames loads libcrypto by its soname (the one hashlib's OpenSSL loaded
    answers): ctypes.util.find_library, which spawns ldconfig on every build, only as a fallback."""
    import subprocess
    import sys

    code = ("import sys; from layerbuild.layer import sha256state; assert sha256state.available(); "
            "print('ctypes.util' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
