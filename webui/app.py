"""The App: every long-lived object of a running Hearth, built once and passed explicitly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pluggy

from webui.config import Settings
from webui.extensions import ExtensionManager
from webui.generation import GenerationCore
from webui.jobs import JobBoard
from webui.loader_api import Loader
from webui.model_pool import ModelPool
from webui.models import ModelManager
from webui.plugins import collect_loaders, make_plugin_manager
from webui.remotes import FILE_NAME as REMOTES_FILE
from webui.remotes import RemoteRegistry
from webui.safe_files import remove_crash_leftovers

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    plugins: pluggy.PluginManager
    loaders: dict[str, type[Loader]]
    models: ModelManager
    core: GenerationCore
    extensions: ExtensionManager | None = field(default=None)
    #: Long jobs (training, evaluation) of this App, one of each kind at a time.
    jobs: JobBoard = field(default_factory=JobBoard)
    #: Every loaded model: the UI's (`models`, `core`) and those the API loaded by name (`webui.model_pool`).
    pool: ModelPool = field(init=False)
    #: This process's resident memory once the libraries were imported, before any model (Model tab).
    base_rss: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.pool = ModelPool(self)
        self.base_rss = _rss()

    @classmethod
    def create(cls, settings: Settings, plugins: pluggy.PluginManager | None = None) -> App:
        remove_crash_leftovers(settings)
        plugins = plugins or make_plugin_manager()
        loaders = collect_loaders(plugins)
        models = ModelManager(settings.models_dir, loaders, allow_remote_code=settings.allow_remote_code,
                              remotes=RemoteRegistry(settings.user_data_dir / REMOTES_FILE))
        extensions = ExtensionManager(plugins, settings)  # enabled from Settings.extensions below
        app = cls(settings, plugins, loaders, models, GenerationCore(models, extensions), extensions)
        extensions.start(app)
        return app

    def close(self) -> None:
        """Unload every model the API loaded by name and stop the idle timer (the UI's model stays)."""
        self.pool.close()

    def load_startup_model(self) -> None:
        """Load --model with --loader and the loader flags given (errors propagate to the caller)."""
        if not self.settings.model:
            return
        loader = self.settings.loader or self.models.choose_loader(self.models.resolve_path(self.settings.model).path)
        known = {p.name for p in self.loaders[loader].params} if loader in self.loaders else set()
        params = {k: v for k, v in self.settings.loader_args.items() if k in known}
        self.models.load_path(self.settings.model, loader, params)  # the command line may name a path


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)
