"""Local files as inputs: file_uri sniffs the type from the bytes and caps the size."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from runcomfy_async.emulator import make_mp4
from runcomfy_async.inputs import KlingImageToVideo, file_uri, sniff_media_type, validate_payload

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
WEBP_HEAD = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32


def test_the_type_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    liar = tmp_path / "photo.jpg"
    liar.write_bytes(PNG)
    uri = file_uri(liar)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == PNG


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (PNG, "image/png"),
        (JPEG_HEAD, "image/jpeg"),
        (WEBP_HEAD, "image/webp"),
        (b"GIF89a" + b"\x00" * 20, "image/gif"),
        (b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 20, "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x01\x00webm" + b"\x00" * 20, "video/webm"),
        (b"hello, world", None),
    ],
)
def test_sniffing(head: bytes, media_type: str | None) -> None:
    assert sniff_media_type(head) == media_type


def test_a_video_from_disk(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.write_bytes(make_mp4("r1"))
    assert file_uri(clip).startswith("data:video/mp4;base64,")


def test_a_file_that_is_no_image_or_video_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not an image or video"):
        file_uri(text)


def test_a_file_past_the_cap_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    with pytest.raises(ValueError, match=f"{len(PNG)} bytes, more than the 10 allowed"):
        file_uri(image, max_bytes=10)


def test_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        file_uri(tmp_path / "absent.png")


def test_a_file_uri_is_a_valid_start_image(tmp_path: Path) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(PNG)
    typed = KlingImageToVideo(prompt="a fox", start_image_url=file_uri(image))
    body = typed.to_payload()
    assert validate_payload(typed.model_id, body) == []


def test_a_gif_from_disk_is_refused_as_the_start_image(tmp_path: Path) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(b"GIF89a" + b"\x00" * 20)
    body = {"prompt": "a fox", "start_image_url": file_uri(image)}
    problems = validate_payload(KlingImageToVideo.model_id, body)
    assert [p.path for p in problems] == ["start_image_url"]
