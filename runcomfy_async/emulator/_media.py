"""Small real MP4 files for the emulator's outputs: clips that play, made per request id.

With PyAV installed (the ``video`` extra: ``pip install runcomfy-async[video]``)
every output is a real H.264 clip in an MP4 container: 160x90 pixels, 12 frames
at 12 fps (one second), ``yuv420p`` and "fast start" (``moov`` first), so a
browser or notebook shows it at once. Each job's clip differs: its colour,
stripes and moving square come from the request id, and the id's first
characters are drawn in. Encoding costs a few milliseconds, once per request
id: clips are cached (:func:`make_mp4` may be asked for the same output many
times).

Without PyAV the file is a well-formed ISO-BMFF container (ftyp + moov +
mdat) made in code, with one video track of the clip's length and no samples;
``mdat`` carries the request id and bytes derived from it. Either way every
job's file is distinct and reproducible.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import struct
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from av.video.plane import VideoPlane

__all__ = ["CLIP_FPS", "CLIP_FRAMES", "CLIP_SIZE", "MP4_CONTENT_TYPE", "make_mp4", "playable"]

MP4_CONTENT_TYPE = "video/mp4"
"""The ``Content-Type`` of the files :func:`make_mp4` makes."""

_TIMESCALE = 1000
_WIDTH, _HEIGHT = 1280, 720

CLIP_SIZE = (160, 90)
"""Width and height in pixels of the clips made with PyAV."""
CLIP_FPS = 12
"""Frames per second of the clips made with PyAV."""
CLIP_FRAMES = 12
"""Frames in each clip made with PyAV (one second at :data:`CLIP_FPS`)."""
_CACHED_CLIPS = 4096  # at ~6 KB a clip, at most ~25 MB of memory
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


def _frameless(request_id: str, clip_seconds: float, size: int) -> bytes:
    duration = round(clip_seconds * _TIMESCALE)
    moov = _box(b"moov", _mvhd(duration), _trak(duration))
    return _ftyp() + moov + _mdat(request_id, size)


def make_mp4(request_id: str, *, clip_seconds: float = 5.0, size: int = 4096) -> bytes:
    """The MP4 served for ``request_id``: a playing one-second clip when PyAV is installed.

    Without PyAV: a frameless MP4 ``clip_seconds`` long with about ``size``
    bytes of data (both parameters only shape this fallback). The same
    arguments always give the same bytes.
    """
    if playable():
        return _clip(request_id)
    return _frameless(request_id, clip_seconds, size)


@functools.lru_cache(maxsize=1)
def _pyav() -> ModuleType | None:
    try:
        import av
    except ImportError:
        return None
    return av


def playable() -> bool:
    """True when outputs are real clips (PyAV can be imported), False for frameless files."""
    return _pyav() is not None


# A 3x5 pixel font for request ids (hexadecimal and dashes); other characters
# are drawn as a checked box.
_FONT = {
    ch: rows.split()
    for ch, rows in {
        "0": "111 101 101 101 111",
        "1": "010 110 010 010 111",
        "2": "111 001 111 100 111",
        "3": "111 001 111 001 111",
        "4": "101 101 111 001 001",
        "5": "111 100 111 001 111",
        "6": "111 100 111 101 111",
        "7": "111 001 001 010 010",
        "8": "111 101 111 101 111",
        "9": "111 101 111 001 111",
        "a": "010 101 111 101 101",
        "b": "110 101 110 101 110",
        "c": "011 100 100 100 011",
        "d": "110 101 101 101 110",
        "e": "111 100 110 100 111",
        "f": "111 100 110 100 100",
        "-": "000 000 111 000 000",
        "?": "101 010 101 010 101",
    }.items()
}
_SCALE = 3  # font pixels per glyph pixel
_BAND_TOP, _BAND_ROWS = 62, 28  # the dark band the id is drawn on (luma rows, to the bottom)


def _text_band(text: str, width: int) -> list[bytes]:
    """Luma rows of a dark band with ``text`` drawn in white, centred."""
    rows = [bytearray([16]) * width for _ in range(_BAND_ROWS)]
    advance = 4 * _SCALE
    x0 = max(0, (width - advance * len(text) + _SCALE) // 2)
    y0 = (_BAND_ROWS - 5 * _SCALE) // 2
    for n, ch in enumerate(text):
        glyph = _FONT.get(ch.lower(), _FONT["?"])
        for gy, bits in enumerate(glyph):
            for gx, bit in enumerate(bits):
                if bit == "1":
                    x = x0 + n * advance + gx * _SCALE
                    for dy in range(_SCALE):
                        rows[y0 + gy * _SCALE + dy][x : x + _SCALE] = b"\xeb" * _SCALE
    return [bytes(r) for r in rows]


def _frames(request_id: str) -> list[tuple[bytes, bytes, bytes]]:
    """The Y, U and V planes of each frame of ``request_id``'s clip (tightly packed)."""
    width, height = CLIP_SIZE
    seed = hashlib.sha256(request_id.encode()).digest()
    # Stripes: a triangle wave of luma, sliding sideways each frame; slope and
    # speed vary per id, and so does the colour (a hue angle on the U/V plane).
    wave = bytes(60 + abs((i % 64) - 32) * 4 for i in range(64))
    strip = wave * ((width + 64 * 2) // 64 + 1)
    slope, speed = 1 + seed[0] % 3, 3 + seed[1] % 5
    hue = seed[2] / 256 * 2 * math.pi
    u, v = round(128 + 80 * math.cos(hue)), round(128 + 80 * math.sin(hue))
    cw, ch = width // 2, height // 2
    band = _text_band(request_id[:8], width)
    chroma_band = range(_BAND_TOP // 2, (_BAND_TOP + _BAND_ROWS) // 2)
    u_plane = b"".join(bytes([128 if r in chroma_band else u]) * cw for r in range(ch))
    v_plane = b"".join(bytes([128 if r in chroma_band else v]) * cw for r in range(ch))
    side = 18
    top = 8 + seed[3] % (_BAND_TOP - side - 12)
    frames = []
    for i in range(CLIP_FRAMES):
        rows = [bytearray(strip[(r * slope + i * speed) % 64 :][:width]) for r in range(_BAND_TOP)]
        # A white square crossing the picture left to right: the motion a viewer sees.
        left = round(i * (width - side) / (CLIP_FRAMES - 1))
        for r in range(top, top + side):
            rows[r][left : left + side] = b"\xeb" * side
        luma = b"".join(rows) + b"".join(band)
        luma += bytes([16]) * (width * height - len(luma))
        frames.append((luma, u_plane, v_plane))
    return frames


def _write_plane(plane: VideoPlane, data: bytes, width: int) -> None:
    line = plane.line_size
    if line != width:  # rows padded for alignment: lay them out as the frame wants
        rows = [data[i : i + width] for i in range(0, len(data), width)]
        data = b"".join(r.ljust(line, b"\x00") for r in rows)
    plane.update(data)


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The boxes at one level of an ISO-BMFF file: (type, whole box) in order."""
    out, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8:  # 0 (to the end) or 1 (64-bit size): not in the files made here
            raise ValueError(f"unsupported {kind!r} box size {size}")
        out.append((kind, data[offset : offset + size]))
        offset += size
    return out


def _shift_chunk_offsets(box: bytes, delta: int) -> bytes:
    """``box`` with every chunk offset (``stco`` / ``co64``) inside it moved by ``delta``."""
    kind = box[4:8]
    if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
        return box[:8] + b"".join(_shift_chunk_offsets(b, delta) for _, b in _boxes(box[8:]))
    if kind in (b"stco", b"co64"):
        fmt = ">I" if kind == b"stco" else ">Q"
        (count,) = struct.unpack_from(">I", box, 12)
        offsets = struct.unpack_from(f">{count}{fmt[1]}", box, 16)
        return box[:16] + struct.pack(f">{count}{fmt[1]}", *(o + delta for o in offsets))
    return box


def _fast_start(data: bytes) -> bytes:
    """Move ``moov`` right after ``ftyp`` so a player can start before the whole file arrives.

    FFmpeg's own "faststart" (the same layout) rereads its output file, which
    an in-memory buffer cannot offer (and a temporary file costs more than
    the encode). Every box after ``ftyp`` moves by the size of ``moov``.
    """
    boxes = _boxes(data)
    kinds = [kind for kind, _ in boxes]
    moov = kinds.index(b"moov")
    if kinds[0] != b"ftyp" or moov < kinds.index(b"mdat"):
        return data
    index = _shift_chunk_offsets(boxes[moov][1], len(boxes[moov][1]))
    rest = b"".join(box for i, (_, box) in enumerate(boxes[1:], 1) if i != moov)
    return boxes[0][1] + index + rest


@functools.lru_cache(maxsize=_CACHED_CLIPS)
def _clip(request_id: str) -> bytes:
    """Encode ``request_id``'s clip with PyAV (H.264 in MP4, fast start); cached per id."""
    av = _pyav()
    assert av is not None
    width, height = CLIP_SIZE
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One thread: x264's output is then the same bytes on every run.
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "26", "threads": "1"}
        for n, planes in enumerate(_frames(request_id)):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, data, w in zip(
                frame.planes, planes, (width, width // 2, width // 2), strict=True
            ):
                _write_plane(plane, data, w)
            frame.pts = n
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return _fast_start(buffer.getvalue())
