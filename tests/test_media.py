"""The emulator's outputs: real clips that a decoder plays, made once per request id."""

from __future__ import annotations

import io
import struct
from typing import Any

import aiohttp
import av
import pytest

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.emulator import Emulator, _media, make_mp4

T2V = "kling/kling-3.0/pro/text-to-video"


def top_level_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        assert size >= 8 and offset + size <= len(data)
        boxes.append((kind, data[offset + 8 : offset + size]))
        offset += size
    assert offset == len(data)
    return boxes


def decode(data: bytes) -> tuple[Any, list[av.VideoFrame]]:
    """The video stream's facts and every decoded frame of an MP4 held in memory."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        facts = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "seconds": float(container.duration or 0) / av.time_base,
        }
        frames = list(container.decode(stream))
    return facts, frames


async def served_clips(emu: Emulator, n: int) -> list[tuple[str, bytes]]:
    """Run ``n`` jobs through the client and fetch each output from the storage origin."""
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        poll=PollPolicy(time_scale=emu.time_scale),
        requests_per_second=None,
    ) as client:
        results = [await client.run(T2V, {"prompt": f"clip {i}", "duration": 5}) for i in range(n)]
    out = []
    async with aiohttp.ClientSession() as http:
        for result in results:
            async with http.get(result.videos[0]) as resp:
                assert resp.status == 200 and resp.content_type == "video/mp4"
                out.append((result.request_id, await resp.read()))
    return out


async def test_served_outputs_decode_to_short_clips_that_differ_per_job(
    emulator: Emulator,
) -> None:
    (rid_a, a), (rid_b, b) = await served_clips(emulator, 2)
    assert rid_a != rid_b and a != b
    decoded = []
    for data in (a, b):
        facts, frames = decode(data)
        assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
        assert facts["seconds"] == pytest.approx(_media.CLIP_FRAMES / _media.CLIP_FPS, abs=0.1)
        assert len(frames) == _media.CLIP_FRAMES
        assert {(f.width, f.height) for f in frames} == {_media.CLIP_SIZE}
        decoded.append([bytes(f.planes[0]) for f in frames])
        # Fast start: the index comes before the media, so a browser plays at once.
        kinds = [kind for kind, _ in top_level_boxes(data)]
        assert kinds.index(b"moov") < kinds.index(b"mdat")
    first_a, first_b = decoded
    assert first_a[0] != first_b[0], "two jobs' clips look the same"
    assert first_a[0] != first_a[-1], "the picture does not move"


def test_a_clip_is_encoded_once_per_request_id_and_always_the_same() -> None:
    _media._clip.cache_clear()
    first = make_mp4("4b1d8e0c-cached")
    again = make_mp4("4b1d8e0c-cached", clip_seconds=10)
    info = _media._clip.cache_info()
    assert first == again and (info.misses, info.hits) == (1, 1)
    _media._clip.cache_clear()
    assert make_mp4("4b1d8e0c-cached") == first  # encoded anew: the very same bytes


def test_the_request_id_is_drawn_in_the_picture() -> None:
    width, height = _media.CLIP_SIZE
    _, frames = decode(make_mp4("0000aaaa-id"))
    luma = bytes(frames[0].planes[0])
    line = frames[0].planes[0].line_size
    band = [luma[r * line : r * line + width] for r in range(_media._BAND_TOP + 4, height - 4)]
    bright = sum(1 for row in band for px in row if px > 180)
    dark = sum(1 for row in band for px in row if px < 50)
    assert bright > 100 and dark > 1000  # white glyphs on a dark band
    _, others = decode(make_mp4("ffffffff-id"))
    other = bytes(others[0].planes[0])
    assert band != [
        other[r * line : r * line + width] for r in range(_media._BAND_TOP + 4, height - 4)
    ]


def test_without_pyav_outputs_are_frameless_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_media, "_pyav", lambda: None)
    assert not _media.playable()
    data = make_mp4("req-frameless", clip_seconds=5)
    boxes = dict(top_level_boxes(data))
    assert list(boxes) == [b"ftyp", b"moov", b"mdat"]
    assert b"request_id=req-frameless" in boxes[b"mdat"]
    assert make_mp4("req-other", clip_seconds=5) != data


class _PaddedPlane:
    """A stand-in for a frame plane whose rows are padded for alignment."""

    def __init__(self, line_size: int) -> None:
        self.line_size = line_size
        self.data = b""

    def update(self, data: bytes) -> None:
        self.data = bytes(data)


def test_plane_rows_are_padded_to_the_frames_line_size() -> None:
    plane = _PaddedPlane(line_size=8)
    _media._write_plane(plane, b"abcdef" * 2, 6)  # type: ignore[arg-type]
    assert plane.data == b"abcdef\x00\x00abcdef\x00\x00"


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def test_fast_start_moves_the_index_first_and_shifts_every_chunk_offset() -> None:
    stco = box(b"stco", struct.pack(">II", 0, 2), struct.pack(">II", 40, 48))
    co64 = box(b"co64", struct.pack(">II", 0, 1), struct.pack(">Q", 44))
    stbl = box(b"stbl", box(b"stsz", bytes(12)), stco, co64)
    trak = box(b"trak", box(b"mdia", box(b"minf", stbl)))
    moov = box(b"moov", box(b"mvhd", bytes(100)), trak)
    head = box(b"ftyp", b"isom") + box(b"free")
    data = head + box(b"mdat", bytes(32)) + moov  # moov last, as FFmpeg writes to a buffer
    moved = _media._fast_start(data)
    assert [k for k, _ in top_level_boxes(moved)] == [b"ftyp", b"moov", b"free", b"mdat"]
    assert len(moved) == len(data)
    shift = len(moov)
    assert struct.pack(">II", 40 + shift, 48 + shift) in moved
    assert struct.pack(">Q", 44 + shift) in moved
    assert _media._fast_start(moved) == moved  # already fast start: unchanged
