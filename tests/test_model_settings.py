"""Per-model settings files: round trip, defaults, validation, hostile names, corrupt files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webui.errors import LoaderError, ModelNotFound
from webui.model_settings import (
    ModelSettingsError,
    delete_settings,
    save_settings,
    settings_for,
    settings_path,
)
from webui.models import ModelManager
from webui.safe_files import UnsafeNameError

GGUF = "tiny-llama.gguf"


def test_defaults_without_a_file(manager: ModelManager, tmp_path: Path) -> None:
    chosen = settings_for(manager, tmp_path, GGUF)
    assert chosen.loader == manager.choose_loader(manager.resolve(GGUF).path)
    assert chosen.params == manager.loaders[chosen.loader].resolve_params({})
    assert not chosen.saved


def test_round_trip_keeps_only_changed_values(manager: ModelManager, tmp_path: Path) -> None:
    loader = settings_for(manager, tmp_path, GGUF).loader
    path = save_settings(manager, tmp_path, GGUF, loader, {"n_ctx": "256", "flash_attn": False})
    assert path == tmp_path / "models" / f"{GGUF}.yaml"
    assert yaml.safe_load(path.read_text()) == {"loader": loader, "params": {"n_ctx": 256}}
    chosen = settings_for(manager, tmp_path, GGUF)
    assert chosen.saved and chosen.params["n_ctx"] == 256 and chosen.params["n_batch"] == 512
    assert delete_settings(tmp_path, GGUF) and not delete_settings(tmp_path, GGUF)
    assert not settings_for(manager, tmp_path, GGUF).saved


def test_saved_loader_overrides_the_choice(manager: ModelManager, tmp_path: Path) -> None:
    candidates = [name for name, _ in manager.loader_scores(manager.resolve(GGUF).path)]
    other = candidates[-1]
    save_settings(manager, tmp_path, GGUF, other, {})
    assert settings_for(manager, tmp_path, GGUF).loader == other


def test_save_rejects_bad_values(manager: ModelManager, tmp_path: Path) -> None:
    loader = settings_for(manager, tmp_path, GGUF).loader
    with pytest.raises(LoaderError, match="n_ctx"):
        save_settings(manager, tmp_path, GGUF, loader, {"n_ctx": -5})
    with pytest.raises(LoaderError, match="unknown loader"):
        save_settings(manager, tmp_path, GGUF, "nope", {})
    with pytest.raises(ModelNotFound):
        save_settings(manager, tmp_path, "missing.gguf", loader, {})
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loader: [1, 2\n", "cannot read"),
        ("- just a list\n", "mapping"),
        ("loader: nope\n", "not installed"),
        ("params: {n_ctx: lots}\n", "n_ctx"),
        ("params: {no_such_param: 1}\n", "no_such_param"),
    ],
)
def test_corrupt_files_are_reported(manager: ModelManager, tmp_path: Path, text: str, message: str) -> None:
    path = settings_path(tmp_path, GGUF)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ModelSettingsError, match=message):
        settings_for(manager, tmp_path, GGUF)


def test_names_stay_inside_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UnsafeNameError):
        settings_path(tmp_path, "../../etc/passwd")
    assert settings_path(tmp_path, "mistral-7b.Q4_K_M.gguf").parent == tmp_path / "models"


def test_a_secret_is_never_saved_and_a_remote_points_to_remotes_yaml(manager: ModelManager, tmp_path: Path) -> None:
    path = save_settings(manager, tmp_path, "tiny-llama.gguf", "Remote",
                         {"remote_url": "http://10.0.0.5:8000", "remote_api_key": "sk-secret"})
    saved = yaml.safe_load(path.read_text())["params"]
    assert saved == {"remote_url": "http://10.0.0.5:8000"} and "sk-secret" not in path.read_text()
    with pytest.raises(ModelSettingsError, match="remotes.yaml"):
        save_settings(manager, tmp_path, "remote:gpu/llama", "Remote", {})
