"""Walk zstd frame and block headers as compressed bytes pass by, to tell a complete stream from a cut one.

The decompressor reports a stream that stops mid-frame as a plain end of data; a cut layer must not pass
for a short one. Only headers are parsed (one per block of up to 128 KiB), so this costs next to nothing.
"""

from __future__ import annotations

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
_DICT_ID_SIZES = (0, 1, 2, 4)
_FCS_SIZES = (0, 2, 4, 8)


class FrameWalker:
    """Feed it the compressed stream in order; `complete()` says whether it ended on a frame boundary."""

    def __init__(self) -> None:
        self._skip = 0  # bytes of payload still to pass over
        self._want = 4  # bytes of the next header to collect
        self._state = "magic"
        self._header = bytearray()
        self._checksum = False
        self.frames = 0
        self.error: str | None = None

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and self.error is None:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            n = min(self._want - len(self._header), len(view))
            self._header += view[:n]
            view = view[n:]
            if len(self._header) == self._want:
                header = bytes(self._header)
                self._header.clear()
                self._step(header)

    def _step(self, header: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._want = "fhd", 1
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._state, self._want = "skippable", 4
            else:
                self.error = "not a zstd frame"
        elif self._state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._want = "magic", 4
            self.frames += 1
        elif self._state == "fhd":
            fhd = header[0]
            single_segment = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = _FCS_SIZES[fhd >> 6] or (1 if single_segment else 0)
            self._skip = (0 if single_segment else 1) + _DICT_ID_SIZES[fhd & 0x03] + fcs
            self._state, self._want = "block", 3
        elif self._state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                self.error = "reserved zstd block type"
                return
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._want = "magic", 4
                self.frames += 1

    def complete(self) -> bool:
        return (
            self.error is None
            and self._state == "magic"
            and not self._header
            and not self._skip
            and self.frames > 0
        )
