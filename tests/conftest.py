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
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random vision model (Gemma 3 architecture, tests/vision_models.py) as a Hugging Face folder."""
    from tests.vision_models import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vision") / "tiny-vlm")


@pytest.fixture(scope="session")
def vlm_gguf_dir(vlm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny vision model as llama.cpp files (tests/vision_gguf.py: llama.cpp's own converter): a
    models folder holding tiny-vlm-gguf/ (the text GGUF and its mmproj projector)."""
    from tests.vision_gguf import build_vlm_gguf

    root = tmp_path_factory.mktemp("vision-gguf")
    build_vlm_gguf(vlm_dir, root / "tiny-vlm-gguf")
    return root


@pytest.fixture(scope="session")
def loaders() -> dict:
    return collect_loaders(make_plugin_manager())


@pytest.fixture
def manager(models_dir: Path, loaders: dict) -> ModelManager:
    manager = ModelManager(models_dir, loaders)
    yield manager
    manager.unload()


# -- the scripted fake model (tests/scripted_loader.py), a loader plugin registered through the real hook --
@pytest.fixture
def scripted_plugins():
    """A plugin manager with the built-in loaders plus the scripted loader, registered the way a plugin is:
    its module's ``hearth_loaders`` hookimpl. Installed entry points are left out."""
    from tests import scripted_loader

    plugins = make_plugin_manager(load_entry_points=False)
    plugins.register(scripted_loader, name="tests.scripted_loader")
    return plugins


@pytest.fixture
def scripted_manager(tmp_path: Path, scripted_plugins) -> ModelManager:
    """A model manager over an empty models folder (`say` writes scripts into it), with every loader."""
    manager = ModelManager(tmp_path / "scripted-models", collect_loaders(scripted_plugins))
    yield manager
    manager.unload()


@pytest.fixture
def say(scripted_manager: ModelManager):
    """``say(["Hel", "lo"], ..., n_ctx=256, filler=" ", vision=0, native_greedy=False)``: write a scripted
    model saying those replies into the models folder and load it by name, the loader chosen by its score
    (`vision`: the most images a prompt may carry; `image_cost`: the tokens each takes)."""
    from itertools import count

    from tests.scripted_loader import write_script

    names = count()

    def load(*replies: list[str], n_ctx: int = 256, filler: str = " ", vision: int = 0, image_cost: int = 1,
             **params: object):
        name = f"script-{next(names)}"
        write_script(scripted_manager.models_dir, name, *replies, n_ctx=n_ctx, filler=filler, vision=vision,
                     image_cost=image_cost)
        return scripted_manager.load(name, params=params)

    return load


@pytest.fixture
def scripted_app(tmp_path: Path, scripted_plugins):
    """A real App (extensions, chat service, core) whose plugin manager holds the scripted loader; load a
    model with ``write_script(app.settings.models_dir, ...)`` and ``app.models.load(name)``."""
    from webui.app import App
    from webui.config import Settings

    app = App.create(Settings(models_dir=tmp_path / "scripted-models", user_data_dir=tmp_path / "user"),
                     plugins=scripted_plugins)
    yield app
    app.models.unload()
