"""Per-model load settings: ``user_data/models/<model>.yaml`` holding the loader and its parameters.

Saved from the Model tab ("save settings for this model") and applied whenever that model is selected or
loaded, so a model that needs, say, a smaller n_ctx or a different loader gets it without retyping. Values
are validated against the loader's `LoaderParam` declarations both when saving and when reading: a file
edited by hand into nonsense is reported, never silently half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webui.errors import HearthError, LoaderError
from webui.models import ModelManager
from webui.remotes import FILE_NAME as REMOTES_FILE
from webui.remotes import PREFIX as REMOTE_PREFIX
from webui.safe_files import atomic_write_text, path_inside


class ModelSettingsError(HearthError):
    """A per-model settings file is unreadable, malformed, or names an unknown loader or parameter."""


@dataclass(frozen=True)
class ModelSettings:
    """What to load a model with. ``saved`` says whether it came from the model's settings file."""

    loader: str
    params: dict[str, Any] = field(default_factory=dict)
    saved: bool = False


def settings_path(user_data_dir: Path, model_name: str) -> Path:
    """Where a model's settings live; the model name cannot escape the folder."""
    return path_inside(user_data_dir / "models", model_name, ".yaml")


def read_saved(user_data_dir: Path, model_name: str) -> dict[str, Any] | None:
    """The raw ``{"loader": str, "params": dict}`` saved for a model, or None when there is none."""
    path = settings_path(user_data_dir, model_name)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelSettingsError(f"cannot read {path.name}: {exc}") from None
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("params", {}), dict):
        raise ModelSettingsError(f"{path.name} must hold a mapping with 'loader' and a 'params' mapping")
    loader = data.get("loader")
    if loader is not None and not isinstance(loader, str):
        raise ModelSettingsError(f"{path.name}: 'loader' must be a loader name")
    return {"loader": loader, "params": dict(data.get("params") or {})}


def settings_for(models: ModelManager, user_data_dir: Path, model_name: str) -> ModelSettings:
    """The loader and parameters to use for a model: its saved settings over the loader's defaults.

    Without a settings file the best loader for the model is chosen with its default parameters.
    Raises ModelSettingsError for a bad settings file (unknown loader, invalid value)."""
    saved = read_saved(user_data_dir, model_name)
    local = models.resolve(model_name)
    loader_name = (saved or {}).get("loader") or models.choose_loader(local.path)
    if loader_name not in models.loaders:
        raise ModelSettingsError(
            f"{model_name}: saved loader {loader_name!r} is not installed (have: {', '.join(models.loaders)})"
        )
    try:
        params = models.loaders[loader_name].resolve_params((saved or {}).get("params"))
    except LoaderError as exc:
        raise ModelSettingsError(f"{model_name}: saved settings are invalid: {exc}") from None
    return ModelSettings(loader_name, params, saved is not None)


def save_settings(
    models: ModelManager, user_data_dir: Path, model_name: str, loader: str, params: dict[str, Any]
) -> Path:
    """Validate and save a model's loader and parameters (only values that differ from the defaults,
    so a later change of a loader's default still reaches models that never set it)."""
    if model_name.startswith(REMOTE_PREFIX):
        raise ModelSettingsError(f"{model_name} is a remote server's model: its settings live in "
                                 f"{user_data_dir / REMOTES_FILE}, edit them there")
    models.resolve(model_name)
    cls = models.get_loader(loader)
    resolved = cls.resolve_params(params)
    # a secret (an API key) is never written to a settings file
    changed = {p.name: resolved[p.name] for p in cls.params if resolved[p.name] != p.default and not p.secret}
    path = settings_path(user_data_dir, model_name)
    atomic_write_text(path, yaml.safe_dump({"loader": loader, "params": changed}, sort_keys=False))
    return path


def delete_settings(user_data_dir: Path, model_name: str) -> bool:
    """Forget a model's saved settings; returns whether there were any."""
    path = settings_path(user_data_dir, model_name)
    if path.is_file():
        path.unlink()
        return True
    return False
