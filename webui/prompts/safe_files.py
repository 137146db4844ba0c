"""Safe names and atomic writes for the user data folder.

Character names and chat names come from people and from downloaded cards, so they are untrusted: a name
like ``../../etc/passwd`` must land inside its folder as a plain file name. Saves go through a temp file
and ``os.replace`` so a crash or a full disk mid-save leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

_MAX_NAME = 100
_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
_FORBIDDEN = re.compile(r'[/\\:*?"<>|]')


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """Turn an untrusted name into one file-name component that cannot leave its folder.

    Unicode letters are kept (people name characters in their own script); path separators, characters
    Windows forbids, control characters and leading dots are removed, so '..' and hidden files cannot occur.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _FORBIDDEN.sub("_", text)
    text = re.sub(r"\s+", " ", text).strip(" .")
    text = re.sub(r"\.{2,}", ".", text)
    text = text[:_MAX_NAME].strip(" .")
    if not text:
        return fallback
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def path_inside(folder: Path, name: str, suffix: str = "") -> Path:
    """The path of ``safe_name(name) + suffix`` in ``folder``, checked to resolve inside it."""
    candidate = folder / (safe_name(name) + suffix)
    root = folder.resolve()
    if candidate.resolve().parent != root:
        raise ValueError(f"{name!r} does not name a file inside {folder}")
    return candidate


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
