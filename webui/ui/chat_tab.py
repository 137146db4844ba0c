"""The Chat tab: a streaming chatbot over `webui.session.ChatService`, plus the character's past chats.

Every action ends by writing ``ctx.history`` (the open chat as a dict); one sync handler, run on page load
and whenever ``ctx.character`` or ``ctx.history`` change (here or in the Parameters tab), renders the
chatbot, the chat list, the picture and the mode from those two states. Streaming updates the chatbot
directly and writes the history state once, when the reply ends, so the sync does not run per token; on disk
the chat service saves the user's message before the reply starts and the reply when it ends or is stopped. Prompt
building, sampling and saving all happen in the chat service and `webui.prompts.chat`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.loader_api import HearthError
from webui.prompts import chat as chat_ops
from webui.prompts.chat import CHAT_MODES, substitute_names, user_name_for
from webui.prompts.history import ChatHistory, HistoryError
from webui.session import ChatOptions, ChatService
from webui.ui.context import UIContext, chat_history, chat_options
from webui.ui.markup import literal_markdown
from webui.ui.streaming import CancelBoard, throttle, toasts

#: The shortcuts (see `webui.ui.KEYS_JS`), shown under the input box.
CHAT_KEYS = "Enter: send · Shift+Enter: new line · Ctrl+Enter: regenerate · Esc: stop"
COPY_JS = "(text) => { if (text && navigator.clipboard) { navigator.clipboard.writeText(text); } }"


def chat_messages(history: ChatHistory | None) -> list[dict[str, str]]:
    """The chatbot's value: one message dict per turn (markdown and code are rendered by the chatbot; raw
    HTML is shown as text, see `literal_markdown`).

    A turn an extension rewrote for the model is shown as the person typed it (``metadata["visible"]``)."""
    if history is None:
        return []
    return [
        {"role": t.role, "content": literal_markdown(str(t.metadata.get("visible") or t.content))}
        for t in history.turns
    ]


def dropped_notice(dropped_turns: int) -> str:
    if not dropped_turns:
        return ""
    turns = "turn was" if dropped_turns == 1 else "turns were"
    return f"ℹ️ The {dropped_turns} oldest {turns} left out of the prompt to fit the context."


class ChatSession:
    """The chat tab's non-Gradio side: which chat is open for a character, and the past-chats list."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def character_name(self, options: ChatOptions) -> str:
        return options.character or "Assistant"

    def new_chat(self, options: ChatOptions) -> ChatHistory:
        """A fresh chat opening with the character's greeting (names substituted)."""
        character = self.service.character(options.character)
        user_name = user_name_for(options.user_name, character)
        greeting = substitute_names(character.greeting, user_name, character.name)
        return ChatHistory.new(self.character_name(options), greeting)

    def open_chat(self, options: ChatOptions) -> ChatHistory:
        """The character's most recent chat, else a new one."""
        return self.service.histories.latest(self.character_name(options)) or self.new_chat(options)

    def current(self, history_state: dict[str, Any] | None, character_state: dict[str, Any]) -> ChatHistory:
        """The open chat; a chat of another character (just switched) is replaced by this one's."""
        options = chat_options(character_state)
        history = chat_history(history_state)
        if history is None or history.character != self.character_name(options):
            return self.open_chat(options)
        return history

    def chat_choices(self, history: ChatHistory) -> list[tuple[str, str]]:
        """(label, chat id) of the character's saved chats, newest first; an unsaved open chat on top."""
        summaries = self.service.histories.list_chats(history.character)
        choices = [(f"{s.title} · {s.updated[:16].replace('T', ' ')}", s.chat_id) for s in summaries]
        if history.chat_id not in {s.chat_id for s in summaries}:
            choices.insert(0, (f"{history.display_title()} (unsaved)", history.chat_id))
        return choices

    def picture(self, options: ChatOptions) -> str | None:
        path = self.service.character(options.character).picture_path
        return str(path) if path else None


