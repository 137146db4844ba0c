"""The Chat tab's tools for one message: click a message in the chat to select it, then edit its text, step
through a reply's versions (``‹ 2/3 ›``), branch a new chat from it, or delete it. The work is
`webui.ui.chat_session.ChatSession`'s (each action saves the chat); this module is the Gradio side.

The selection (``{"chat": id, "turn": index, "text": the text loaded into the edit box}``) is per browser
session. It follows the open chat: another chat opened, or the message gone, and the tools close. The edit
box is refilled when the message changes underneath (a version stepped, a reply regenerated) unless
something was typed there, which is never overwritten.

While a reply is being written every action here is refused with a toast (stop the reply first): the
reply's end writes the chat it started from, which would undo an edit made meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import gradio as gr

from webui.chat_service import ChatError
from webui.prompts import chat as chat_ops
from webui.prompts.history import ChatHistory
from webui.ui.chat_view import message_turn, version_mark
from webui.ui.confirm import ConfirmButton
from webui.ui.context import chat_history, chat_options
from webui.ui.streaming import toasts

if TYPE_CHECKING:
    from webui.ui.chat_tab import ChatTab

#: Said when an edit is tried while a reply streams (the edit box's hint says it up front).
EDIT_BUSY = "A reply is still being written: press Stop (Esc) first, then edit the chat."
EDIT_HINT = "Saved with the chat. While a reply is being written, stop it first (Esc)."
Selection = dict[str, Any] | None
States = dict[str, Any] | None  # ``ctx.history``


class MessageRef(NamedTuple):
    """A message a confirmed Delete will remove; shown as its number and first words."""

    chat_id: str
    turn: int
    preview: str

    def __str__(self) -> str:
        return f"message {self.turn + 1} ({self.preview!r})"


class MessageTools:
    """Handlers over the chat tab's session; each returns widget updates."""

    def __init__(self, tab: ChatTab) -> None:
        self.tab = tab
        self.session = tab.session

    # -- selection ----------------------------------------------------------------------------------
    def select(
        self, history_state: States, character_state: dict[str, Any], evt: gr.SelectData
    ) -> tuple[Any, ...]:
        """A message clicked: select its turn (a Thinking block selects its reply)."""
        with toasts():
            history = self.session.current(history_state, character_state)
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        turn = message_turn(history, int(index))
        if turn is None:  # the typing bubble, or a message not saved yet (a reply streaming)
            return self.closed()
        text = history.turns[turn].content
        selected = {"chat": history.chat_id, "turn": turn, "text": text}
        return (selected, *self._panel(history, turn, character_state), text)

    def refresh(
        self, history_state: States, character_state: dict[str, Any], selected: Selection, typed: str
    ) -> tuple[Any, ...]:
        """The open chat changed: close the tools if their message is gone, else update the label and the
        version buttons, and refill the edit box if the message changed and nothing was typed there."""
        if not selected:
            return (gr.skip(),) * 6
        history = chat_history(history_state)
        if history is None or history.chat_id != selected["chat"] or selected["turn"] >= len(history.turns):
            return self.closed()
        turn = selected["turn"]
        panel = self._panel(history, turn, character_state)
        text = history.turns[turn].content
        if text == selected["text"] or typed != selected["text"]:
            return gr.skip(), *panel, gr.skip()
        return {**selected, "text": text}, *panel, text

    def closed(self) -> tuple[Any, ...]:
        return None, gr.update(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def _panel(self, history: ChatHistory, turn: int, character_state: dict[str, Any]) -> tuple[Any, ...]:
        """The tools shown, their label, and the version buttons (shown for a reply with versions)."""
        shown = history.turns[turn]
        speakers = self.session.speakers(chat_options(character_state))
        who = (
            speakers[0] if shown.role == "user" else speakers[1] if shown.role == "assistant" else shown.role
        )
        label = f"**Message {turn + 1} of {len(history.turns)}** · {who}"
        if chat_ops.is_greeting(history, turn):
            label += " · the greeting"
        mark = version_mark(shown)
        if mark:
            label += f" · version {mark}"
        versions = shown.version_count > 1
        return (
            gr.update(visible=True),
            label,
            gr.update(visible=versions, interactive=shown.version_index > 0),
            gr.update(visible=versions, interactive=shown.version_index < shown.version_count - 1),
        )

    # -- actions ------------------------------------------------------------------------------------
    def _target(
        self,
        selected: Selection,
        history_state: States,
        character_state: dict[str, Any],
        request: gr.Request | None,
    ) -> tuple[ChatHistory, int]:
        """The open chat and the selected turn, refusing while a reply streams or when nothing is selected."""
        if self.tab.cancels.busy(request):
            raise ChatError(EDIT_BUSY)
        history = self.session.current(history_state, character_state)
        if not selected or selected.get("chat") != history.chat_id:
            raise ChatError("select a message first: click it in the chat")
        return history, int(selected["turn"])

    def save(
        self,
        text: str,
        selected: Selection,
        history_state: States,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> tuple[Any, ...]:
        """Save the edit box as the message's text; warn when the chat no longer fits the context."""
        with toasts():
            history, turn = self._target(selected, history_state, character_state, request)
            edited = self.session.edit_message(history, turn, text)
            notice = self.session.fit_notice(edited, chat_options(character_state), params)
        if notice:
            gr.Warning(notice)
        return edited.to_dict(), {**(selected or {}), "text": edited.turns[turn].content}, notice

    def step(self, step: int) -> Callable[..., tuple[Any, ...]]:
        """The handler of the previous (-1) / next (+1) version button."""

        def handler(
            selected: Selection, history_state: States, character_state: dict[str, Any], request: gr.Request
        ) -> tuple[Any, ...]:
            with toasts():
                history, turn = self._target(selected, history_state, character_state, request)
                stepped = self.session.step_version(history, turn, step)
            text = stepped.turns[turn].content
            return stepped.to_dict(), {**(selected or {}), "text": text}, text

        return handler

    def branch(
        self, selected: Selection, history_state: States, character_state: dict[str, Any], request: gr.Request
    ) -> tuple[Any, ...]:
        """A new chat up to the selected message, opened (the one it came from stays in Past chats)."""
        with toasts():
            history, turn = self._target(selected, history_state, character_state, request)
            branched = self.session.branch(history, turn)
        gr.Info(f"Branched a new chat: {branched.display_title()}")
        return branched.to_dict(), *self.closed()[:2]

    def to_delete(
        self, selected: Selection, history_state: States, character_state: dict[str, Any]
    ) -> MessageRef:
        """What a confirmed Delete removes: this message of this chat, whatever is selected by then."""
        with toasts():
            history, turn = self._target(selected, history_state, character_state, None)
            if chat_ops.is_greeting(history, turn):
                raise ChatError("the greeting stays: edit it instead")
            text = " ".join(history.turns[turn].content.split())
        return MessageRef(history.chat_id, turn, text[:30] + ("…" if len(text) > 30 else ""))

    def delete(
        self, ref: MessageRef, history_state: States, character_state: dict[str, Any], request: gr.Request
    ) -> tuple[Any, ...]:
        with toasts():
            history, turn = self._target(
                {"chat": ref.chat_id, "turn": ref.turn}, history_state, character_state, request
            )
            trimmed = self.session.delete_message(history, turn)
        return trimmed.to_dict(), *self.closed()[:2]


def build_message_tools(tab: ChatTab, chatbot: gr.Chatbot, notice: gr.Markdown) -> None:
    """The selected message's tools, built where called (under the chat), wired to `chatbot` clicks."""
    ctx = tab.ctx
    tools = MessageTools(tab)
    selected = gr.State(None)
    with gr.Group(visible=False, elem_id="chat-message-tools") as group:
        label = gr.Markdown(elem_id="chat-msg-label")
        text = gr.Textbox(
            label="Edit the selected message", info=EDIT_HINT, lines=2, max_lines=12, elem_id="chat-msg-text"
        )
        with gr.Row():
            previous = gr.Button("‹ Previous version", size="sm", elem_id="chat-msg-prev")
            following = gr.Button("Next version ›", size="sm", elem_id="chat-msg-next")
            save = gr.Button("Save edit", size="sm", variant="primary", elem_id="chat-msg-save")
            branch = gr.Button("Branch from here", size="sm", elem_id="chat-msg-branch")
            delete = ConfirmButton("Delete message", "chat-msg-delete")
            close = gr.Button("Close", size="sm", elem_id="chat-msg-close")

    states = [ctx.history, ctx.character]
    panel = [selected, group, label, previous, following]
    hidden = {"show_progress": "hidden"}
    chatbot.select(tools.select, states, [*panel, text], **hidden)
    ctx.history.change(tools.refresh, [*states, selected, text], [*panel, text], **hidden)
    close.click(tools.closed, None, [*panel, text], **hidden)
    save.click(tools.save, [text, selected, *states, ctx.params], [ctx.history, selected, notice], **hidden)
    for button, step in ((previous, -1), (following, 1)):
        button.click(tools.step(step), [selected, *states], [ctx.history, selected, text], **hidden)
    branch.click(tools.branch, [selected, *states], [ctx.history, selected, group], **hidden)
    delete.wire(
        tools.to_delete,
        [selected, *states],
        tools.delete,
        [ctx.history, selected, group],
        action_inputs=states,
        cancel_on=[close.click, chatbot.select],
    )
