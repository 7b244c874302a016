"""Local files as inputs: :func:`file_uri` turns an image or video on disk into a ``data:`` URI.

RunComfy has no upload endpoint; its own ComfyUI nodes send images inline as
``data:image/png;base64,...`` in the same JSON field that takes a URL. The
media type is sniffed from the file's first bytes, never from its name, so a
``.png`` that is really a JPEG is sent as what it is.
"""

from __future__ import annotations

import base64
import os
from typing import Final

from ..catalog import DATA_URI_MAX_BYTES

__all__ = ["file_uri", "sniff_media_type"]

_SNIFF_BYTES: Final = 64


def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes of a file show (images and videos), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "image/heic"
        if brand.startswith(b"M4V"):
            return "video/x-m4v"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head else "video/x-matroska"
    return None


def file_uri(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> str:
    """A ``data:<type>;base64,...`` URI holding the image or video at ``path``.

    The type is sniffed from the bytes. ``max_bytes`` caps the file size
    (default: what validation allows for its kind, about 50 MB for an image
    and 100 MB for a video). Raises ``ValueError`` for a file that is neither
    a known image nor video, or too large, and ``OSError`` when it cannot be
    read. This reads the file: in async code call it through a thread
    (``await anyio.to_thread.run_sync(file_uri, path)``).
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
        media_type = sniff_media_type(head)
        if media_type is None:
            raise ValueError(
                f"{os.fspath(path)!r} is not an image or video this library recognises "
                "(PNG, JPEG, GIF, BMP, WebP, AVIF, HEIC, MP4, MOV, M4V, WebM, MKV, AVI)"
            )
        limit = max_bytes if max_bytes is not None else DATA_URI_MAX_BYTES[media_type.split("/")[0]]
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ValueError(
                f"{os.fspath(path)!r} is {size} bytes, more than the {limit} allowed inline; "
                "host it and pass its https URL instead"
            )
        data = head + f.read()
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
