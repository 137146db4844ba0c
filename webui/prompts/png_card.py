"""Reading a PNG character card's text chunks without trusting it: limits before anything is decompressed.

A card comes from the internet. Its picture is never decoded here, but its size is checked against Pillow's
own decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) from the IHDR header, and each zTXt/iTXt
chunk is inflated by a bounded decompressor, so a zlib bomb is refused after at most `MAX_TEXT_BYTES`
of output instead of filling memory.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from webui.errors import HearthError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest card or picture file accepted (cards with embedded lorebooks run to a few MB).
MAX_CARD_BYTES = 32 * 1024 * 1024
#: Largest text a chunk may inflate to (the card JSON, base64-encoded).
MAX_TEXT_BYTES = 16 * 1024 * 1024
_FALLBACK_MAX_PIXELS = 89_478_485  # Pillow's default, used if an embedding app turned the check off


class CharacterError(HearthError):
    """A character file or card is missing, unreadable, malformed or too large."""


def max_pixels() -> int:
    """Pillow's decompression-bomb limit, so cards and every other image in Hearth share one number."""
    return int(Image.MAX_IMAGE_PIXELS or _FALLBACK_MAX_PIXELS)


def check_size(data: bytes, what: str = "the card") -> None:
    if len(data) > MAX_CARD_BYTES:
        raise CharacterError(
            f"{what} is {len(data) >> 20} MiB; at most {MAX_CARD_BYTES >> 20} MiB is accepted"
        )


def check_upload_size(path: Path) -> Path:
    """Refuse an uploaded card or picture by its size on disk, before it is read into memory."""
    size = path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise CharacterError(
            f"{path.name} is {size >> 20} MiB; at most {MAX_CARD_BYTES >> 20} MiB is accepted"
        )
    return path


def check_dimensions(width: int, height: int, what: str = "the picture") -> None:
    if width <= 0 or height <= 0:
        raise CharacterError(f"{what} has no size ({width}x{height})")
    if width * height > max_pixels():
        raise CharacterError(
            f"{what} is {width}x{height} pixels, more than the {max_pixels()} allowed (a decompression bomb?)"
        )


def check_picture(data: bytes, what: str = "the picture") -> None:
    """Refuse a picture that is too large in bytes or pixels; only its header is read, nothing decoded."""
    check_size(data, what)
    if data.startswith(PNG_SIGNATURE):
        png_text_chunks(data)  # checks IHDR and bounded text chunks
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with our message
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise CharacterError(f"{what} is too large: {exc}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CharacterError(f"{what} is not a readable image: {exc}") from None
    check_dimensions(width, height, what)


def png_text_chunks(data: bytes) -> dict[str, str]:
    """Keyword -> text of a PNG's tEXt, zTXt and iTXt chunks, parsed without decoding the image."""
    if not data.startswith(PNG_SIGNATURE):
        raise CharacterError("not a PNG file (bad signature)")
    check_size(data)
    chunks: dict[str, str] = {}
    pos, budget = len(PNG_SIGNATURE), MAX_TEXT_BYTES
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise CharacterError("the PNG is truncated or corrupt")
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind == b"IHDR":
            if length < 8:
                raise CharacterError("the PNG header (IHDR) is corrupt")
            check_dimensions(*struct.unpack(">II", body[:8]))
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, value = _text_chunk(kind, body, budget)
            budget -= len(value)
            chunks[key] = value
    return chunks


def _text_chunk(kind: bytes, body: bytes, budget: int) -> tuple[str, str]:
    try:
        key, _, rest = body.partition(b"\0")
        if kind == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":
            return key.decode("latin-1"), inflate(rest[1:], budget).decode("latin-1")
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated, _, value = rest.partition(b"\0")
        return key.decode("latin-1"), (inflate(value, budget) if compressed else value).decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError) as exc:
        raise CharacterError(f"the PNG text chunk {kind.decode('latin-1')} is corrupt: {exc}") from exc


def inflate(data: bytes, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes; more is a `CharacterError` (a bomb), found before it grows."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, max(limit, 0) + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise CharacterError(
            f"a PNG text chunk inflates to more than {MAX_TEXT_BYTES >> 20} MiB of text: refused (a zlib bomb?)"
        )
    return out
