"""The header encoder's fast path (plain ustar, checksum over the varying fields) gives the bytes of the
straightforward encoding (every field formatted, the checksum summed over the whole block), and
Python's tarfile reads them back; a header that needs pax goes the pax way."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.layer.tarformat import Header, Kind, encode_entry, encode_header


def reference_block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
                    linkname: bytes, devmajor: int, devminor: int) -> bytes:
    def octal(value: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, value)

    block = bytearray(b"".join([
        name.ljust(100, b"\0"), octal(mode, 8), octal(uid, 8), octal(gid, 8), octal(size, 12), octal(mtime, 12),
        b" " * 8, typeflag, linkname.ljust(100, b"\0"), b"ustar\x0000", b"\0" * 64, octal(devmajor, 8),
        octal(devminor, 8), b"\0" * 167,
    ]))
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


names = st.binary(min_size=1, max_size=120).filter(
    lambda b: b"\0" not in b and not b.startswith(b"/") and not b.endswith(b"/") and b"//" not in b)


@settings(max_examples=200, deadline=None)
@given(path=names, kind=st.sampled_from(list(Kind)), mode=st.integers(0, 0o7777),
       uid=st.integers(0, 0o7777777 + 5), gid=st.integers(0, 70000), size=st.integers(0, 1 << 34),
       mtime=st.integers(-1, 1 << 34), link=st.one_of(st.just(b""), names),
       dev=st.tuples(st.integers(0, 255), st.integers(0, 255)),
       xattrs=st.sampled_from([(), ((b"security.capability", b"\x01\x02"),)]))
def test_the_fast_path_is_the_plain_encoding(path: bytes, kind: Kind, mode: int, uid: int, gid: int, size: int,
                                             mtime: int, link: bytes, dev: tuple[int, int],
                                             xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
    h = Header(path, kind, mode, uid, gid, size, mtime, link, dev[0], dev[1], xattrs)
    got = encode_header(h)
    assert got == encode_entry(path, kind, mode, uid, gid, size, mtime, link, dev[0], dev[1], xattrs)
    assert len(got) % 512 == 0
    name = path + b"/" if kind is Kind.DIR else path
    plain = (not xattrs and uid <= 0o7777777 and size <= 0o77777777777 and 0 <= mtime <= 0o77777777777
             and len(name) <= 100 and name.isascii() and len(link) <= 100 and link.isascii())
    if plain:
        devs = dev if kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
        assert got == reference_block(name, mode, uid, gid, size if kind is Kind.FILE else 0, mtime, kind.value,
                                      link, *devs)
    else:
        assert got[156:157] == b"x"  # a pax header first
    if kind is Kind.FILE and size > 1 << 16:
        return  # not worth materialising for tarfile (a size drawn may be 16 GiB)
    data = got + b"\0" * (size if kind is Kind.FILE else 0) + b"\0" * (-size % 512 if kind is Kind.FILE else 0)
    with tarfile.open(fileobj=io.BytesIO(data + b"\0" * 1024)) as tar:
        member = tar.next()
        assert member is not None
        assert member.name == path.decode("utf-8", "surrogateescape")
        assert (member.mode, member.uid, member.gid) == (mode, uid, gid)
