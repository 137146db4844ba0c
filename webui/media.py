"""Images in prompts: one checked, immutable `Image` type that the API, the chat history, the UI and the
loaders all pass around.

An image is kept as the bytes of its file (PNG, JPEG, WebP, GIF, BMP), checked once when it enters Hearth
(`Image.from_bytes`): the format is sniffed by Pillow, the pixel count read from the header before
anything is decoded (a 50-megapixel image or a decompression bomb is refused without being expanded), and
the whole file decoded once to prove it is not truncated. Its SHA-256 names it: chat files store images
by it, and a loader's prefix cache reuses an image's evaluation only while the same hash sits at the same
place in the prompt.

A prompt carries its images as ``MEDIA_MARKER`` in the text, once per image, in order (llama.cpp's mtmd
convention): chat templates render an image part as the marker, and a loader replaces each marker with
its model's own image tokens (`Model.tokenize_media`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from webui.errors import GenerationError

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Where an image goes in a prompt's text (llama.cpp's default mtmd marker, so a GGUF prompt needs no rewrite).
MEDIA_MARKER = "<__media__>"
#: Largest encoded image accepted (bytes): a phone photo is 3-8 MB.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: Largest image accepted (pixels): 33 megapixels (an 8K frame). Vision models downscale to ~1-4 MP anyway.
MAX_IMAGE_PIXELS = 33_177_600
#: The formats vision processors read.
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


class MediaError(GenerationError):
    """An image that cannot be used: not an image, truncated, too large, or sent to a model without vision."""


@dataclass(frozen=True)
class Image:
    """One checked image: its file's bytes, format and size. Build it with `from_bytes` / `from_data_url`."""

    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int
    sha256: str

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "the image") -> Image:
        """Check `data` is a whole image in a supported format, within the size limits; MediaError naming
        `what` otherwise."""
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        if not data:
            raise MediaError(f"{what} is empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise MediaError(f"{what} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
        try:
            with PILImage.open(io.BytesIO(data)) as probe:  # reads the header only
                kind, (width, height) = probe.format, probe.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise MediaError(
                        f"{what} is {width} x {height} ({width * height / 1e6:.0f} megapixels); the limit is "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels: scale it down first"
                    )
                if kind not in FORMATS:
                    raise MediaError(f"{what} is {kind or 'an unknown format'}; send PNG, JPEG, WebP, GIF or BMP")
                probe.load()  # decodes every byte: a truncated file fails here, not inside a model
        except MediaError:
            raise
        except UnidentifiedImageError:
            raise MediaError(f"{what} is not an image (PNG, JPEG, WebP, GIF or BMP)") from None
        except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
            raise MediaError(f"{what} cannot be read: {exc} (is the file truncated?)") from None
        return cls(data=bytes(data), mime=FORMATS[kind], width=width, height=height,
                   sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_data_url(cls, url: str, what: str = "the image") -> Image:
        """An image from a ``data:image/...;base64,...`` URL (OpenAI's image_url content part)."""
        match = _DATA_URL.match(url)
        if not match or not match.group("b64"):
            raise MediaError(f"{what} is not a base64 data URL (data:image/png;base64,...)")
        payload = re.sub(r"\s+", "", url[match.end():])
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{what}: the base64 data is malformed or truncated") from None
        return cls.from_bytes(data, what)

    @property
    def suffix(self) -> str:
        """The file suffix for its format (``.png``)."""
        return "." + self.mime.split("/")[1].replace("jpeg", "jpg")

    @property
    def file_name(self) -> str:
        """A content-addressed file name (``<sha256>.png``): the same image is stored once."""
        return self.sha256 + self.suffix

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def pil(self) -> PILImage.Image:
        """The decoded image in RGB (what vision processors take); the first frame of an animation."""
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self.data)) as img:
            img.seek(0)
            return img.convert("RGB")


def count_markers(text: str) -> int:
    return text.count(MEDIA_MARKER)


def check_placement(text: str, images: list[Image] | tuple[Image, ...]) -> None:
    """A prompt's text must hold one `MEDIA_MARKER` per image."""
    found = count_markers(text)
    if found != len(images):
        raise MediaError(
            f"the prompt has {found} image marker(s) ({MEDIA_MARKER}) for {len(images)} image(s): "
            "give one marker per image, where the image goes"
        )
