"""Typed settings: one source of defaults for the CLI flags, settings.yaml and CMD_FLAGS.txt.

Precedence, lowest first: the defaults in `Settings`, then the settings file(s), then CMD_FLAGS.txt, then
the command line. Loader parameters are not retyped here: their flags are generated from each loader's
`LoaderParam` declarations.

The settings file is ``--settings FILE`` when given, else ``user_data/settings.yaml`` (the Session tab's
"Save UI settings" writes it, UI state only: `UI_STATE_KEYS`). Without --settings, a settings.yaml in the
install folder (where older versions saved) is still read first, below user_data's, and never written.
Flags a person wants on every start belong in CMD_FLAGS.txt (or a file they write themselves): the UI never
turns a one-off ``--listen`` or ``--api`` into a saved setting.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from webui.errors import HearthError
from webui.loader_api import Loader, LoaderParam
from webui.param_specs import ParamSpec

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_NAME = "settings.yaml"
#: What "Save UI settings" writes: state a person sets in the UI (theme, generation and sampler values,
#: chat options, enabled extensions and their settings). Every other key is a flag (ports, folders,
#: keys, model, loader parameters...), read from a settings file a person wrote but never saved by the UI.
UI_STATE_KEYS = ("theme", "generation", "sampling", "chat", "extensions", "extension_params")

log = logging.getLogger(__name__)


class ConfigError(HearthError):
    """A settings file or flag is malformed."""


@dataclass
class Settings:
    model: str | None = None
    loader: str | None = None
    models_dir: Path = ROOT / "models"
    user_data_dir: Path = ROOT / "user_data"
    #: LoRA adapters (PEFT folders, GGUF adapters): what the Model tab's LoRA selector lists.
    loras_dir: Path = ROOT / "loras"
    presets_dir: Path = ROOT / "presets"
    templates_dir: Path = ROOT / "templates"
    listen: bool = False
    listen_port: int = 7860
    api: bool = False
    api_port: int = 5000
    #: One key or several (--api-key may be repeated); see `api_keys`, which adds those of api_key_file.
    api_key: str | list[str] | None = None
    api_key_file: Path | None = None
    admin_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    #: Web UI logins: "user:password" pairs separated by commas, and/or a file with one pair per line.
    gradio_auth: str | None = None
    gradio_auth_path: Path | None = None
    #: Host names (besides the bound address and localhost) that requests may address (DNS rebinding guard).
    allowed_hosts: list[str] = field(default_factory=list)
    #: Serve on --listen without UI logins / API keys: the user accepts that anyone on the network can use it.
    allow_unauthenticated: bool = False
    #: Largest API request body, in MiB (larger: 413).
    max_request_mb: int = 32
    #: Let API clients give images as http(s) URLs that the server downloads (off: data: URLs only).
    allow_image_urls: bool = False
    #: Models kept in memory at once (the UI's and those the API loads by name); 0: no count limit.
    max_models: int = 0
    #: RAM (and VRAM) models may use: "auto", "none", "RAM" or "RAM,VRAM" in GiB (`webui.model_pool.parse_budget`).
    memory_budget: str = "auto"
    #: Unload a model nobody used for this many minutes; 0: never.
    idle_unload: float = 0
    extensions: list[str] = field(default_factory=list)
    preset: str | None = None
    no_browser_ui: bool = False
    #: Loader parameters given explicitly (flags or settings.yaml); defaults come from the loader.
    loader_args: dict[str, Any] = field(default_factory=dict)
    #: Anything else from settings.yaml (UI state), kept so saving does not lose it.
    extra: dict[str, Any] = field(default_factory=dict)
    #: --settings FILE; `parse_settings` otherwise sets user_data/settings.yaml (see `settings_path`).
    settings_file: Path | None = None

    @property
    def host(self) -> str:
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @property
    def settings_path(self) -> Path:
        """The settings file this run reads last and "Save UI settings" writes (never the install folder
        unless --settings names a file there)."""
        return self.settings_file or self.user_data_dir / SETTINGS_NAME

    @property
    def api_keys(self) -> list[str]:
        """Every accepted API key: --api-key (once or repeated) and the lines of --api-key-file."""
        keys = [self.api_key] if isinstance(self.api_key, str) else list(self.api_key or [])
        if self.api_key_file is not None:
            try:
                lines = Path(self.api_key_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read --api-key-file {self.api_key_file}: {exc}") from None
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [key for key in keys if key]

    @property
    def allow_remote_code(self) -> bool:
        """Models may run their own Python code (trust_remote_code) only when Hearth was started with
        --trust-remote-code, as in text-generation-webui."""
        return bool(self.loader_args.get("trust_remote_code"))


_PATH_FIELDS = {"models_dir", "loras_dir", "user_data_dir", "presets_dir", "templates_dir", "settings_file", "api_key_file",
                "gradio_auth_path"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def loader_param_table(loaders: dict[str, type[Loader]]) -> dict[str, tuple[LoaderParam, list[str]]]:
    """Every loader parameter name once, with the loaders that take it."""
    table: dict[str, tuple[LoaderParam, list[str]]] = {}
    for loader_name, cls in loaders.items():
        for param in cls.params:
            if param.name in table:
                table[param.name][1].append(loader_name)
            else:
                table[param.name] = (param, [loader_name])
    return table


def build_parser(loaders: dict[str, type[Loader]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webui",
        description="Hearth: a local LLM web UI and OpenAI-compatible API.",
        argument_default=argparse.SUPPRESS,
    )
    basic = parser.add_argument_group("Model")
    basic.add_argument("--model", help="Model to load at start: a name from --models-dir (file or folder).")
    basic.add_argument("--loader", help=f"Loader to use (default: chosen from the model). One of: {', '.join(loaders)}.")
    basic.add_argument("--models-dir", type=Path, help="Folder of local models (default: models/).")
    basic.add_argument("--lora-dir", dest="loras_dir", type=Path, help="Folder of LoRA adapters (default: loras/).")
    basic.add_argument("--user-data-dir", type=Path, help="Chats, characters, per-model settings (default: user_data/).")
    basic.add_argument("--settings", dest="settings_file", type=Path, help="Settings file to read, and to save UI settings to (default: user_data/settings.yaml; an older ./settings.yaml is still read).")
    basic.add_argument("--preset", help="Sampler preset (presets/ or user_data/presets/) to start with.")

    server = parser.add_argument_group("Web UI")
    server.add_argument("--listen", action="store_true", help="Listen on all interfaces (0.0.0.0) instead of 127.0.0.1. Needs --gradio-auth or --gradio-auth-path for the web UI and --api-key for the API (or --allow-unauthenticated).")
    server.add_argument("--listen-port", type=int, help="Web UI port (default 7860).")
    server.add_argument("--no-browser-ui", action="store_true", help="Do not start the web UI (API only, with --api).")
    server.add_argument("--gradio-auth", metavar="USER:PWD[,USER:PWD...]", help="Require a login for the web UI: USER:PASSWORD pairs separated by commas.")
    server.add_argument("--gradio-auth-path", type=Path, metavar="FILE", help="Web UI logins from a file, one USER:PASSWORD per line (the password may contain ':' and ','; lines starting with # are skipped).")
    server.add_argument("--allowed-hosts", nargs="*", metavar="NAME",
                        help="Host names requests may address besides localhost and the bound address (with --listen also this machine's names and addresses), e.g. my-server.lan; '*' turns the check off (behind a reverse proxy that checks it). Other names get 403.")
    server.add_argument("--allow-unauthenticated", action="store_true",
                        help="With --listen, serve the web UI without logins and the API without keys: anyone on the network can use (and load models on) it. Never saved to settings.yaml.")

    api = parser.add_argument_group("API")
    api.add_argument("--api", action="store_true", help="Start the OpenAI-compatible API.")
    api.add_argument("--api-port", type=int, help="API port (default 5000).")
    api.add_argument("--api-key", action="append", help="Require 'Authorization: Bearer KEY' on every API request (repeat for several keys).")
    api.add_argument("--api-key-file", type=Path, metavar="FILE", help="API keys from a file, one per line.")
    api.add_argument("--admin-key", help="Key required to load/unload models and change what is served (default: any API key).")
    api.add_argument("--max-request-mb", type=int, help="Largest API request body in MiB (default 32; larger gets a 413).")
    api.add_argument("--cors-origins", nargs="*", help="Origins allowed by CORS (default: none).")
    api.add_argument("--allow-image-urls", action="store_true",
                     help="Let chat requests give images as http(s) URLs, which the server downloads (at most 20 MiB, 10 s each); this lets any API client make the server fetch addresses on its network. Default: images only inline as data: URLs.")

    pool = parser.add_argument_group("Several models (routing by the API's model field)")
    pool.add_argument("--max-models", type=int, metavar="N",
                      help="Most models kept loaded at once, the UI's included; 0 = no count limit (default 0).")
    pool.add_argument("--memory-budget", metavar="RAM[,VRAM]",
                      help="GiB of RAM (and VRAM) that loaded models may use, by their memory estimate: e.g. 24 or 24,10; "
                           "'auto' (default) = the RAM and VRAM free before any model was loaded; 'none' = no limit. The least "
                           "recently used idle model is unloaded to make room.")
    pool.add_argument("--idle-unload", type=float, metavar="MINUTES",
                      help="Unload a model nobody used for this many minutes; 0 = never (default 0).")

    ext = parser.add_argument_group("Extensions")
    ext.add_argument("--extensions", nargs="*", help="Extensions to enable, by name.")

    by_loader: dict[str, argparse._ArgumentGroup] = {}
    table = loader_param_table(loaders)
    for name, (param, users) in table.items():
        key = ", ".join(users)
        group = by_loader.get(key) or parser.add_argument_group(f"Loader parameters ({key})")
        by_loader[key] = group
        add_param_flag(group, param, negatable=f"no_{name}" not in table and not name.startswith("no_"))
    return parser


def add_param_flag(group: argparse._ArgumentGroup, spec: ParamSpec, negatable: bool = True) -> None:
    """The command-line flag of one declared setting (`webui.param_specs.ParamSpec`): ``--name VALUE``,
    or for a bool ``--name`` / ``--no-name``; the value lands under ``loader:<name>``."""
    help_text = f"{spec.help} (default: {spec.default})"
    dest = f"loader:{spec.name}"
    if spec.kind == "bool":
        # --name / --no-name, unless another parameter is itself called no_name (then --name sets True).
        action = argparse.BooleanOptionalAction if negatable else "store_const"
        extra = {} if negatable else {"const": True}
        group.add_argument(_flag(spec.name), dest=dest, action=action, help=help_text, **extra)
        return
    kwargs: dict[str, Any] = {"dest": dest, "help": help_text}
    if spec.kind == "choice":
        kwargs["choices"] = spec.choices
    else:
        kwargs["metavar"] = spec.kind.upper()
    if spec.numeric:
        kwargs["type"] = int if spec.kind == "int" else float
    group.add_argument(_flag(spec.name), **kwargs)


def read_cmd_flags(path: Path) -> list[str]:
    """Flags from CMD_FLAGS.txt: shell-style words, lines starting with # ignored."""
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")]
    return shlex.split(" ".join(lines))


