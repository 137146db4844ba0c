"""Shared fixtures: tiny random models built once per session (no downloads), and the real App parts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.model_factory import build_pair  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder holding tiny-llama (HF folder) and tiny-llama.gguf: the same weights twice."""
    root = tmp_path_factory.mktemp("models")
    build_pair(root)
    return root


@pytest.fixture(scope="session")
def loaders() -> dict:
    return collect_loaders(make_plugin_manager())


@pytest.fixture
def manager(models_dir: Path, loaders: dict) -> ModelManager:
    manager = ModelManager(models_dir, loaders)
    yield manager
    manager.unload()
