"""The Chat tab's prompt options (text-generation-webui's): "Start reply with", "Custom system message" and
"Command for chat-instruct mode".

Each box writes its field of ``ctx.character`` as it is typed (`webui.chat_service.ChatOptions` documents what
the fields do; `webui.ui.context.chat_options` reads a blank box as the default), so the next reply uses it
and "Save UI settings" keeps it. The system message box shows in the instruct modes and the command box in
chat-instruct mode only, following the Mode radio through ``ctx.character["mode"]``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.prompts.chat import DEFAULT_CHAT_INSTRUCT_COMMAND
from webui.ui.context import UIContext

COMMAND_HELP = "<|character|> becomes the character's name, <|prompt|> the chat so far."


def option_visibility(mode: str | None) -> tuple[bool, bool]:
    """(system message box shown, chat-instruct command box shown) for a mode."""
    return mode in ("instruct", "chat-instruct"), mode == "chat-instruct"


def set_option(key: str) -> Any:
    """An ``.input`` handler writing one text field of ``ctx.character``."""

    def write(text: str, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, key: text}

    return write


def build_chat_options_panel(ctx: UIContext) -> None:
    """The three boxes; call inside the Chat tab's right column, under the Mode radio."""
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

    def follow_mode(character_state: dict[str, Any]) -> tuple[Any, Any]:
        shown = option_visibility(character_state.get("mode"))
        return gr.Textbox(visible=shown[0]), gr.Textbox(visible=shown[1])

    ctx.character.change(follow_mode, [ctx.character], [system, command], queue=False, show_progress="hidden")
