"""The tar wire format: one canonical encoding of an entry's header, and a tolerant header decoder.

We write the POSIX.1-2001 (pax) flavour of ustar the way OCI layers expect it: numeric uid/gid with no
user or group names, and a pax extended header only when a value does not fit ustar (a long or non-ASCII
name, a large number, an xattr). Every field is derived from the entry alone, so equal entries give equal
bytes. The decoder accepts what other tools write too (GNU long names, base-256 numbers, old V7 headers).
"""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass, field

from layerbuild.errors import UnsafeArchiveError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL7 = 0o7777777  # 8-byte fields: 7 octal digits and a NUL
_MAX_OCTAL11 = 0o77777777777  # 12-byte fields
# pax headers and GNU long names are read whole; real ones are a few KiB, so cap them to keep an evil
# archive from making us allocate gigabytes for a "name".
MAX_META_SIZE = 1 << 20


class Kind(enum.Enum):
    """The entry types a layer can hold, with their tar typeflag."""

    FILE = b"0"
    HARDLINK = b"1"
    SYMLINK = b"2"
    CHAR = b"3"
    BLOCK = b"4"
    DIR = b"5"
    FIFO = b"6"


_S_IFMT_OF_KIND = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
}


_KIND_OF_S_IFMT = {ifmt: kind for kind, ifmt in _S_IFMT_OF_KIND.items()}


def kind_of_mode(st_mode: int) -> Kind | None:
    """The entry kind for a file mode, or None for what tar cannot hold (sockets)."""
    return _KIND_OF_S_IFMT.get(stat.S_IFMT(st_mode))


@dataclass(frozen=True)
class Header:
    """One archive entry's metadata. `path` is relative, '/'-separated, without a trailing slash."""

    path: bytes
    kind: Kind
    mode: int = 0o644  # permission bits incl. setuid/setgid/sticky, no file type
    uid: int = 0
    gid: int = 0
    size: int = 0  # content bytes that follow the header (regular files only)
    mtime: int = 0
    linkname: bytes = b""  # symlink target, or the path a hardlink points to
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = field(default=())  # sorted by name


def padding(size: int) -> int:
    """Zero bytes needed after `size` bytes of content to reach a block boundary."""
    return -size % BLOCK


# --- encoding -------------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    # The length prefix counts itself, so find the fixed point (at most one extra digit).
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


_MAGIC = b"ustar\x0000" + b"\0" * 64  # magic, version; uname, gname: OCI layers carry numeric ids only
_TAIL = b"\0" * 167  # prefix (unused, long names go to pax instead) and the block's padding
_CHECKSUM_BASE = 8 * 0x20 + sum(_MAGIC)  # the checksum field sums as eight spaces


