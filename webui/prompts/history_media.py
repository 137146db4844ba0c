"""The images of chat histories, in their two forms.

- Inline, as ``data:`` URLs: what `ChatHistory.to_dict` / `to_json` give (an exported chat carries its
  images; the UI keeps a chat in this form between clicks). Both directions are cached, so turning the same
  chat into a dict and back on every click or streamed token does not re-encode or re-decode its images.
- As files beside a saved chat (`MediaFolder`): ``<chat id>.media/<sha256>.<ext>``, each image once; the
  chat's JSON names them. Files are written before the JSON that names them and removed only after a JSON
  that no longer names them is written, so a crash at any point leaves a chat whose images all exist.
"""

from __future__ import annotations

import re
import shutil
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from webui.media import Image, MediaError
from webui.safe_files import atomic_write_bytes, path_inside

#: The folder of a saved chat's images: ``<chat id>.media`` beside ``<chat id>.json``.
MEDIA_SUFFIX = ".media"
#: Turn metadata: why some of the turn's images could not be loaded (a list of sentences, oldest first).
MEDIA_NOTES = "media_notes"
#: What a stored image's file name looks like (`Image.file_name`): nothing else is read or removed.
IMAGE_FILE = re.compile(r"[0-9a-f]{64}\.(?:png|jpg|webp|gif|bmp)")
#: Most characters of data URLs kept ready for `inline` (the UI re-sends a chat's dict on every token).
_INLINE_CACHE_CHARS = 256 * 2**20

_lock = threading.Lock()
_inline: OrderedDict[str, str] = OrderedDict()  # sha256 -> data URL, least recently used first
_decoded: weakref.WeakValueDictionary[str, Image] = weakref.WeakValueDictionary()  # data URL -> Image


def inline(image: Image) -> str:
    """The image as a ``data:`` URL, the same string object for the same image while it is cached."""
    with _lock:
        url = _inline.get(image.sha256)
        if url is not None:
            _inline.move_to_end(image.sha256)
            return url
    url = image.data_url()
    with _lock:
        _inline[image.sha256] = url
        _decoded[url] = image  # reading the URL back (the UI's next click) gives this image unread
        total = sum(map(len, _inline.values()))
        while total > _INLINE_CACHE_CHARS and len(_inline) > 1:
            total -= len(_inline.popitem(last=False)[1])
    return url


def from_inline(url: str, what: str) -> Image:
    """The image of a ``data:`` URL (checked as `Image.from_data_url` does), reused while it is alive."""
    with _lock:
        known = _decoded.get(url)
    if known is not None:
        return known
    image = Image.from_data_url(url, what)
    with _lock:
        _decoded[url] = image
    return image


class MediaFolder:
    """The images of one saved chat: ``<chat id>.media/`` holding ``<sha256>.<ext>`` files."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        """The path of a stored image named `name` (an `Image.file_name`); MediaError for any other name."""
        if not IMAGE_FILE.fullmatch(name):
            raise MediaError(f"{name!r} is not the name of a stored image (<sha256>.png, .jpg, ...)")
        return path_inside(self.path, name, what="image")

    def write(self, images: Iterable[Image]) -> None:
        """Store each image not stored yet, each atomically (a file of the right name and size is kept:
        names are content hashes)."""
        for image in images:
            target = self.file(image.file_name)
            if not (target.is_file() and target.stat().st_size == len(image.data)):
                atomic_write_bytes(target, image.data)

    def read(self, name: str) -> Image:
        """The stored image `name`, checked; MediaError saying what is wrong (missing, unreadable, changed)."""
        path = self.file(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MediaError(f"{name} is missing from {self.path.name}") from None
        except OSError as exc:
            raise MediaError(f"{name} cannot be read: {exc.strerror or exc}") from None
        image = Image.from_bytes(data, name)
        if image.file_name != name:
            raise MediaError(
                f"{name} was changed after it was saved (its content no longer matches its name)"
            )
        return image

    def prune(self, keep: set[str]) -> None:
        """Remove stored images not in `keep` (file names), and the folder once it is empty."""
        if not self.path.is_dir():
            return
        for path in self.path.iterdir():
            if IMAGE_FILE.fullmatch(path.name) and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)
        if not keep and not any(self.path.iterdir()):
            self.path.rmdir()

    def remove(self) -> None:
        """Remove the folder with everything in it (the chat is being deleted or renamed)."""
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