def read_settings_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must hold a mapping of names to values")
    return data


def _normalized(doc: dict[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in doc.items()}


def settings_layers(
    namespace: dict[str, Any], legacy_settings: Path | None
) -> tuple[Path, list[dict[str, Any]]]:
    """The settings file of this run and the documents to merge, lowest precedence first: --settings FILE
    alone; else the install folder's settings.yaml (read for compatibility) then user_data/settings.yaml."""
    explicit = namespace.get("settings_file")
    if explicit is not None:
        return Path(explicit), [_normalized(read_settings_file(Path(explicit)))]
    layers = []
    if legacy_settings is not None and legacy_settings.is_file():
        log.info("reading %s; 'Save UI settings' writes user_data/%s", legacy_settings, SETTINGS_NAME)
        layers.append(_normalized(read_settings_file(legacy_settings)))
    user_data = namespace.get("user_data_dir") or next(
        (layer["user_data_dir"] for layer in layers if layer.get("user_data_dir")), Settings.user_data_dir
    )
    settings_file = Path(user_data) / SETTINGS_NAME
    if settings_file.is_file():
        layers.append(_normalized(read_settings_file(settings_file)))
    return settings_file, layers


def parse_settings(
    argv: list[str],
    loaders: dict[str, type[Loader]],
    cmd_flags_file: Path | None = ROOT / "CMD_FLAGS.txt",
    legacy_settings: Path | None = ROOT / SETTINGS_NAME,
) -> Settings:
    """CLI words (plus CMD_FLAGS.txt) and the settings file(s) merged into one Settings."""
    words = (read_cmd_flags(cmd_flags_file) if cmd_flags_file else []) + list(argv)
    namespace = vars(build_parser(loaders).parse_args(words))
    settings_file, layers = settings_layers(namespace, legacy_settings)
    merged: dict[str, Any] = {}
    loader_args: dict[str, Any] = {}
    for layer in layers:
        loader_args.update(layer.pop("loader_args", None) or {})
        merged.update(layer)
    merged["settings_file"] = settings_file
    for key, value in namespace.items():
        if key.startswith("loader:"):
            loader_args[key.split(":", 1)[1]] = value
        else:
            merged[key] = value
    known = {f.name for f in fields(Settings)}
    extra = {k: v for k, v in merged.items() if k not in known}
    values = {k: v for k, v in merged.items() if k in known and k not in {"loader_args", "extra"}}
    for key in _PATH_FIELDS & set(values):
        values[key] = Path(values[key])
    settings = Settings(**values, loader_args=loader_args, extra=extra)
    check_pool_flags(settings)
    return settings


_BUDGET = re.compile(r"^\s*(auto|none|(auto|\d+(\.\d+)?)(\s*,\s*(auto|\d+(\.\d+)?))?)\s*$", re.IGNORECASE)


def check_pool_flags(settings: Settings) -> None:
    """--max-models, --memory-budget and --idle-unload are well-formed (ConfigError naming the flag)."""
    if not isinstance(settings.max_models, int) or settings.max_models < 0:
        raise ConfigError(f"--max-models must be 0 (no limit) or more, not {settings.max_models!r}")
    if not isinstance(settings.idle_unload, int | float) or settings.idle_unload < 0:
        raise ConfigError(f"--idle-unload must be 0 (never) or a number of minutes, not {settings.idle_unload!r}")
    parts = str(settings.memory_budget).lower().replace("auto", "1").replace("none", "1").split(",")
    if not _BUDGET.match(str(settings.memory_budget)) or any(float(p) <= 0 for p in parts):
        raise ConfigError(f"--memory-budget {settings.memory_budget!r}: expected auto, none, RAM or RAM,VRAM in GiB (e.g. 24,10)")
