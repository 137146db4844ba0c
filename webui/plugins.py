"""Hearth's public plugin contract (pluggy hookspecs) and the plugin manager that holds them.

Every hook below is part of the documented API: its docstring says when Hearth calls it and what it
must return. A plugin is any module or object with functions decorated by ``@hookimpl`` named after
a hook. Each hook is documented with its exact arguments in ``docs/loaders.md`` or
``docs/extensions.md`` and has a test named ``test_hook_<hook>``; ``tests/test_plugin_hooks.py`` fails
when a hook added here lacks either.

Third-party loaders are installed packages that declare an entry point in the ``hearth.loaders``
group, for example in their pyproject.toml::

    [project.entry-points."hearth.loaders"]
    my_backend = "my_package.hearth_plugin"

where ``my_package/hearth_plugin.py`` implements ``hearth_loaders``. ``docs/loaders.md`` walks through a
complete one, the package in ``docs/example_loader/``.

Extensions implement `ExtensionSpecs`. They are found in ``extensions/NAME/`` and through the
``hearth.extensions`` entry point group, and only the enabled ones are registered (see
`webui.extensions`, which calls each extension's hooks one by one so a failing extension is reported and
disabled instead of failing the request). ``docs/extensions.md`` walks through writing one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from webui.loader_api import Loader

if TYPE_CHECKING:
    from webui.app import App
    from webui.chat_service import ChatOptions
    from webui.generation import GenerationRequest
    from webui.prompts.characters import Character
    from webui.prompts.chat import ChatPrompt
    from webui.prompts.history import ChatHistory
    from webui.ui.context import UIContext

PROJECT = "hearth"
LOADER_ENTRY_POINT_GROUP = "hearth.loaders"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)


class LoaderSpecs:
    """Hooks a backend plugin implements."""

    @hookspec
    def hearth_loaders(self) -> list[type[Loader]]:
        """Called when Hearth starts, to collect model loaders (the command line's flags and the App's
        table of loaders both come from it).

        Return a list of `webui.loader_api.Loader` subclasses. Each declares a unique ``name``, the
        paths it can load (``score``), its parameters (``params``) and ``load``. Results of all plugins
        are concatenated; a later plugin may not reuse an earlier name (it is reported and skipped).
        """


#: A chat prompt builder: ``build(user_input, history, options, character) -> ChatPrompt``.
PromptBuilder = Callable[..., "ChatPrompt"]


class ExtensionSpecs:
    """Hooks an extension implements; any subset, each taking any subset of the arguments shown.

    ``state`` (a dict) describes the request being served. Keys: ``app`` (the App), ``params`` (this
    extension's settings: its `params` defaults merged with saved values), ``is_chat``, ``request`` (the
    GenerationRequest; in chat, the generation settings with an empty prompt), and in chat ``options``
    (ChatOptions), ``character`` (Character), ``history`` (ChatHistory before the new message),
    ``user_input`` and ``build_prompt`` (the default prompt builder, see `custom_generate_chat_prompt`).
    Keys that do not apply are None. Modifier hooks run in the order extensions were enabled, each
    seeing the previous one's result; returning None means "no change".
    """

    @hookspec
    def setup(self, app: App) -> None:
        """Called when the extension is enabled (at start, or from the Session tab), after `params`.

        Load data or models here rather than at import time. Returns nothing."""

    @hookspec
    def ui(self, ctx: UIContext) -> None:
        """Called once while the UI is built, inside the extension's own accordion on the Extensions tab.

        Create Gradio components there; to get a tab of your own, append a builder to
        ``ctx.extra_tabs`` (it is called inside the main ``gr.Tabs`` and opens its own ``gr.Tab``).
        Returns nothing."""

    @hookspec(firstresult=True)
    def params(self) -> dict[str, Any]:
        """Called once when the extension is enabled: its settings and their defaults.

        Return ``{name: default}`` (bool, int, float or str values; the default's type picks the control),
        ``{name: webui.param_specs.ParamSpec(...)}`` (typed, with a range and a one-line description, shown
        as the tooltip), or a pydantic model class (its fields' ge/le and description). Values are
        validated against the declaration; the settings file keeps the changed ones under
        ``extension_params: {extension: {name: value}}``; the current values arrive as ``state["params"]``."""

    @hookspec
    def input_modifier(self, text: str, state: dict[str, Any], is_chat: bool) -> str | None:
        """Called before tokenizing. Plain generation: ``text`` is the whole prompt (is_chat False,
        called by the generation core, so the API's completions pass here too). Chat: ``text`` is the
        new user message, after `chat_input_modifier` (is_chat True). Return the text to use."""

    @hookspec
    def output_modifier(self, text: str, state: dict[str, Any], is_chat: bool) -> str | None:
        """Called when a generation ends, on the whole reply (in chat including any bot prefix) before
        it is returned or saved; streamed chunks are not modified. Return the text to use."""

    @hookspec
    def state_modifier(self, request: GenerationRequest, state: dict[str, Any]) -> GenerationRequest | None:
        """Called by the generation core before every generation (UI, API and chat alike).

        Return a changed copy (``request.model_copy(update={...})``) to adjust generation parameters;
        it is validated again, so an invalid value disables the extension rather than the request."""

    @hookspec
    def chat_input_modifier(self, text: str, visible_text: str, state: dict[str, Any]) -> tuple[str, str] | None:
        """Called first in a chat turn with the user's message. Return ``(text, visible_text)``: ``text``
        goes into the prompt and the saved history; ``visible_text`` (when different) is kept in the
        turn's metadata as ``visible`` for display."""

    @hookspec
    def bot_prefix_modifier(self, prefix: str, state: dict[str, Any]) -> str | None:
        """Called before a chat reply with the text the reply starts with (normally empty). The prefix is
        written into the prompt as the start of the character's turn, the model continues it, and the
        saved reply begins with it. Return the new prefix."""

    @hookspec
    def history_modifier(self, history: ChatHistory, state: dict[str, Any]) -> ChatHistory | None:
        """Called before the chat prompt is built, with the history so far. The returned history is
        used for the prompt and is the one the reply is appended to and saved, so an extension can keep
        data with the chat in turn metadata (long_memory stores its summary that way)."""

    @hookspec(firstresult=True)
    def custom_generate_chat_prompt(self, user_input: str | None, history: ChatHistory, options: ChatOptions,
                                    character: Character, state: dict[str, Any],
                                    build: PromptBuilder) -> ChatPrompt | str | None:
        """Called to build every chat prompt (UI and API chat completions).

        ``build(user_input, history, options, character)`` returns what the remaining extensions and
        Hearth's default builder make of (possibly changed) arguments, so an extension can wrap the
        default (add text to ``character.context``, drop turns) instead of rewriting it. Return a
        ChatPrompt, a prompt string (stop strings then come from the default), or None to pass."""

    @hookspec
    def logits_processor(self, request: GenerationRequest, state: dict[str, Any]) -> list[Any] | None:
        """Called by the generation core before every generation. Return transformers
        LogitsProcessor-compatible objects (``__call__(input_ids, scores) -> scores``); they run after
        Hearth's samplers. Returning any forces the pipeline path (logits through Hearth's pipeline)."""

    @hookspec
    def tokenizer_modifier(self, state: dict[str, Any], prompt: str, input_ids: list[int]) -> list[int] | None:
        """Called right after the prompt is tokenized. Return the token ids to generate from."""

    @hookspec
    def custom_css(self) -> str | None:
        """Called once when the UI launches. Return CSS added to the page."""

    @hookspec
    def custom_js(self) -> str | None:
        """Called once when the UI launches. Return JavaScript run on page load."""


BUILTIN_LOADER_MODULES = (
    "loaders.llamacpp",
    "loaders.llamacpp_hf",
    "loaders.transformers_loader",
    "loaders.remote",
    "loaders.exllamav2",
    "loaders.exllamav3",
)


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with Hearth's hookspecs, the built-in loaders and installed plugins."""
    import importlib

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(LoaderSpecs)
    pm.add_hookspecs(ExtensionSpecs)
    for module_name in BUILTIN_LOADER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        pm.register(module, name=module_name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(LOADER_ENTRY_POINT_GROUP)
    return pm


def collect_loaders(pm: pluggy.PluginManager) -> dict[str, type[Loader]]:
    """All loader classes by name, in registration order (built-ins first)."""
    loaders: dict[str, type[Loader]] = {}
    for batch in reversed(pm.hook.hearth_loaders()):
        for cls in batch:
            if cls.name in loaders:
                log.warning("loader name %r is already taken; skipping %s", cls.name, cls)
                continue
            loaders[cls.name] = cls
    return loaders
