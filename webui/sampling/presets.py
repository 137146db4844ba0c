"""Presets: presets/NAME.yaml, each holding only the values that differ from neutral.

Storing only the differences keeps files short and readable, and lets a preset survive new samplers:
a field added later starts neutral. Names come from people (the UI's "Save as" box) and API clients, so a
name that is not one plain file name is refused before anything is read or written
(`safe_files.UnsafeNameError`); writes are atomic (temp file + os.replace).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from webui.prompts.safe_files import atomic_write_text, is_plain_name, path_inside
from webui.sampling.params import SamplingError, SamplingParams


def _path(presets_dir: Path, name: str) -> Path:
    if not str(name).strip(" ."):
        raise SamplingError("a preset needs a name")
    return path_inside(Path(presets_dir), name, ".yaml", what="preset name")


def list_presets(presets_dir: Path) -> list[str]:
    """Preset names (file stems), case-insensitively sorted; none when the folder does not exist."""
    stems = (p.stem for p in Path(presets_dir).glob("*.yaml"))
    return sorted((s for s in stems if is_plain_name(s)), key=str.lower)


def load_preset(presets_dir: Path, name: str) -> SamplingParams:
    """Neutral defaults updated by the preset's values; a bad file is a SamplingError naming it."""
    path = _path(presets_dir, name)
    if not path.is_file():
        raise SamplingError(
            f"no preset named {name!r}; available: {', '.join(list_presets(presets_dir)) or 'none'}"
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
