"""Names a client may send in `model` besides the models' own: ``user_data/model_aliases.yaml``.

One ``alias: model name`` per line; an empty target means the UI's model (``gpt-3.5-turbo: ""`` for a client
that always sends that name). The file is re-read when it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from webui.errors import HearthError, ModelNotFound

ALIASES_FILE = "model_aliases.yaml"


class AliasFile:
    """The aliases of one user_data folder, read again whenever the file's modification time changes."""

    def __init__(self, user_data_dir: Path):
        self.path = user_data_dir / ALIASES_FILE
        self._read: tuple[float, dict[str, str]] = (-1.0, {})

    def aliases(self) -> dict[str, str]:
        """alias -> model name ('' = the UI's model); a malformed file is an error naming it."""
        mtime = self.path.stat().st_mtime if self.path.is_file() else 0.0
        if mtime != self._read[0]:
            self._read = (mtime, self._parse() if mtime else {})
        return self._read[1]

    def _parse(self) -> dict[str, str]:
        try:
            data: Any = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise HearthError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str | None) for v in data.values()):
            raise HearthError(f"{self.path} must map alias names to model names")
        return {str(k): v or "" for k, v in data.items()}


def unknown_model(name: str, models: list[str], aliases: list[str]) -> ModelNotFound:
    """The 404 of a `model` that names nothing: the models and aliases there are."""
    listed = ", ".join(aliases)
    error = ModelNotFound(f"model: no model named {name!r}. Models: {', '.join(models) or 'none'}"
                          + (f"; aliases: {listed}" if listed else ""))
    error.param = "model"  # type: ignore[attr-defined]  # the API's error names the field
    return error
