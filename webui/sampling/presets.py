"""Presets: NAME.yaml files, each holding only the values that differ from neutral.

Storing only the differences keeps files short and readable, and lets a preset survive new samplers:
a field added later starts neutral. Two folders hold them (`PresetLibrary`): the shipped ones in the install
folder (``Settings.presets_dir``, never written by the UI) and the user's in ``user_data/presets``, whose
files win on a name clash, so saving a shipped preset's name makes a user copy and an update never clobbers
it. Names come from people (the UI's "Save as" box) and API clients, so a name that is not one plain file
name is refused before anything is read or written (`safe_files.UnsafeNameError`); writes are atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from webui.safe_files import atomic_write_text, is_plain_name, path_inside
from webui.sampling.params import SamplingError, SamplingParams

if TYPE_CHECKING:
    from webui.config import Settings

#: One presets folder, or several searched in order (the first holding a name wins).
PresetFolders = Path | Sequence[Path]


def _folders(presets_dirs: PresetFolders) -> list[Path]:
    return [Path(presets_dirs)] if isinstance(presets_dirs, str | Path) else [Path(p) for p in presets_dirs]


def _path(presets_dir: Path, name: str) -> Path:
    if not str(name).strip(" ."):
        raise SamplingError("a preset needs a name")
    return path_inside(Path(presets_dir), name, ".yaml", what="preset name")


def list_presets(presets_dirs: PresetFolders) -> list[str]:
    """Preset names (file stems) of every folder, once each, case-insensitively sorted; a folder that does
    not exist has none."""
    stems = {p.stem for folder in _folders(presets_dirs) for p in folder.glob("*.yaml")}
    return sorted((s for s in stems if is_plain_name(s)), key=str.lower)


def load_preset(presets_dirs: PresetFolders, name: str) -> SamplingParams:
    """Neutral defaults updated by the preset's values (from the first folder that has it); a bad file is a
    SamplingError naming it."""
    paths = [_path(folder, name) for folder in _folders(presets_dirs)]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise SamplingError(
            f"no preset named {name!r}; available: {', '.join(list_presets(presets_dirs)) or 'none'}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SamplingError(f"preset {path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SamplingError(f"preset {path.name} must be a mapping of sampler names to values")
    try:
        return SamplingParams(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SamplingError(f"preset {path.name}: {problems}") from None


def save_preset(presets_dir: Path, name: str, params: SamplingParams) -> Path:
    """Write only the non-neutral values, atomically. Returns the file written."""
    path = _path(presets_dir, name)
    text = yaml.safe_dump(params.non_neutral(), allow_unicode=True, sort_keys=False)
    atomic_write_text(path, "" if text.strip() == "{}" else text)
    return path


def delete_preset(presets_dir: Path, name: str) -> None:
    """Remove a preset file; a missing one is a SamplingError (the UI shows it)."""
    path = _path(presets_dir, name)
    if not path.is_file():
        raise SamplingError(f"no preset named {name!r}")
    path.unlink()


def user_presets_dir(user_data_dir: Path) -> Path:
    """Where presets a user saves go: never among the shipped ones, so an update cannot clobber them."""
    return Path(user_data_dir) / "presets"


@dataclass(frozen=True)
class PresetLibrary:
    """The shipped presets (read-only here) plus the user's own, which win on a name clash."""

    shipped: Path
    user: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> PresetLibrary:
        return cls(Path(settings.presets_dir), user_presets_dir(settings.user_data_dir))

    @property
    def folders(self) -> tuple[Path, Path]:
        """Search order for `load_preset` (API callers pass this): the user's folder first."""
        return (self.user, self.shipped)

    def names(self) -> list[str]:
        return list_presets(self.folders)

    def is_shipped(self, name: str) -> bool:
        """Whether `name` is a shipped preset, ignoring case (as Windows and macOS file systems do)."""
        return str(name).strip().lower() in {n.lower() for n in list_presets(self.shipped)}

    def is_user(self, name: str) -> bool:
        return _path(self.user, name).is_file()

    def load(self, name: str) -> SamplingParams:
        return load_preset(self.folders, name)

    def save(self, name: str, params: SamplingParams) -> tuple[Path, bool]:
        """Write a user preset; returns (path, whether it overrides a shipped preset of that name)."""
        return save_preset(self.user, name, params), self.is_shipped(name)

    def delete(self, name: str) -> bool:
        """Remove a user preset; returns whether a shipped preset of that name shows again. A shipped
        preset itself cannot be deleted (a SamplingError says so)."""
        if self.is_user(name):
            delete_preset(self.user, name)
            return self.is_shipped(name)
        if self.is_shipped(name):
            raise SamplingError(f"{name!r} is shipped with Hearth and cannot be deleted")
        raise SamplingError(f"no preset named {name!r}")
