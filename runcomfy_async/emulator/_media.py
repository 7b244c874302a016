"""Tiny real MP4 files: a well-formed ISO-BMFF container (ftyp + moov + mdat) made in code.

The container is valid (every box sized and nested as ISO/IEC 14496-12 says,
``moov`` before ``mdat`` as in a "fast start" file), with one video track of
the clip's length and no samples; ``mdat`` carries the request id and
bytes derived from it, so every job's file is distinct and reproducible.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["MP4_CONTENT_TYPE", "make_mp4"]

MP4_CONTENT_TYPE = "video/mp4"
"""The ``Content-Type`` of the files :func:`make_mp4` makes."""

_TIMESCALE = 1000
_WIDTH, _HEIGHT = 1280, 720
_IDENTITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _ftyp() -> bytes:
    return _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"avc1", b"mp41")


def _mvhd(duration: int) -> bytes:
    return _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, _TIMESCALE, duration),
        struct.pack(">IH", 0x00010000, 0x0100),  # rate 1.0, volume 1.0
        bytes(10),
        _IDENTITY_MATRIX,
        bytes(24),
        struct.pack(">I", 2),  # next track id
    )


def _trak(duration: int) -> bytes:
    tkhd = _full_box(
        b"tkhd",
        0,
        0x3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, duration),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0),  # layer, group, volume (0 for video), reserved
        _IDENTITY_MATRIX,
        struct.pack(">II", _WIDTH << 16, _HEIGHT << 16),
    )
    mdhd = _full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, _TIMESCALE, duration, 0x55C4, 0)
    )  # language "und"
    hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, bytes(8))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))


def _mdat(request_id: str, size: int) -> bytes:
    head = f"runcomfy-async emulator output\nrequest_id={request_id}\n".encode()
    chunks = [head]
    total = len(head)
    block = hashlib.sha256(request_id.encode()).digest()
    while total < size:
        chunks.append(block)
        total += len(block)
        block = hashlib.sha256(block).digest()
    return _box(b"mdat", b"".join(chunks)[: max(size, len(head))])


def make_mp4(request_id: str, *, clip_seconds: float = 5.0, size: int = 4096) -> bytes:
    """A small valid MP4 for ``request_id``: ``clip_seconds`` long, about ``size`` bytes of data."""
    duration = round(clip_seconds * _TIMESCALE)
    moov = _box(b"moov", _mvhd(duration), _trak(duration))
    return _ftyp() + moov + _mdat(request_id, size)
