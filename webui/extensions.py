"""The extension manager: finds extensions, enables them by name, keeps their settings, calls their hooks.

Where extension code comes from is `webui.extension_sources`; objects handed to `ExtensionManager.add`
count too. Only enabled extensions are imported and registered with the App's plugin manager.

Hooks are called here one implementation at a time rather than through pluggy's all-at-once call, so
that an extension that raises (or returns nonsense) is logged, reported as a `Notice`, disabled, and the
request carries on without it. The generation core and the chat service call one method per hook.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
import yaml

from webui.config import Settings
from webui.extension_sources import EXTENSIONS_DIR, Source, discover
from webui.param_specs import ParamError, ParamSpec, specs_from
from webui.plugins import ExtensionSpecs, PromptBuilder
from webui.prompts.chat import ChatPrompt
from webui.safe_files import atomic_write_text

if TYPE_CHECKING:
    from webui.app import App
    from webui.chat_service import ChatOptions
    from webui.generation import GenerationRequest
    from webui.prompts.characters import Character
    from webui.prompts.history import ChatHistory

log = logging.getLogger(__name__)

#: settings.yaml key (kept in Settings.extra) holding ``{extension: {param: value}}``.
PARAMS_KEY = "extension_params"


@dataclass(frozen=True)
class Notice:
    """Something the user should hear about (the UI shows it as a toast)."""

    extension: str
    hook: str
    message: str


#: Set on errors raised by the prompt builder an extension delegated to: they are not that extension's fault.
_UNATTRIBUTED = "_hearth_from_builder"


def add_context(options: ChatOptions, character: Character, text: str, *,
                before: bool = False) -> tuple[ChatOptions, Character]:
    """Add text to what opens the chat prompt: the system message when one is set, else the character's
    context. For extensions wrapping the prompt builder (lorebook, long_memory)."""
    if not text.strip():
        return options, character

    def joined(original: str) -> str:
        parts = [text.strip(), original.strip()] if before else [original.strip(), text.strip()]
        return "\n\n".join(p for p in parts if p)

    if options.system_message is not None:
        return replace(options, system_message=joined(options.system_message)), character
    return options, replace(character, context=joined(character.context))


class _GuardedProcessor:
    """An extension's logits processor; if it raises mid-generation the extension is disabled and the
    scores pass through unchanged, so the generation finishes."""

    def __init__(self, inner: Any, extension: str, manager: ExtensionManager):
        self.inner, self.extension, self.manager = inner, extension, manager
        #: Set when it failed: what went wrong, for the client of this generation (the API reports it).
        self.error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.failed:
            return scores
        try:
            return self.inner(input_ids, scores)
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self.error = f"extension {self.extension!r} failed in logits_processor and was disabled: " \
                         f"{type(exc).__name__}: {exc}"
            self.manager.fail(self.extension, "logits_processor", exc)
            return scores


class ExtensionManager:
    def __init__(self, plugins: pluggy.PluginManager, settings: Settings,
                 folders: Sequence[Path] = (EXTENSIONS_DIR,), entry_points: bool = True):
        if not hasattr(plugins.hook, "input_modifier"):
            plugins.add_hookspecs(ExtensionSpecs)
        self.plugins = plugins
        self.settings = settings
        self.app: App | None = None
        self._sources = discover(folders, entry_points)
        self._loaded: dict[str, object] = {}
        self._enabled: list[str] = []
        self._specs: dict[str, dict[str, ParamSpec]] = {}
        self._values: dict[str, dict[str, Any]] = {}
        self._notices: list[Notice] = []
        self._lock = threading.RLock()

    # -- enabling ---------------------------------------------------------------------------------
    def start(self, app: App) -> None:
        """Enable the extensions named in the settings (unknown or broken ones become notices)."""
        self.app = app
        for name in list(self.settings.extensions):
            self.enable(name)

    def available(self) -> list[str]:
        return sorted(set(self._sources) | set(self._enabled), key=str.lower)

    @property
    def enabled(self) -> list[str]:
        return list(self._enabled)

    def add(self, name: str, plugin: object) -> None:
        """Make an in-process plugin (a module or object with hookimpls) available under `name`."""
        self._sources[name] = Source(name, "added", lambda: plugin)

    def enable(self, name: str) -> bool:
        """Import, register, read params, call setup. False (with a notice) when that fails."""
        with self._lock:
            if name in self._enabled:
                return True
            source = self._sources.get(name)
            if source is None:
                self._notify(Notice(name, "enable", f"extension {name!r} not found (available: "
                                    f"{', '.join(self.available()) or 'none'})"))
                return False
            try:
                plugin = self._loaded.get(name) or source.load()
                self.plugins.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001 - a broken drop-in must not stop the app
                self._notify(Notice(name, "load", f"extension {name!r} could not be loaded: {exc}"), exc)
                return False
            self._loaded[name] = plugin
            self._enabled.append(name)
        self._specs[name] = self._first(name, "params", {}, validate=specs_from) or {}
        self._values.setdefault(name, self._saved_params(name))
        if self.app is not None:
            self._first(name, "setup", {"app": self.app})
        return name in self._enabled

    def disable(self, name: str) -> None:
        with self._lock:
            if name in self._enabled:
                self._enabled.remove(name)
            if self.plugins.get_plugin(name) is not None:
                self.plugins.unregister(name=name)

    def set_enabled(self, names: Sequence[str]) -> list[str]:
        """Make exactly `names` enabled (in that order); returns the ones that are."""
        for name in self.enabled:
            if name not in names:
                self.disable(name)
        for name in names:
            self.enable(name)
        with self._lock:
            self._enabled.sort(key=lambda n: list(names).index(n) if n in names else len(names))
        return self.enabled

    # -- failures ---------------------------------------------------------------------------------
    def fail(self, name: str, hook: str, exc: BaseException) -> None:
        """Report an extension's error and disable it; the caller carries on without it."""
        self._notify(Notice(name, hook, f"extension {name!r} failed in {hook} and was disabled: "
                                        f"{type(exc).__name__}: {exc}"), exc)
        self.disable(name)

    def _notify(self, notice: Notice, exc: BaseException | None = None) -> None:
        log.error("%s", notice.message, exc_info=exc)
        with self._lock:
            self._notices.append(notice)

    @property
    def notices(self) -> list[Notice]:
        return list(self._notices)

    def drain_notices(self) -> list[Notice]:
        """The notices not shown yet (the UI polls this and shows each as a toast)."""
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    # -- params -----------------------------------------------------------------------------------
    def _saved_params(self, name: str) -> dict[str, Any]:
        saved = self.settings.extra.get(PARAMS_KEY)
        values = saved.get(name) if isinstance(saved, dict) else None
        return dict(values) if isinstance(values, dict) else {}

    def specs(self, name: str) -> dict[str, ParamSpec]:
        """The extension's declared settings (from its ``params`` hook), by name."""
        return dict(self._specs.get(name, {}))

    def defaults(self, name: str) -> dict[str, Any]:
        return {key: spec.default for key, spec in self._specs.get(name, {}).items()}

    def params(self, name: str) -> dict[str, Any]:
        """The extension's settings: declared defaults, overridden by saved and applied values (a saved
        value that no longer fits its declaration is ignored, with a warning)."""
        specs = self._specs.get(name, {})
        values = self.defaults(name)
        for key, value in self._values.get(name, {}).items():
            if key in specs:
                try:
                    values[key] = specs[key].coerce(value)
                except ParamError as exc:
                    log.warning("extension %s: ignoring saved %s", name, exc)
        return values

    def set_params(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """Apply new values, each validated against its declaration (a ParamError, a ValueError, names
        the setting); returns the resulting params."""
        specs = self._specs.get(name, {})
        unknown = set(values) - set(specs)
        if unknown:
            raise ValueError(f"extension {name!r} has no setting {', '.join(sorted(unknown))}")
        try:
            coerced = {k: specs[k].coerce(v) for k, v in values.items()}
        except ParamError as exc:
            raise ParamError(f"extension {name!r}: {exc}") from None
        self._values[name] = {**self._values.get(name, {}), **coerced}
        return self.params(name)

    def store_settings(self) -> None:
        """Copy the enabled list and changed params into Settings (what settings.yaml saving writes)."""
        saved = self.settings.extra.get(PARAMS_KEY)
        table = dict(saved) if isinstance(saved, dict) else {}
        for name in self._specs:
            defaults = self.defaults(name)
            changed = {k: v for k, v in self.params(name).items() if v != defaults[k]}
            if changed:
                table[name] = changed
            else:
                table.pop(name, None)
        self.settings.extra[PARAMS_KEY] = table
        self.settings.extensions = self.enabled

    def save_settings_file(self, path: Path | None = None) -> Path:
        """Write ``extensions`` and ``extension_params`` into the settings file (`Settings.settings_path`),
        keeping its other keys."""
        self.store_settings()
        path = path or self.settings.settings_path
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        doc = doc if isinstance(doc, dict) else {}
        doc["extensions"] = self.settings.extensions
        doc[PARAMS_KEY] = self.settings.extra[PARAMS_KEY]
        atomic_write_text(path, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
        return path

    # -- calling hooks ----------------------------------------------------------------------------
    def state(self, **values: Any) -> dict[str, Any]:
        """The ``state`` dict hooks receive (see `webui.plugins.ExtensionSpecs`)."""
        base = dict.fromkeys(("request", "options", "character", "history", "user_input", "build_prompt"))
        return {**base, "app": self.app, "params": {}, "is_chat": False, **values}

    def _impls(self, hook: str, only: str | None = None) -> list[Any]:
        order = {name: i for i, name in enumerate(self._enabled) if only in (None, name)}
        impls = [i for i in getattr(self.plugins.hook, hook).get_hookimpls()
                 if i.plugin_name in order and not (i.hookwrapper or i.wrapper)]
        return sorted(impls, key=lambda i: (0 if i.tryfirst else 2 if i.trylast else 1, order[i.plugin_name]))

    def _call(self, impl: Any, hook: str, kwargs: dict[str, Any],
              validate: Callable[[Any], Any] | None = None) -> tuple[bool, Any]:
        """One implementation; (False, None) when it failed (it is disabled by then)."""
        if "state" in kwargs:
            kwargs = {**kwargs, "state": {**kwargs["state"], "params": self.params(impl.plugin_name)}}
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            return True, validate(result) if validate and result is not None else result
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            if getattr(exc, _UNATTRIBUTED, False):
                raise
            self.fail(impl.plugin_name, hook, exc)
            return False, None

    def _first(self, name: str, hook: str, kwargs: dict[str, Any], validate: Callable[[Any], Any] | None = None) -> Any:
        for impl in self._impls(hook, only=name):
            return self._call(impl, hook, kwargs, validate)[1]
        return None

    def _chain(self, hook: str, key: str, value: Any, kwargs: dict[str, Any], validate: Callable[[Any], Any]) -> Any:
        """Pass `value` through every implementation in turn (None keeps it)."""
        for impl in self._impls(hook):
            ok, result = self._call(impl, hook, {**kwargs, key: value}, validate)
            if ok and result is not None:
                value = result
        return value

    def modify_input(self, text: str, state: dict[str, Any], is_chat: bool) -> str:
        return self._chain("input_modifier", "text", text, {"state": state, "is_chat": is_chat}, _as_str)

    def modify_output(self, text: str, state: dict[str, Any], is_chat: bool) -> str:
        return self._chain("output_modifier", "text", text, {"state": state, "is_chat": is_chat}, _as_str)

    def modify_state(self, request: GenerationRequest, state: dict[str, Any]) -> GenerationRequest:
        def validate(result: Any) -> GenerationRequest:
            if not isinstance(result, type(request)):
                raise TypeError(f"state_modifier must return a GenerationRequest, got {type(result).__name__}")
            return type(request).model_validate(result.model_dump())

        return self._chain("state_modifier", "request", request, {"state": state}, validate)

    def modify_chat_input(self, text: str, visible_text: str, state: dict[str, Any]) -> tuple[str, str]:
        for impl in self._impls("chat_input_modifier"):
            ok, result = self._call(impl, "chat_input_modifier",
                                    {"text": text, "visible_text": visible_text, "state": state}, _as_text_pair)
            if ok and result is not None:
                text, visible_text = result
        return text, visible_text

    def bot_prefix(self, prefix: str, state: dict[str, Any]) -> str:
        return self._chain("bot_prefix_modifier", "prefix", prefix, {"state": state}, _as_str)

    def modify_history(self, history: ChatHistory, state: dict[str, Any]) -> ChatHistory:
        def validate(result: Any) -> ChatHistory:
            if not isinstance(result, type(history)):
                raise TypeError(f"history_modifier must return a ChatHistory, got {type(result).__name__}")
            return result

        return self._chain("history_modifier", "history", history, {"state": state}, validate)

    def modify_tokens(self, state: dict[str, Any], prompt: str, input_ids: list[int]) -> list[int]:
        return self._chain("tokenizer_modifier", "input_ids", input_ids, {"state": state, "prompt": prompt},
                           _as_ids)

    def logits_processors(self, request: GenerationRequest, state: dict[str, Any]) -> list[Any]:
        processors: list[Any] = []
        for impl in self._impls("logits_processor"):
            ok, result = self._call(impl, "logits_processor", {"request": request, "state": state},
                                    _as_processors)
            if ok and result:
                processors += [_GuardedProcessor(p, impl.plugin_name, self) for p in result]
        return processors

    @staticmethod
    def processor_failures(processors: Sequence[Any]) -> list[str]:
        """What went wrong in those of `processors` (from `logits_processors`) that failed."""
        return [p.error for p in processors if isinstance(p, _GuardedProcessor) and p.error]

    def custom_chat_prompt(self, user_input: str | None, history: ChatHistory, options: ChatOptions,
                           character: Character, state: dict[str, Any], build: PromptBuilder) -> ChatPrompt:
        """The chat prompt: extensions in turn, each able to delegate to the rest and the default."""
        hook = "custom_generate_chat_prompt"
        impls = self._impls(hook)

        def rest(start: int, user_input: str | None, history: ChatHistory, options: ChatOptions,
                 character: Character) -> ChatPrompt:
            args = (user_input, history, options, character)
            for index in range(start, len(impls)):
                kwargs = dict(zip(("user_input", "history", "options", "character"), args, strict=True))
                kwargs.update(state=state, build=partial(_unattributed, partial(rest, index + 1)))
                ok, result = self._call(impls[index], hook, kwargs, _as_prompt_or_text)
                if ok and isinstance(result, ChatPrompt):
                    return result
                if ok and result is not None:
                    default = build(*args)  # a text prompt keeps the images (the core checks their markers)
                    return ChatPrompt(result, default.stop_strings, images=default.images)
            return build(*args)

        return rest(0, user_input, history, options, character)

    def render_ui(self, name: str, ctx: Any) -> None:
        self._first(name, "ui", {"ctx": ctx})

    def has_hook(self, name: str, hook: str) -> bool:
        return bool(self._impls(hook, only=name))

    def css(self) -> str:
        return "\n".join(self._collect("custom_css"))

    def js(self) -> str:
        return "\n".join(self._collect("custom_js"))

    def _collect(self, hook: str) -> list[str]:
        results = (self._call(impl, hook, {}, _as_str) for impl in self._impls(hook))
        return [text for ok, text in results if ok and text]


def _unattributed(function: Callable[..., ChatPrompt], *args: Any, **kwargs: Any) -> ChatPrompt:
    """Call the builder an extension delegates to; its errors are marked so they pass through."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        try:
            setattr(exc, _UNATTRIBUTED, True)
        except AttributeError:
            pass
        raise


def _expect(kind: type | tuple[type, ...], what: str) -> Callable[[Any], Any]:
    def check(result: Any) -> Any:
        if not isinstance(result, kind):
            raise TypeError(f"expected {what}, got {type(result).__name__}")
        return result

    return check


_as_str = _expect(str, "a string")
_as_prompt_or_text = _expect((ChatPrompt, str), "a ChatPrompt or a string")


def _as_text_pair(result: Any) -> tuple[str, str]:
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(x, str) for x in result)):
        raise TypeError("chat_input_modifier must return (text, visible_text)")
    return result[0], result[1]


def _as_ids(result: Any) -> list[int]:
    if not isinstance(result, (list, tuple)) or not all(isinstance(t, int) for t in result):
        raise TypeError("tokenizer_modifier must return a list of token ids")
    return list(result)


def _as_processors(result: Any) -> list[Any]:
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    if not all(callable(p) for p in items):
        raise TypeError("logits_processor must return callables (input_ids, scores) -> scores")
    return items
