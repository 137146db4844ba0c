"""The contract between the UI shell and its tabs: one `UIContext` handed to every tab builder.

Tabs never reach for globals; they get the App and the shared per-browser-session states from here and
use them as inputs/outputs of their event handlers. The states hold plain dicts (JSON-able, so Gradio can
copy them per session), and the helpers below turn them into the core's typed objects at the edge.

State shapes (the Parameters tab writes them, the Chat/Default/Notebook tabs read them):

- ``params``: ``{"sampling": SamplingParams.model_dump(), "max_new_tokens": int,
  "truncation_length": int, "add_bos_token": bool, "skip_special_tokens": bool, "stop": list[str]}``.
  ``skip_special_tokens`` is a display preference (decoding already drops special tokens); it is not
  part of a GenerationRequest.
- ``character``: ``{"character": str | None, "user_name": str | None, "mode": "chat" | "chat-instruct" |
  "instruct", "instruction_template": str | None, "instruction_template_text": str | None,
  "chat_instruct_command": str, "system_message": str | None, "start_reply_with": str, "enable_thinking":
  bool | None, "thinking_budget": int}``: exactly the fields of `webui.chat_service.ChatOptions` (see there)
  bar the API-only ``default_persona``, ``tools`` and ``template_kwargs``. ``character``
  None or "Assistant" means the built-in Assistant; ``user_name`` None the card's name, else "You";
  ``instruction_template`` None means detected from the loaded model; ``instruction_template_text`` the
  edited Jinja text used instead (None: the named/detected template's own); ``system_message`` None the
  default. Use `chat_options(state)`, which also reads blank texts as "not set". Several tabs write it
  (Character sub-tab: character, user_name; Instruction template sub-tab: instruction_template,
  instruction_template_text; Chat tab: mode; its chat options panel: start_reply_with, system_message,
  chat_instruct_command, enable_thinking, thinking_budget), so a handler always returns ``{**state, key: new_value}``, never a fresh dict.
  "Save UI settings" stores it whole under ``chat`` in settings.yaml.
- ``history``: the current chat as ``ChatHistory.to_dict()``, or None before one is opened. The Chat tab
  owns it; the Parameters tab's Chat history sub-tab loads/uploads into it and saves/downloads from it.
  Use `chat_history(state)`.
- ``prompt_transfer``: ``{"target": "default" | "notebook", "text": str, "nonce": int}`` or None. The
  Instruction template sub-tab sets it ("send to Default/Notebook"); the Default and Notebook tabs listen
  to ``ctx.prompt_transfer.change`` and copy ``text`` into their prompt box when ``target`` is theirs (the
  nonce makes sending the same text twice still a change).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr
from pydantic import ValidationError

from webui import sampling
from webui.chat_service import ChatOptions, request_from_settings
from webui.errors import HearthError
from webui.prompts.history import ChatHistory
from webui.sampling import SamplingParams
from webui.sampling.presets import PresetLibrary

if TYPE_CHECKING:
    from webui.app import App
    from webui.generation import GenerationRequest

log = logging.getLogger(__name__)

#: A tab builder an extension's `ui` hook may add (`UIContext.extra_tabs`); called inside the shell's gr.Tabs.
TabBuilder = Callable[["UIContext"], None]

#: The keys of ``ctx.character`` (ChatOptions' fields the UI sets; ``default_persona`` is the API's).
CHARACTER_STATE_KEYS: tuple[str, ...] = (
    "character",
    "user_name",
    "mode",
    "instruction_template",
    "instruction_template_text",
    "chat_instruct_command",
    "system_message",
    "start_reply_with",
    "enable_thinking",
    "thinking_budget",
)

GENERATION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 512,
    "truncation_length": 0,
    "add_bos_token": True,
    "skip_special_tokens": True,
    "stop": [],
}


@dataclass
class UIContext:
    """What every tab builder receives. Created inside the shell's `gr.Blocks` context."""

    app: App
    params: gr.State
    character: gr.State
    history: gr.State
    prompt_transfer: gr.State
    #: Tabs appended after Session (extensions' UI blocks use this).
    extra_tabs: list[TabBuilder] = field(default_factory=list)


def default_params(app: App) -> dict[str, Any]:
    """The starting value of ``ctx.params``: the --preset if given, else the samplers saved in
    settings.yaml (``sampling``), else neutral; generation settings from ``generation`` over defaults."""

    saved_sampling = app.settings.extra.get("sampling")
    values = sampling.SamplingParams().model_dump()
    try:
        if app.settings.preset:
            values = PresetLibrary.for_settings(app.settings).load(app.settings.preset).model_dump()
        elif isinstance(saved_sampling, dict):
            values = sampling.SamplingParams.model_validate(saved_sampling).model_dump()
    except (HearthError, ValidationError) as exc:
        log.warning("starting with neutral samplers: %s", exc)
    saved = app.settings.extra.get("generation")
    generation = {**GENERATION_DEFAULTS, **(saved if isinstance(saved, dict) else {})}
    return {"sampling": values, **{k: generation[k] for k in GENERATION_DEFAULTS}}


def default_character_state(app: App) -> dict[str, Any]:
    """The starting value of ``ctx.character`` (the session's saved choices, else ChatOptions' defaults)."""

    saved = app.settings.extra.get("chat")
    base = ChatOptions().__dict__ | (saved if isinstance(saved, dict) else {})
    return {k: base[k] for k in CHARACTER_STATE_KEYS}


def _as_gr_error(exc: ValidationError) -> gr.Error:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p != "sampling") or "request"
        parts.append(f"{where}: {error['msg']}")
    return gr.Error("; ".join(parts), print_exception=False)


def sampling_params(params: dict[str, Any]) -> SamplingParams:
    """``ctx.params["sampling"]`` validated; a bad field raises gr.Error naming it."""

    try:
        return SamplingParams.model_validate(params.get("sampling") or {})
    except ValidationError as exc:
        raise _as_gr_error(exc) from None


def generation_request(params: dict[str, Any], prompt: str, **overrides: Any) -> GenerationRequest:
    """A validated GenerationRequest from ``ctx.params`` and a prompt (overrides win, e.g. stop=[...])."""

    try:
        return request_from_settings(params, prompt=prompt, **overrides)
    except ValidationError as exc:
        raise _as_gr_error(exc) from None


def chat_options(character: dict[str, Any]) -> ChatOptions:
    """``ctx.character`` as the chat service's options."""

    known = {k: v for k, v in (character or {}).items() if k in ChatOptions.__dataclass_fields__}
    for key in ("system_message", "instruction_template_text", "chat_instruct_command"):
        if not str(known.get(key) or "").strip():
            known.pop(key, None)  # blank: the default (None, or the standard chat-instruct command)
    if known.get("start_reply_with") is None:
        known.pop("start_reply_with", None)
    return ChatOptions(**known)


def chat_history(history: dict[str, Any] | None, character: str = "Assistant") -> ChatHistory | None:
    """``ctx.history`` as a ChatHistory (None when no chat is open)."""

    if not history:
        return None
    return ChatHistory.from_data(
        history, str(history.get("character") or character), str(history.get("id") or "")
    )


def enclosing_tabs(block: gr.blocks.Block) -> list[gr.Tab]:
    """The tabs `block` sits in, innermost first (to refresh it when one of them is selected)."""
    tabs, parent = [], getattr(block, "parent", None)
    while parent is not None:
        if isinstance(parent, gr.Tab):
            tabs.append(parent)
        parent = getattr(parent, "parent", None)
    return tabs
