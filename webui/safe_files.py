"""Safe names, atomic writes and crash leftovers for Hearth's data folders: the one place a name becomes a path.

Names of characters, chats, presets, prompts, templates and downloaded files come from people, from
downloaded cards and from remote servers, so they are untrusted. Two rules, both here:

- `path_inside` (and `relative_path_inside` for a hub's ``a/b.json``) *refuses* a name that is not one
  plain file name: ``..``, separators, absolute or drive paths, NUL and control characters, a leading dot,
  Windows' reserved names and forbidden characters. A refusal is an `UnsafeNameError` raised before anything
  touches the disk.
- `safe_name` *turns* free text (a card's display name, a chat title) into a name that passes that check,
  for the places where Hearth itself chooses a file name from content.

Saves go through a hidden temp file and ``os.replace`` so a crash or a full disk mid-save leaves the previous
file intact; `remove_stale_temp_files` clears the temp files a crash leaves behind.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from webui.errors import HearthError

if TYPE_CHECKING:
    from webui.config import Settings

log = logging.getLogger(__name__)

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
#: Hearth's atomic-write temp names: ``.<target>.hearth-XXXXXXXX.tmp`` (older versions: no ``hearth-``).
TEMP_MARK = "hearth-"
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?:hearth-)?[a-z0-9_]{8}\.tmp")
#: A temp file younger than this may belong to a save in progress (another process, another thread).
STALE_AFTER_S = 30.0


class UnsafeNameError(HearthError, ValueError):
    """A name that would not stay one plain file inside its folder; nothing was read or written."""


def check_name(name: str, what: str = "name", *, allow_hidden: bool = False) -> str:
    """The name (NFC, surrounding spaces removed) when it is one plain file name; else `UnsafeNameError`.

    Unicode letters and spaces are fine (people name characters in their own script). ``allow_hidden``
    admits a leading dot for files a remote repo ships (``.gitattributes``); ``.`` and ``..`` never pass."""
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be text, got {type(name).__name__}")
    text = unicodedata.normalize("NFC", name).strip()
    problem = _name_problem(text, allow_hidden)
    if problem:
        raise UnsafeNameError(f"{what} {name!r} is not allowed: {problem}")
    return text


def _name_problem(text: str, allow_hidden: bool) -> str | None:
    if not text:
        return "it is empty"
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        return "it contains NUL or control characters"
    if text in (".", ".."):
        return "it names a folder, not a file"
    if _FORBIDDEN.search(text) or PureWindowsPath(text).drive or PurePosixPath(text).is_absolute():
        return 'names may not contain / \\ : * ? " < > | (no paths)'
    if text.startswith(".") and not allow_hidden:
        return "names may not start with a dot"
    if text.endswith("."):
        return "names may not end with a dot"
    if text.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        return "it is a reserved device name on Windows"
    if len(text) > _MAX_NAME:
        return f"names are at most {_MAX_NAME} characters"
    return None


def is_plain_name(name: str) -> bool:
    """Whether `check_name` accepts the name (lists skip files named outside Hearth that it would refuse)."""
    return isinstance(name, str) and _name_problem(unicodedata.normalize("NFC", name).strip(), False) is None


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """Turn free text into a name `check_name` accepts (for file names Hearth derives from content).

    Path separators, characters Windows forbids, control characters and leading dots are removed or
    replaced, so '..' and hidden files cannot occur; reserved device names get a leading underscore."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _FORBIDDEN.sub("_", text)
    text = re.sub(r"\s+", " ", text).strip(" .")
    text = re.sub(r"\.{2,}", ".", text)
    text = text[:_MAX_NAME].strip(" .")
    if not text:
        return fallback
    if text.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def path_inside(folder: Path, name: str, suffix: str = "", *, what: str = "name") -> Path:
    """``folder / (name + suffix)`` for a name `check_name` accepts, checked to resolve inside ``folder``."""
    candidate = folder / (check_name(name, what) + suffix)
    _ensure_inside(folder, candidate, name, what)
    return candidate


def relative_path_inside(folder: Path, relative: str, what: str = "file name") -> Path:
    """``folder / relative`` for a ``/``-separated path of plain names (a hub repo's ``sub/file.json``)."""
    if not isinstance(relative, str) or not relative or relative.startswith("/"):
        raise UnsafeNameError(f"{what} {relative!r} is not allowed: it must be a relative path")
    parts = [check_name(part, what, allow_hidden=True) for part in relative.split("/")]
    candidate = folder.joinpath(*parts)
    _ensure_inside(folder, candidate, relative, what)
    return candidate


def _ensure_inside(folder: Path, candidate: Path, name: str, what: str) -> None:
    """Refuse a candidate that a symlink (or anything else) resolves outside the folder."""
    if not candidate.resolve().is_relative_to(folder.resolve()):
        raise UnsafeNameError(f"{what} {name!r} does not name a file inside {folder}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp")
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


def temp_target(name: str) -> str | None:
    """The file a temp file of `atomic_write_bytes` was going to replace; None for any other name."""
    found = _TEMP_NAME.fullmatch(name)
    return found.group("target") if found else None


def remove_stale_temp_files(
    folders: Iterable[Path],
    *,
    recursive: bool = True,
    older_than: float = STALE_AFTER_S,
    targets: Iterable[str] | None = None,
) -> list[Path]:
    """Delete the temp files a crash mid-save left behind (only those saving one of ``targets``, if given);
    returns what was removed.

    Only Hearth's own temp names are touched, and only when untouched for ``older_than`` seconds: a save
    in progress writes and renames its temp file within that time."""
    removed: list[Path] = []
    cutoff = time.time() - older_than
    wanted = set(targets) if targets is not None else None
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
            target = temp_target(path.name)
            if target is None or (wanted is not None and target not in wanted):
                continue
            try:
                if path.is_file() and not path.is_symlink():
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
            except OSError:
                continue  # gone meanwhile, or not ours to delete: never stop the app over it
    return removed


def remove_crash_leftovers(settings: Settings) -> list[Path]:
    """At start: stale temp files under user_data/ (chats, characters, prompts, ...), presets/ and next to
    the settings file; logged so a person knows where the space went."""

    settings_file = settings.settings_path
    removed = [
        *remove_stale_temp_files([settings.user_data_dir]),
        *remove_stale_temp_files([settings.presets_dir], recursive=False),
        *remove_stale_temp_files([settings_file.parent], recursive=False, targets=[settings_file.name]),
    ]
    if removed:
        log.info(
            "removed %d temp file(s) left by an interrupted save: %s",
            len(removed),
            ", ".join(map(str, removed)),
        )
    return removed


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
