"""The Chat tab's prompt options (text-generation-webui's): "Start reply with", "Custom system message" and
"Command for chat-instruct mode", and a thinking model's "Thinking" switch and "Thinking budget".

Each control writes its field of ``ctx.character`` as it is changed (`webui.chat_service.ChatOptions`
documents what the fields do; `webui.ui.context.chat_options` reads a blank box as the default), so the next
reply uses it and "Save UI settings" keeps it. The system message box and the Thinking switch show in the
instruct modes (chat mode does not render the template) and the command box in chat-instruct mode only,
following the Mode radio through ``ctx.character["mode"]``.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from webui.prompts.chat import DEFAULT_CHAT_INSTRUCT_COMMAND
from webui.ui.context import UIContext

COMMAND_HELP = "<|character|> becomes the character's name, <|prompt|> the chat so far."
#: The Thinking radio's values and the ``enable_thinking`` each stands for (unset means on, as llama-server).
THINKING_CHOICES: dict[str, bool | None] = {"On": True, "Off": False}
BUDGET_LABEL = "Thinking budget (tokens, 0 = no limit)"


def option_visibility(mode: str | None) -> tuple[bool, bool]:
    """(system message box shown, chat-instruct command box shown) for a mode."""
    return mode in ("instruct", "chat-instruct"), mode == "chat-instruct"


def set_option(key: str) -> Any:
    """An ``.input`` handler writing one text field of ``ctx.character``."""

    def write(text: str, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, key: text}

    return write


def thinking_choice(enabled: bool | None) -> str:
    """The Thinking radio's value for a saved ``enable_thinking`` (unset: on)."""
    return "Off" if enabled is False else "On"


def set_thinking(choice: str, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "enable_thinking": THINKING_CHOICES.get(choice)}


def budget_tokens(value: Any) -> int | None:
    """The budget typed in the box as a token count, or None when it is not a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if value < 0 or value != int(value):
        return None
    return int(value)


def set_budget(value: Any, state: dict[str, Any]) -> Any:
    """Store a valid budget as it is typed; a half-typed or bad one leaves the state (see `check_budget`)."""
    tokens = budget_tokens(value)
    return gr.skip() if tokens is None else {**state, "thinking_budget": tokens}


def check_budget(value: Any) -> None:
    """When the box is left: a bad budget is one toast naming the box; the box keeps what was typed."""
    if budget_tokens(value) is None:
        raise gr.Error(f"{BUDGET_LABEL}: enter a whole number, 0 or more", print_exception=False)


def build_chat_options_panel(ctx: UIContext) -> None:
    """The option controls; call inside the Chat tab's right column, under the Mode radio."""
    state = ctx.character.value
    show_system, show_command = option_visibility(state.get("mode"))
    start = gr.Textbox(
        label="Start reply with",
        value=state.get("start_reply_with") or "",
        placeholder="Sure thing!",
        info="Every new reply starts with this; the model continues it.",
        elem_id="chat-start-reply-with",
    )
    system = gr.Textbox(
        label="Custom system message",
        value=state.get("system_message") or "",
        placeholder="(empty: the character's context, else the template's default)",
        lines=2,
        max_lines=8,
        visible=show_system,
        elem_id="chat-system-message",
    )
    command = gr.Textbox(
        label="Command for chat-instruct mode",
        value=state.get("chat_instruct_command") or DEFAULT_CHAT_INSTRUCT_COMMAND,
        info=COMMAND_HELP + " Empty: the default command.",
        lines=3,
        max_lines=10,
        visible=show_command,
        elem_id="chat-instruct-command",
    )
    thinking = gr.Radio(
        list(THINKING_CHOICES),
        value=thinking_choice(state.get("enable_thinking")),
        label="Thinking",
        info="For thinking models: passed to the template as enable_thinking (Off closes the block at once).",
        visible=show_system,
        elem_id="chat-thinking",
    )
    budget = gr.Number(
        value=budget_tokens(state.get("thinking_budget")) or 0,
        minimum=0,
        precision=0,
        label=BUDGET_LABEL,
        info="After this many tokens of thinking the block is closed and the answer starts.",
        elem_id="chat-thinking-budget",
    )
    for box, key in (
        (start, "start_reply_with"),
        (system, "system_message"),
        (command, "chat_instruct_command"),
    ):
        # off the queue, so a keystroke is stored at once and not behind the updates it sets off (the
        # chat's re-render): a Generate pressed right after typing sees the text; always_last: one write in
        # flight, then the latest text, so no keystroke is lost and none lands out of order
        box.input(
            set_option(key),
            [box, ctx.character],
            ctx.character,
            trigger_mode="always_last",
            queue=False,
            show_progress="hidden",
        )
    quiet: dict[str, Any] = {"queue": False, "show_progress": "hidden"}
    thinking.input(set_thinking, [thinking, ctx.character], ctx.character, **quiet)
    # unprocessed: Gradio's own range check would toast on every half-typed keystroke, without the box's name
    budget.input(
        set_budget,
        [budget, ctx.character],
        ctx.character,
        trigger_mode="always_last",
        preprocess=False,
        **quiet,
    )
    # queued: Gradio shows the error of a queued event only
    budget.blur(check_budget, [budget], None, preprocess=False, show_progress="hidden")

    def follow_mode(character_state: dict[str, Any]) -> tuple[Any, Any, Any]:
        shown = option_visibility(character_state.get("mode"))
        return gr.Textbox(visible=shown[0]), gr.Textbox(visible=shown[1]), gr.Radio(visible=shown[0])

    ctx.character.change(follow_mode, [ctx.character], [system, command, thinking], **quiet)
