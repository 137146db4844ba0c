"""The model manager: what is in models/, which loader fits it, and the one loaded model.

Load and unload take the generation core's queue lock, so a model is never swapped under a running
generation. Names from the UI and the API resolve only to entries of the models folder (`resolve`, `load`);
only the command line may name a path elsewhere on disk (`resolve_path`, `load_path`). Models that run
their own Python code (`trust_remote_code`) load only when Hearth was started with --trust-remote-code.

A load runs every check that can fail (the loader fits the file, is installed, the parameters are valid,
remote code is allowed) before the loaded model is freed, so a refused load keeps the working model. A
load that fails after that point says that the previous model was unloaded; the manager's state is then
"no model", never a stale name.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.errors import HearthError, LoaderError, ModelNotFound, NoModelLoaded, RemoteCodeNotAllowed
from webui.fifo import FifoLock
from webui.gguf_files import is_projector_name, model_ggufs
from webui.loader_api import Loader, Model
from webui.remotes import PREFIX as REMOTE_PREFIX
from webui.remotes import RemoteRegistry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from webui.loras import AppliedLora

log = logging.getLogger(__name__)

#: Second and later shards of a split GGUF (model-00002-of-00003.gguf) are not separate models.
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)





@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    size_bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _as_model(entry: Path) -> LocalModel | None:
    """`entry` of a models folder as a model, or None: hidden entries, partial downloads (*.incomplete),
    non-first GGUF shards and multimodal projectors (mmproj, `webui.gguf_files`) are not models; a folder is
    one when it has a config.json or a model GGUF inside."""
    if entry.name.startswith(".") or entry.name.endswith(".incomplete"):
        return None
    if entry.is_file() and entry.suffix.lower() == ".gguf":
        shard = _SHARD.search(entry.name)
        if (shard and int(shard.group(1)) != 1) or is_projector_name(entry.name):
            return None
        return LocalModel(entry.name, entry, _size(entry))
    if entry.is_dir() and ((entry / "config.json").is_file() or model_ggufs(entry)):
        return LocalModel(entry.name, entry, _size(entry))
    return None


def discover_models(models_dir: Path) -> list[LocalModel]:
    """GGUF files and model folders in `models_dir`, sorted by name (case-insensitive)."""
    if not models_dir.is_dir():
        return []
    found = [model for entry in models_dir.iterdir() if (model := _as_model(entry)) is not None]
    return sorted(found, key=lambda m: m.name.lower())


def is_plain_name(name: str) -> bool:
    """A name that can only mean an entry of a folder: no separator or drive, not '', '.' or '..'."""
    path = Path(name)
    return name not in {"", ".", ".."} and not any(c in name for c in "\\\0") and path.name == name and not path.anchor


class ModelManager:
    """Discovers local models, picks loaders, holds the loaded model."""

    def __init__(self, models_dir: Path, loaders: dict[str, type[Loader]], lock: FifoLock | None = None, *,
                 allow_remote_code: bool = False, remotes: RemoteRegistry | None = None):
        self.models_dir = models_dir
        #: Servers of user_data/remotes.yaml, listed as ``remote:SERVER/MODEL`` beside the local models.
        self.remotes = remotes
        self.loaders = loaders
        #: `Settings.allow_remote_code`: trust_remote_code is refused unless Hearth was started with it.
        self.allow_remote_code = allow_remote_code
        #: Held by the generation core while a request runs; load/unload wait for it.
        self.lock = lock or FifoLock()
        self.model: Model | None = None
        self.model_name: str | None = None
        self.loader_name: str | None = None
        self.load_params: dict[str, Any] = {}
        self._default_torch_threads: int | None = None
        #: LoRA adapters applied to the loaded model, in order (cleared by every load and unload).
        self.loras: list[AppliedLora] = []

    def list_models(self) -> list[LocalModel]:
        remote = [LocalModel(e.name, Path(e.name), 0) for e in self.remotes.entries()] if self.remotes else []
        return discover_models(self.models_dir) + remote

    def resolve(self, name: str) -> LocalModel:
        """A model of the models folder by its name (as listed). Paths, '..' and anything not listed are
        ModelNotFound: names from the UI and the API never leave the folder. Looks at one entry only.
        ``remote:`` names resolve only to servers of remotes.yaml (`webui.remotes`)."""
        if self.remotes is not None and name.startswith(REMOTE_PREFIX):
            return LocalModel(self.remotes.resolve(name).name, Path(name), 0)
        model = _as_model(self.models_dir / name) if is_plain_name(name) else None
        if model is None:
            available = ", ".join(m.name for m in self.list_models()) or f"none (put models in {self.models_dir})"
            raise ModelNotFound(f"no model named {name!r} in the models folder. Available: {available}")
        return model

    def resolve_path(self, name: str) -> LocalModel:
        """For the command line (--model) only: a name in the models folder, or a path to a model anywhere."""
        if is_plain_name(name) and _as_model(self.models_dir / name) is not None:
            return self.resolve(name)
        path = Path(name)
        if path.exists() and (path.suffix.lower() == ".gguf" or path.is_dir()):
            return LocalModel(path.name, path, _size(path))
        return self.resolve(name)  # raises ModelNotFound listing what exists

    def loader_scores(self, path: Path) -> list[tuple[str, int]]:
        """Loaders that can load `path`, best first."""
        scored = [(name, cls.score(path)) for name, cls in self.loaders.items()]
        return sorted(((n, s) for n, s in scored if s > 0), key=lambda item: -item[1])

    def choose_loader(self, path: Path) -> str:
        """The best available loader for `path`."""
        candidates = self.loader_scores(path)
        for name, _ in candidates:
            if self.loaders[name].available()[0]:
                return name
        if candidates:
            name = candidates[0][0]
            raise LoaderError(f"{path.name} needs the {name} loader: {self.loaders[name].available()[1]}")
        raise LoaderError(f"no loader recognises {path.name} (expected a .gguf file or a model folder with config.json)")

    def get_loader(self, name: str) -> type[Loader]:
        if name not in self.loaders:
            raise LoaderError(f"unknown loader {name!r}. Available: {', '.join(self.loaders)}")
        return self.loaders[name]

    def loader_refusal(self, path: Path, loader: str) -> str | None:
        """Why `loader` cannot load `path` at all (its `score` is 0), naming what it loads and the loaders
        that can; None when it can try."""
        cls = self.get_loader(loader)
        if cls.score(path) > 0:
            return None
        able = [name for name, _ in self.loader_scores(path)]
        expects = f" ({cls.description.rstrip('.')})" if cls.description else ""
        hint = f"; loaders that can: {', '.join(able)}" if able else "; no installed loader recognises it"
        return f"the {loader} loader cannot load {path.name}{expects}{hint}"

    def load(self, name: str, loader: str | None = None, params: dict[str, Any] | None = None) -> Model:
        """Unload the current model and load `name` from the models folder (UI, API)."""
        return self.load_local(self.resolve(name), loader, params)

    def load_path(self, name: str, loader: str | None = None, params: dict[str, Any] | None = None) -> Model:
        """`load` for the command line, which may name a path outside the models folder."""
        return self.load_local(self.resolve_path(name), loader, params)

    def load_local(self, local: LocalModel, loader: str | None = None, params: dict[str, Any] | None = None) -> Model:
        """Load a resolved model. Every check that can fail runs before anything is freed."""
        loader_name = loader or self.choose_loader(local.path)
        cls = self.get_loader(loader_name)
        if self.remotes is not None and local.name.startswith(REMOTE_PREFIX):  # the server's settings, overridable
            params = self.remotes.load_params(self.remotes.resolve(local.name), cls, params)
        refused = self.loader_refusal(local.path, loader_name)
        if refused:
            raise LoaderError(refused)
        ok, hint = cls.available()
        if not ok:
            raise LoaderError(f"the {loader_name} loader is not installed here: {hint}")
        resolved = cls.resolve_params(params)
        self.check_remote_code(resolved)
        cls.validate(local.path, resolved)
        with self.lock:
            previous = self.model_name
            self._unload_locked()
            log.info("loading %s with %s", local.name, loader_name)
            try:
                model = cls().load(local.path, resolved)
            except Exception as exc:
                if previous is None:
                    raise
                if not isinstance(exc, HearthError):
                    log.exception("loading %s with %s failed", local.name, loader_name)
                raise LoaderError(f"{str(exc).rstrip('.')}; the previous model was unloaded ({previous}), no model is loaded now") from exc
            self.model, self.model_name, self.loader_name, self.load_params = model, local.name, loader_name, resolved
            self._apply_torch_threads(model.torch_threads)
        return model

    def check_remote_code(self, params: dict[str, Any]) -> None:
        """RemoteCodeNotAllowed when resolved loader `params` ask for trust_remote_code without the flag."""
        if params.get("trust_remote_code") and not self.allow_remote_code:
            raise RemoteCodeNotAllowed(
                "trust_remote_code runs the model's own Python code and is refused: start Hearth with "
                "--trust-remote-code to allow it"
            )

    def _apply_torch_threads(self, wanted: int | None) -> None:
        import torch

        if self._default_torch_threads is None:
            self._default_torch_threads = torch.get_num_threads()
        torch.set_num_threads(wanted or self._default_torch_threads)

    def unload(self) -> None:
        with self.lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self.model is not None:
            self.model.unload()
        self.model = self.model_name = self.loader_name = None
        self.load_params = {}
        self.loras = []
        gc.collect()

    def require(self) -> Model:
        if self.model is None:
            raise NoModelLoaded("no model is loaded: load one in the Model tab or with --model")
        return self.model

    @property
    def lora_names(self) -> list[str]:
        return [lora.name for lora in self.loras]

    def apply_loras(self, loras: Sequence[AppliedLora]) -> None:
        """Apply exactly `loras` (resolved by `webui.loras.resolve_choices`) to the loaded model without
        reloading it; [] removes them. Waits for the running generation. A refused set keeps the current one."""
        with self.lock:
            model = self.require()
            if loras and not model.supports_loras:
                raise LoaderError(f"the {self.loader_name} loader cannot apply LoRA adapters; "
                                  "load the model with Transformers or llama.cpp to use LoRAs")
            model.set_loras([(lora.path, lora.scale) for lora in loras])
            self.loras = list(loras)
