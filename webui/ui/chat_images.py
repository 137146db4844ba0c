"""Images in the Chat tab: reading the files attached to a message, and the files the browser is shown.

Attachments arrive as files in Gradio's upload folder; each is checked once with `Image.from_bytes`, named
by its file name in any error. The chat shows each image as a small copy (`thumbnail_file`), so a 20 MB
photo is not hashed by Gradio on every streamed update nor sent to the browser whole; an image given
back to the input box (Remove last) is its own bytes (`image_file`). Both live in one content-addressed
folder under the system's temp directory, where Gradio may serve files from: the chat files under the
user data folder need not be (the chat service keeps the images beside them).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

from webui.media import Image, MediaError
from webui.safe_files import atomic_write_bytes

#: Where the chat's image files are written for the browser (content-addressed: one file per image).
FOLDER = Path(tempfile.gettempdir()) / "hearth-chat-images"
#: The longest side of an image as the chat shows it (Gradio draws it at this size, so it stays small).
THUMBNAIL_SIDE = 320
#: An image this small (bytes, and within THUMBNAIL_SIDE) is shown as it is.
SMALL_IMAGE_BYTES = 256 * 1024


def read_attachments(paths: Sequence[str]) -> tuple[Image, ...]:
    """The attached files as checked images, in order; one MediaError naming every file that is not a
    usable image (not an image, truncated, too large)."""
    images, problems = [], []
    for path in paths:
        name = Path(path).name
        try:
            images.append(Image.from_bytes(Path(path).read_bytes(), what=name))
        except MediaError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{name} cannot be read: {exc.strerror or exc}")
    if problems:
        raise MediaError("; ".join(problems))
    return tuple(images)


def image_file(image: Image) -> str:
    """The image's own bytes as a file (``<sha256>.png``)."""
    path = FOLDER / image.file_name
    if not path.is_file():
        atomic_write_bytes(path, image.data)
    return str(path)


def thumbnail_file(image: Image) -> str:
    """A copy at most `THUMBNAIL_SIDE` pixels a side (WebP, transparency kept); a small image as it is."""
    if max(image.width, image.height) <= THUMBNAIL_SIDE and len(image.data) <= SMALL_IMAGE_BYTES:
        return image_file(image)
    path = FOLDER / f"{image.sha256}-{THUMBNAIL_SIDE}.webp"
    if not path.is_file():
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(image.data)) as picture:
            picture.seek(0)  # an animation's first frame
            small = picture.convert("RGBA")
        small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        small.save(out, format="WEBP", quality=85)
        atomic_write_bytes(path, out.getvalue())
    return str(path)
