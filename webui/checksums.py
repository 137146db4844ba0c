"""Checking downloaded files against the Hub's own hashes: sha256 for LFS files, the git blob id for the rest.

The Hub lists an LFS file's sha256 and, for every other file, its git blob id (sha1 of ``b"blob <size>\\0"``
followed by the content). A file that does not match is deleted; a file already on disk is re-hashed rather
than trusted for having the right size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from webui.hub import ChecksumMismatch, RemoteFile

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    """What a file must hash to: ``kind`` is ``sha256`` or ``git`` (a git blob id)."""

    kind: str
    value: str

    def of(self, path: Path) -> str:
        """This kind of hash of the file at ``path``."""
        digest = (
            hashlib.sha256() if self.kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
        )
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def matches(self, path: Path) -> bool:
        return self.of(path) == self.value


def expected_digest(file: RemoteFile, etag: str | None = None) -> Digest | None:
    """The Hub's hash for a file: its LFS sha256, else its git blob id; the resolve ETag stands in for a
    listing without them (the Hub's ETag is the sha256 for LFS files and the blob id for the rest)."""
    if file.sha256:
        return Digest("sha256", file.sha256.lower())
    if file.blob_id:
        return Digest("git", file.blob_id.lower())
    tag = (etag or "").strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{64}", tag):
        return Digest("sha256", tag)
    if re.fullmatch(r"[0-9a-f]{40}", tag):
        return Digest("git", tag)
    return None


def verify(path: Path, digest: Digest | None, name: str) -> None:
    """Delete ``path`` and raise `ChecksumMismatch` when it does not hash to ``digest``."""
    if digest is None:
        return
    actual = digest.of(path)
    if actual != digest.value:
        path.unlink()
        label = "sha256" if digest.kind == "sha256" else "git blob id"
        raise ChecksumMismatch(
            f"{name}: {label} {actual[:12]}… does not match the Hub's {digest.value[:12]}…; the bad file was deleted"
        )


def already_complete(path: Path, file: RemoteFile) -> bool:
    """A file in place with the listed size and, where the Hub gives one, the listed hash."""
    if not path.is_file() or path.stat().st_size != file.size:
        return False
    digest = expected_digest(file)
    return digest is None or digest.matches(path)
