"""Remote servers the model list shows beside the local models: ``user_data/remotes.yaml``.

The file is a mapping of names to servers::

    remotes:
      gpu-box:                          # listed as remote:gpu-box/<model>
        url: http://10.0.0.5:8000       # the server's root (its /v1 routes are found under it)
        kind: vllm                      # openai | vllm | llama-server | llama-cpp-python | tgi | hearth
        api_key_env: GPU_BOX_KEY        # the key is read from this environment variable (optional)
        model: Qwen/Qwen2.5-7B-Instruct # optional: list only this model (else the server's /v1/models)
        timeout: 60                     # seconds to wait for the server (connect and each read)
        n_ctx: 0                        # context length when the server does not tell it
        chat: hearth                    # chat replies: hearth (Hearth's template, /v1/completions) or
                                        # server (the server's chat template, /v1/chat/completions)

Each model shows up as ``remote:NAME/MODEL`` (``remote:NAME/`` when the server cannot be asked: its default
model). A name with a ``/`` can never be an entry of the models folder, so a remote and a file are never
confused; ``remote:`` names resolve only to entries of this file. Keys are never stored here: give the
name of an environment variable (`api_key_env`) or type the key in the Model tab for this session.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webui.errors import HearthError, ModelNotFound

log = logging.getLogger(__name__)

PREFIX = "remote:"
FILE_NAME = "remotes.yaml"
#: How long a server's model list is reused before it is asked again (the model list is shown often).
LIST_TTL_S = 30.0
#: Listing must not hang the Model tab on a dead server.
LIST_TIMEOUT_S = 2.0

_KEYS = {"url", "kind", "api_key_env", "model", "timeout", "n_ctx", "chat"}


class RemoteConfigError(HearthError):
    """remotes.yaml cannot be read or holds an unknown setting."""


@dataclass(frozen=True)
class RemoteServer:
    name: str
    url: str
    kind: str = "openai"
    api_key_env: str = ""
    model: str = ""
    timeout: float = 60.0
    n_ctx: int = 0
    chat: str = "hearth"

    def load_params(self, model: str) -> dict[str, Any]:
        """The Remote loader's parameters for `model` of this server."""
        return {
            "remote_url": self.url,
            "remote_kind": self.kind,
            "remote_api_key_env": self.api_key_env,
            "remote_model": model,
            "remote_timeout": self.timeout,
            "remote_n_ctx": self.n_ctx,
            "remote_chat": self.chat,
        }


@dataclass(frozen=True)
class RemoteEntry:
    """One model of a remote server, as the model list shows it."""

    name: str
    server: RemoteServer
    model: str  # "" = the server's default


def read_remotes(path: Path) -> dict[str, RemoteServer]:
    """The servers of `path` ({} when it does not exist); RemoteConfigError naming what is wrong."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RemoteConfigError(f"{path} cannot be read: {exc}") from None
    servers = data.get("remotes", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise RemoteConfigError(f"{path}: expected 'remotes:' holding a mapping of names to servers")
    found = {}
    for name, spec in servers.items():
        name = str(name)
        if not name or "/" in name or not isinstance(spec, dict) or not spec.get("url"):
            raise RemoteConfigError(f"{path}: remote {name!r} needs a name without '/' and a url")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise RemoteConfigError(
                f"{path}: remote {name!r} has unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_KEYS))}"
            )
        try:
            found[name] = RemoteServer(name=name, **{k: v for k, v in spec.items()})
        except TypeError as exc:
            raise RemoteConfigError(f"{path}: remote {name!r}: {exc}") from None
    return found


@dataclass
class RemoteRegistry:
    """The remotes of one remotes.yaml, listed as model entries (each server asked at most every
    `LIST_TTL_S` seconds)."""

    path: Path
    _cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def servers(self) -> dict[str, RemoteServer]:
        try:
            return read_remotes(self.path)
        except RemoteConfigError as exc:
            log.warning("%s", exc)
            return {}

    def entries(self) -> list[RemoteEntry]:
        out = []
        for server in self.servers().values():
            models = [server.model] if server.model else self._server_models(server)
            out.extend(RemoteEntry(f"{PREFIX}{server.name}/{m}", server, m) for m in models or [""])
        return out

    def resolve(self, name: str) -> RemoteEntry:
        """The entry `name` (remote:SERVER/MODEL) of this file; ModelNotFound otherwise. Any model name
        of a configured server resolves (a server may hold models its list does not show)."""
        if not name.startswith(PREFIX) or "/" not in name:
            raise ModelNotFound(f"{name!r} is not a remote model name (remote:SERVER/MODEL)")
        server_name, model = name[len(PREFIX) :].split("/", 1)
        servers = read_remotes(self.path)
        if server_name not in servers:
            known = ", ".join(servers) or f"none (configure them in {self.path})"
            raise ModelNotFound(f"no remote server named {server_name!r}. Configured: {known}")
        server = servers[server_name]
        if server.model and model not in ("", server.model):
            raise ModelNotFound(f"remote {server_name!r} is configured for model {server.model!r} only")
        return RemoteEntry(name, server, model)

    def load_params(self, entry: RemoteEntry, loader: Any, given: dict[str, Any] | None) -> dict[str, Any]:
        """`loader`'s parameters for `entry`: the server's settings from this file, under each value given
        (Model tab, API) that differs from the loader's default. Unknown names pass on (and are refused)."""
        defaults = {p.name: p.default for p in loader.params}
        base = {k: v for k, v in entry.server.load_params(entry.model).items() if k in defaults}
        return {**base, **{k: v for k, v in (given or {}).items() if k not in defaults or v != defaults[k]}}

    def loader_settings(self, name: str, loaders: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(loader, resolved parameters) the Model tab shows for the remote model `name`: a remote's
        settings live in this file, not in a per-model settings file."""
        from loaders.remote import RemoteLoader

        loader = loaders[RemoteLoader.name]
        return RemoteLoader.name, loader.resolve_params(self.load_params(self.resolve(name), loader, {}))

    def _server_models(self, server: RemoteServer) -> list[str]:
        with self._lock:
            cached = self._cache.get(server.name)
            if cached and time.monotonic() - cached[0] < LIST_TTL_S:
                return cached[1]
        from loaders.remote import RemoteClient  # the HTTP client lives with the loader

        try:
            client = RemoteClient(
                server.url,
                server.kind,
                api_key_from_env(server.api_key_env),
                min(server.timeout, LIST_TIMEOUT_S),
                server.name,
            )
            try:
                models = [m["id"] for m in client.models()]
            finally:
                client.close()
        except HearthError as exc:
            log.info("remote %s not listed: %s", server.name, exc)
            models = []
        with self._lock:
            self._cache[server.name] = (time.monotonic(), models)
        return models


def api_key_from_env(variable: str) -> str:
    import os

    return os.environ.get(variable, "") if variable else ""