def build_chat_tab(ctx: UIContext) -> None:
    session = ChatSession(ChatService(ctx.app))
    cancels = CancelBoard()
    with gr.Row():
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(
                label="Chat",
                height=560,
                buttons=["copy", "copy_all"],
                feedback_options=None,
                elem_id="chat-chatbot",
            )
            notice = gr.Markdown(elem_id="chat-notice")
            with gr.Row():
                # one line that grows: Gradio then sends on Enter and keeps Shift+Enter a newline
                user_input = gr.Textbox(
                    show_label=False,
                    placeholder="Send a message (Enter)",
                    lines=1,
                    max_lines=12,
                    scale=6,
                    elem_id="chat-input",
                )
                generate = gr.Button("Generate", variant="primary", scale=1, elem_id="chat-generate")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
            gr.Markdown(CHAT_KEYS, elem_id="chat-keys", elem_classes="hearth-keys")
            with gr.Row():
                regenerate = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
                continue_ = gr.Button("Continue", size="sm", elem_id="chat-continue")
                impersonate = gr.Button("Impersonate", size="sm", elem_id="chat-impersonate")
                remove_last = gr.Button("Remove last", size="sm", elem_id="chat-remove-last")
                copy_last = gr.Button("Copy last reply", size="sm", elem_id="chat-copy-last")
                dummy_message = gr.Button("Send dummy message", size="sm", elem_id="chat-dummy-message")
                dummy_reply = gr.Button("Send dummy reply", size="sm", elem_id="chat-dummy-reply")
        with gr.Column(scale=1, min_width=240):
            picture = gr.Image(
                label="Character", interactive=False, height=240, visible=False, elem_id="chat-picture"
            )
            mode = gr.Radio(list(CHAT_MODES), label="Mode", value="chat", elem_id="chat-mode")
            chats = gr.Dropdown(label="Past chats", choices=[], elem_id="chat-list")
            new_chat = gr.Button("New chat", size="sm", elem_id="chat-new")
            with gr.Accordion("Rename / delete", open=False, elem_id="chat-rename-delete"):
                new_name = gr.Textbox(label="New name", elem_id="chat-new-name")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm", elem_id="chat-rename")
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="chat-delete")

    # -- rendering: page load, and whenever the character or the open chat changes ------------------
    def sync(character_state: dict[str, Any], history_state: dict[str, Any] | None) -> tuple[Any, ...]:
        options = chat_options(character_state)
        try:
            history = session.current(history_state, character_state)
            picture_path = session.picture(options)
        except HearthError as exc:
            gr.Warning(str(exc))
            return (gr.skip(),) * 5
        changed = history_state is None or history_state.get("id") != history.chat_id
        return (
            chat_messages(history),
            gr.Dropdown(choices=session.chat_choices(history), value=history.chat_id),
            gr.Image(value=picture_path, visible=picture_path is not None),
            options.mode,
            history.to_dict() if changed else gr.skip(),
        )

    gr.on(
        None,
        sync,
        [ctx.character, ctx.history],
        [chatbot, chats, picture, mode, ctx.history],
        show_progress="hidden",
    )

    # -- generation ---------------------------------------------------------------------------------
    streamed = [chatbot, ctx.history, user_input, notice]

    def stream(
        history: ChatHistory,
        user_text: str | None,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request | None,
        continue_last: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        with toasts(), cancels.running(request) as cancel:
            session.service.app.models.require()  # fail before the input box is cleared
            pending = [{"role": "user", "content": literal_markdown(user_text)}] if user_text else []
            yield chat_messages(history) + pending, gr.skip(), "" if user_text else gr.skip(), ""
            options = chat_options(character_state)
            updates = session.service.stream_reply(
                history, user_text, options, params, cancel, continue_last=continue_last
            )
            try:
                first = next(updates)  # the prompt is planned here: a message that cannot fit fails now
            except StopIteration:
                return
            except HearthError as exc:  # the message goes back to the input box, the chat stays as it was
                gr.Warning(str(exc))  # a toast, not gr.Error: that would mark every output as failed
                yield chat_messages(history), gr.skip(), user_text or gr.skip(), gr.skip()
                return
            for update in throttle(itertools.chain([first], updates)):
                if not update.done:
                    yield chat_messages(update.history), gr.skip(), gr.skip(), gr.skip()
                    continue
                if update.dropped_turns:
                    gr.Info(dropped_notice(update.dropped_turns))
                yield (
                    chat_messages(update.history),
                    update.history.to_dict(),
                    gr.skip(),
                    dropped_notice(update.dropped_turns),
                )

    def send(
        text: str,
        history_state: dict[str, Any] | None,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        with toasts():
            history = session.current(history_state, character_state)
        yield from stream(history, text.strip() or None, character_state, params, request)

    def regenerate_reply(
        history_state: dict[str, Any] | None,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        with toasts():
            history = chat_ops.regenerate(session.current(history_state, character_state))
        yield from stream(history, None, character_state, params, request)

    def continue_reply(
        history_state: dict[str, Any] | None,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        with toasts():
            history = session.current(history_state, character_state)
        if not history.turns or history.turns[-1].role != "assistant":
            raise gr.Error("there is no reply to continue")
        yield from stream(history, None, character_state, params, request, continue_last=True)

    def impersonate_user(
        text: str,
        history_state: dict[str, Any] | None,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[str]:
        with toasts(), cancels.running(request) as cancel:
            history = session.current(history_state, character_state)
            options = chat_options(character_state)
            updates = session.service.stream_reply(history, text, options, params, cancel, impersonate=True)
            for update in throttle(updates):
                yield update.text

    chat_inputs = [ctx.history, ctx.character, ctx.params]
    gr.on([generate.click, user_input.submit], send, [user_input, *chat_inputs], streamed)
    regenerate.click(regenerate_reply, chat_inputs, streamed)
    continue_.click(continue_reply, chat_inputs, streamed)
    impersonate.click(impersonate_user, [user_input, *chat_inputs], user_input)
    stop.click(cancels.stop, None, None, queue=False)
    _wire_edits(ctx, session, user_input, remove_last, copy_last, dummy_message, dummy_reply)
    _wire_chat_list(ctx, session, chatbot, mode, chats, new_chat, new_name, rename, delete)


def _wire_edits(
    ctx: UIContext,
    session: ChatSession,
    user_input: gr.Textbox,
    remove_last: gr.Button,
    copy_last: gr.Button,
    dummy_message: gr.Button,
    dummy_reply: gr.Button,
) -> None:
    """Buttons that change the chat by hand (no generation); each saves the chat."""
    histories = session.service.histories

    def remove(
        typed: str, history_state: dict[str, Any] | None, character_state: dict[str, Any]
    ) -> tuple[Any, Any]:
        """Drop the last exchange; its message goes back to the input box unless something is typed there."""
        with toasts():
            history, text = chat_ops.remove_last(session.current(history_state, character_state))
            histories.save(history)
        return history.to_dict(), gr.skip() if typed.strip() else text

    def last_reply(history_state: dict[str, Any] | None, character_state: dict[str, Any]) -> str:
        with toasts():
            history = session.current(history_state, character_state)
        replies = [t.content for t in history.turns if t.role == "assistant"]
        if not replies:
            raise gr.Error("there is no reply to copy yet")
        gr.Info("Last reply copied")
        return replies[-1]

    def dummy(role: str) -> Any:
        add = chat_ops.send_dummy_message if role == "user" else chat_ops.send_dummy_reply

        def send_dummy(
            text: str, history_state: dict[str, Any] | None, character_state: dict[str, Any]
        ) -> Any:
            if not text.strip():
                raise gr.Error("type the message first")
            with toasts():
                history = add(session.current(history_state, character_state), text.strip())
                histories.save(history)
            return history.to_dict(), ""

        return send_dummy

    states = [ctx.history, ctx.character]
    remove_last.click(remove, [user_input, *states], [ctx.history, user_input])
    # the reply travels through a hidden box to the clipboard: the input box keeps what is being typed
    clipboard = gr.Textbox(visible="hidden", elem_id="chat-clipboard")
    copy_last.click(last_reply, states, clipboard).success(None, clipboard, None, js=COPY_JS)
    dummy_message.click(dummy("user"), [user_input, *states], [ctx.history, user_input])
    dummy_reply.click(dummy("assistant"), [user_input, *states], [ctx.history, user_input])


def _wire_chat_list(
    ctx: UIContext,
    session: ChatSession,
    chatbot: gr.Chatbot,
    mode: gr.Radio,
    chats: gr.Dropdown,
    new_chat: gr.Button,
    new_name: gr.Textbox,
    rename: gr.Button,
    delete: gr.Button,
) -> None:
    """Mode and the past-chats controls; they write ``ctx.character`` / ``ctx.history`` and the sync renders.

    The chatbot's own Clear (trash) button starts a new chat: the old one stays in the list."""
    histories = session.service.histories

    def set_mode(value: str, character_state: dict[str, Any]) -> dict[str, Any]:
        return {**character_state, "mode": value}

    def open_chat(chat_id: str | None, character_state: dict[str, Any]) -> Any:
        if not chat_id:
            return gr.skip()
        with toasts():
            return histories.load(session.character_name(chat_options(character_state)), chat_id).to_dict()

    def start_chat(character_state: dict[str, Any]) -> dict[str, Any]:
        with toasts():
            history = session.new_chat(chat_options(character_state))
            histories.save(history)
        return history.to_dict()

    def rename_chat(name: str, history_state: dict[str, Any] | None, character_state: dict[str, Any]) -> Any:
        if not name.strip():
            raise gr.Error("type the new name first")
        with toasts():
            history = session.current(history_state, character_state)
            histories.save(history)  # an unsaved chat can be named too
            return histories.rename(history.character, history.chat_id, name).to_dict(), ""

    def delete_chat(history_state: dict[str, Any] | None, character_state: dict[str, Any]) -> dict[str, Any]:
        with toasts():
            history = session.current(history_state, character_state)
            try:
                histories.delete(history.character, history.chat_id)
            except HistoryError:
                pass  # never saved: dropping it is enough
            gr.Info(f"Deleted chat {history.display_title()!r}")
            return session.open_chat(chat_options(character_state)).to_dict()

    mode.input(set_mode, [mode, ctx.character], ctx.character)
    chats.input(open_chat, [chats, ctx.character], ctx.history)
    gr.on([new_chat.click, chatbot.clear], start_chat, ctx.character, ctx.history)
    rename.click(rename_chat, [new_name, ctx.history, ctx.character], [ctx.history, new_name])
    delete.click(delete_chat, [ctx.history, ctx.character], ctx.history)
