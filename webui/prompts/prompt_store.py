"""Saved prompts for the Default and Notebook tabs: ``user_data/prompts/<name>.txt``.

Prompt names are typed by people, so a name that is not one plain file name is refused (`path_inside`:
no path escapes, nothing written) and saves are atomic (a crash mid-save keeps the previous text). Plain .txt files so people can edit them outside Hearth.
"""

from __future__ import annotations

from pathlib import Path

from webui.errors import HearthError
from webui.safe_files import atomic_write_text, is_plain_name, path_inside

SUFFIX = ".txt"


class PromptStoreError(HearthError):
    """A saved prompt that is missing or cannot be read."""


class PromptStore:
    """A folder of named text prompts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_user_data(cls, user_data_dir: Path) -> PromptStore:
        return cls(user_data_dir / "prompts")

    def names(self) -> list[str]:
        """Saved prompt names, sorted case-insensitively (what the dropdown shows)."""
        if not self.folder.is_dir():
            return []
        stems = (p.stem for p in self.folder.glob(f"*{SUFFIX}") if p.is_file())
        return sorted((s for s in stems if is_plain_name(s)), key=str.lower)

    def save(self, name: str, text: str) -> str:
        """Write the prompt atomically; returns the name it was saved under (surrounding spaces trimmed)."""
        if not name.strip():
            raise PromptStoreError("give the prompt a name before saving it")
        path = path_inside(self.folder, name, SUFFIX, what="prompt name")
        atomic_write_text(path, text)
        return path.stem

    def load(self, name: str) -> str:
        path = path_inside(self.folder, name, SUFFIX, what="prompt name")
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PromptStoreError(f"no saved prompt named {path.stem!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptStoreError(f"cannot read prompt {path.stem!r}: {exc}") from exc

    def delete(self, name: str) -> None:
        path = path_inside(self.folder, name, SUFFIX, what="prompt name")
        if not path.is_file():
            raise PromptStoreError(f"no saved prompt named {path.stem!r}")
        path.unlink()