def _ustar_block(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    # One format per group of fields, and the checksum summed over the fields that vary only (NUL
    # padding adds nothing): a layer of many small files encodes thousands of these.
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    devices = b"%07o\0%07o\0" % (devmajor, devminor)
    checksum = _CHECKSUM_BASE + sum(name) + sum(numbers) + typeflag[0] + sum(linkname) + sum(devices)
    return b"".join((
        name.ljust(100, b"\0"), numbers, b"%06o\0 " % checksum, typeflag, linkname.ljust(100, b"\0"), _MAGIC,
        devices, _TAIL,
    ))


def _fits_ustar_text(value: bytes) -> bool:
    return len(value) <= 100 and value.isascii()


def encode_header(h: Header) -> bytes:
    """The header block(s) for `h`: a pax extended header first when needed, then the ustar block."""
    return encode_entry(h.path, h.kind, h.mode, h.uid, h.gid, h.size, h.mtime, h.linkname, h.devmajor, h.devminor,
                        h.xattrs)


def encode_entry(
    path: bytes, kind: Kind, mode: int, uid: int, gid: int, size: int, mtime: int, linkname: bytes = b"",
    devmajor: int = 0, devminor: int = 0, xattrs: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """`encode_header` of the Header these fields make, without making it (the writers' hot path)."""
    name = path + b"/" if kind is Kind.DIR else path
    if (not xattrs and 0 <= uid <= _MAX_OCTAL7 and 0 <= gid <= _MAX_OCTAL7 and 0 <= size <= _MAX_OCTAL11
            and 0 <= mtime <= _MAX_OCTAL11 and _fits_ustar_text(name) and (not linkname or _fits_ustar_text(linkname))):
        if kind is not Kind.CHAR and kind is not Kind.BLOCK:
            devmajor = devminor = 0
        return _ustar_block(name, mode & 0o7777, uid, gid, size if kind is Kind.FILE else 0, mtime, kind.value,
                            linkname, devmajor, devminor)
    return _encode_pax(Header(path, kind, mode, uid, gid, size, mtime, linkname, devmajor, devminor, xattrs))


def _encode_pax(h: Header) -> bytes:
    """`encode_header` for a header that needs a pax extended header (or may)."""
    name = h.path + b"/" if h.kind is Kind.DIR else h.path
    pax: list[tuple[bytes, bytes]] = []
    ustar_name, ustar_link = name, h.linkname
    if not _fits_ustar_text(name):
        pax.append((b"path", name))
        ustar_name = _ascii_stub(name)
    if h.linkname and not _fits_ustar_text(h.linkname):
        pax.append((b"linkpath", h.linkname))
        ustar_link = _ascii_stub(h.linkname)
    numbers = {b"uid": (h.uid, _MAX_OCTAL7), b"gid": (h.gid, _MAX_OCTAL7), b"size": (h.size, _MAX_OCTAL11)}
    clipped: dict[bytes, int] = {}
    for key, (value, limit) in numbers.items():
        if not 0 <= value <= limit:
            pax.append((key, b"%d" % value))
        clipped[key] = value if 0 <= value <= limit else 0
    mtime = h.mtime
    if not 0 <= mtime <= _MAX_OCTAL11:
        pax.append((b"mtime", b"%d" % mtime))
        mtime = 0
    for xname, xvalue in h.xattrs:
        pax.append((b"SCHILY.xattr." + xname, xvalue))
    out = b""
    if pax:
        data = b"".join(_pax_record(k, v) for k, v in sorted(pax))
        # A fixed name and zero metadata for the pax pseudo-entry keep it independent of the machine.
        pax_name = _ascii_stub(b"PaxHeaders/" + name.rstrip(b"/").rsplit(b"/", 1)[-1])
        out = _ustar_block(pax_name, 0o644, 0, 0, len(data), 0, b"x", b"", 0, 0)
        out += data + b"\0" * padding(len(data))
    devmajor, devminor = (h.devmajor, h.devminor) if h.kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
    return out + _ustar_block(
        ustar_name,
        h.mode & 0o7777,
        clipped[b"uid"],
        clipped[b"gid"],
        clipped[b"size"] if h.kind is Kind.FILE else 0,
        mtime,
        h.kind.value,
        ustar_link,
        devmajor,
        devminor,
    )


def _ascii_stub(value: bytes) -> bytes:
    """A ustar-safe stand-in for a value carried in full by a pax record (readers use the record)."""
    return bytes(b if 32 <= b < 127 else 0x5F for b in value[:99])


# --- decoding -------------------------------------------------------------------------------------


class RawType(enum.Enum):
    """Header blocks that are not entries themselves but modify the next one, or end the archive."""

    PAX = b"x"
    GLOBAL_PAX = b"g"
    GNU_LONGNAME = b"L"
    GNU_LONGLINK = b"K"


@dataclass(frozen=True)
class RawHeader:
    """A decoded header block before pax/GNU extensions are applied."""

    name: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: bytes
    devmajor: int
    devminor: int


def _cstr(field_bytes: bytes) -> bytes:
    return field_bytes.split(b"\0", 1)[0]


def _number(field_bytes: bytes, what: str) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for values octal cannot hold
        value = int.from_bytes(field_bytes, "big", signed=False)
        value &= (1 << (8 * len(field_bytes) - 1)) - 1
        if field_bytes[0] & 0x40:  # negative (two's complement)
            value -= 1 << (8 * len(field_bytes) - 1)
        return value
    text = _cstr(field_bytes).strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise UnsafeArchiveError(f"malformed tar header: bad {what} field {text!r}") from None


def decode_header(block: bytes) -> RawHeader:
    """Decode one 512-byte header block, verifying its checksum."""
    try:
        stored = _number(block[148:156], "checksum")
    except UnsafeArchiveError:
        stored = -1
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    # Some old writers summed the bytes as signed chars.
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 128)
    if stored not in (unsigned, signed):
        raise UnsafeArchiveError("malformed tar header: checksum mismatch (not a tar stream, or corrupt)")
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\x00":  # POSIX ustar: the prefix field extends the name
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return RawHeader(
        name=name,
        mode=_number(block[100:108], "mode"),
        uid=_number(block[108:116], "uid"),
        gid=_number(block[116:124], "gid"),
        size=_number(block[124:136], "size"),
        mtime=_number(block[136:148], "mtime"),
        typeflag=block[156:157],
        linkname=_cstr(block[157:257]),
        devmajor=_number(block[329:337], "devmajor"),
        devminor=_number(block[337:345], "devminor"),
    )


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse pax extended header records (`<len> <key>=<value>\\n`); later keys win."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad with NULs
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise UnsafeArchiveError("malformed pax header: bad record length") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise UnsafeArchiveError("malformed pax header record")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records
