"""The Chat tab: its widgets and their wiring over `webui.ui.chat_session.ChatSession`, which does the work.

Every action ends by writing ``ctx.history`` (the open chat as a dict); one sync handler, run on page load
and whenever ``ctx.character`` or ``ctx.history`` change (here or in the Parameters tab), renders the
chatbot, the chat list, the picture and the mode from those states. The browser keeps the id of the chat it
has open per character (``gr.BrowserState``), so a reload reopens that chat rather than the newest.

A reply shows at once: the user's message and a typing bubble, with the generation buttons disabled until
it ends, errors included. Streaming updates the chatbot directly and writes the history state once, when
the reply ends. Errors are one toast (`toasts`); the outputs keep their values.

Clicking a message opens its tools under the chat (`webui.ui.message_tools`: edit, versions, branch,
delete). A saved chat file of the character that cannot be read is named in a toast when its chats open.

Images are attached in the input box (a `gr.MultimodalTextbox`: drop, paste or pick them), whose value is
``{"text": ..., "files": [paths]}``. Each file is checked when the message is sent (a bad one is a toast
naming it); a model that cannot take them is a warning before anything is shown. Either way the message
and its images stay in the box.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from webui.chat_service import ChatOptions, ChatService
from webui.errors import HearthError
from webui.media import MediaError
from webui.prompts.chat import CHAT_MODES
from webui.prompts.history import ChatHistory
from webui.ui.chat_images import image_file, read_attachments
from webui.ui.chat_options_panel import build_chat_options_panel
from webui.ui.chat_session import ChatRef, ChatSession, Reply
from webui.ui.chat_view import NO_MODEL, chat_messages, dropped_notice, reply_messages, token_label
from webui.ui.confirm import ConfirmButton
from webui.ui.context import UIContext, chat_options, enclosing_tabs
from webui.ui.message_tools import build_message_tools
from webui.ui.streaming import CancelBoard, throttle, toasts

#: The shortcuts (see `webui.ui.KEYS_JS`), shown under the input box.
CHAT_KEYS = "Enter: send · Shift+Enter: new line · Ctrl+Enter: regenerate · Esc: stop"
COPY_JS = "(text) => { if (text && navigator.clipboard) { navigator.clipboard.writeText(text); } }"
BUSY = "A reply is still being written: wait for it, or press Stop (Esc)."
#: localStorage key of the open chat per character. Gradio sends a BrowserState's secret to the browser,
#: so it only obfuscates; a fixed one keeps the value readable after a server restart (it holds chat ids).
OPEN_CHATS_KEY = "hearth-open-chats"
States = dict[str, Any] | None
Start = Callable[[ChatHistory, ChatOptions, threading.Event], Reply]
#: The input box's value: ``{"text": str, "files": [path, ...]}`` (a plain string from older callers).
Box = dict[str, Any] | str | None
#: Gradio turns a longer paste into a text file attachment; a chat message is text, however long.
PASTE_AS_TEXT = 10**9


def box_text(box: Box) -> str:
    return box if isinstance(box, str) else str((box or {}).get("text") or "")


def box_files(box: Box) -> list[str]:
    return [] if isinstance(box, str) else [str(f) for f in (box or {}).get("files") or []]


def _typed(text: str, box: Box) -> dict[str, Any]:
    """The input box showing `text`, keeping the images attached in `box`."""
    return {"text": text, "files": box_files(box)}


def _buttons(busy: bool) -> tuple[Any, ...]:
    """Generate, Regenerate, Continue, Impersonate: disabled while a reply is written."""
    generate = gr.Button("Writing…" if busy else "Generate", interactive=not busy)
    return generate, *(gr.Button(interactive=not busy) for _ in range(3))


class ChatTab:
    """The Gradio adapters: widget values in, `ChatSession` calls, widget updates out."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx = ctx
        self.session = ChatSession(ChatService(ctx.app))
        self.cancels = CancelBoard()

    # -- rendering -----------------------------------------------------------------------------------
    def sync(
        self, character_state: dict[str, Any], history_state: States, remembered: States
    ) -> tuple[Any, ...]:
        """Chatbot (with names and the character's picture), chat list, picture, mode, history, and the
        browser's open-chat record."""
        options = chat_options(character_state)
        try:
            for problem in self.session.unreadable(history_state, character_state):
                gr.Warning(problem)
            history = self.session.current(history_state, character_state, remembered)
            speakers, picture = self.session.speakers(options), self.session.picture(options)
            choices = self.session.chat_choices(history)
        except HearthError as exc:
            gr.Warning(str(exc))
            return (gr.skip(),) * 6
        changed = history_state is None or history_state.get("id") != history.chat_id
        known = remembered if isinstance(remembered, dict) else {}
        return (
            gr.Chatbot(value=chat_messages(history, speakers), avatar_images=(None, picture)),
            gr.Dropdown(choices=choices, value=history.chat_id),
            gr.Image(value=picture, visible=picture is not None),
            options.mode,
            history.to_dict() if changed else gr.skip(),
            gr.skip()
            if known.get(history.character) == history.chat_id
            else {**known, history.character: history.chat_id},
        )

    def status(
        self, box: Box, history_state: States, character_state: dict[str, Any], params: dict[str, Any]
    ) -> tuple[Any, Any]:
        """The no-model notice and the token count; never raises (it runs as the user types)."""
        loaded = self.ctx.app.models.model is not None
        try:
            history = self.session.current(history_state, character_state)
            count = self.session.token_count(history, box_text(box), chat_options(character_state), params)
            label = token_label(count)
        except HearthError as exc:
            label = f"Tokens: {exc}"
        return gr.Markdown(NO_MODEL, visible=not loaded), label

    # -- replies -------------------------------------------------------------------------------------
    def _reply(
        self,
        start: Start,
        history_state: States,
        character_state: dict[str, Any],
        request: gr.Request | None,
        box: Box = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Stream the reply ``start(history, options, cancel)`` makes into (chatbot, history, input box,
        notice, *buttons): the user's message and a typing bubble at once, the buttons busy until the end.
        `box`: the input box's value at sending (put back, images too, if the reply cannot start)."""
        skip = gr.skip()
        if self.cancels.busy(request):
            gr.Warning(BUSY)
            yield (skip,) * 8
            return
        with toasts(), self.cancels.running(request) as cancel:
            options = chat_options(character_state)
            history = self.session.current(history_state, character_state)
            try:
                reply = start(history, options, cancel)
            except MediaError as exc:  # images the model cannot take: nothing shown, the box keeps them
                gr.Warning(str(exc))
                yield (skip,) * 8
                return
            speakers = self.session.speakers(options)
            shown = chat_messages(reply.shown, speakers, typing=reply.typing)
            yield shown, skip, "" if reply.sent else skip, "", *_buttons(True)
            try:
                first = next(reply.updates)  # the prompt is planned here: a message that cannot fit fails now
            except StopIteration:
                return
            except HearthError as exc:  # the message goes back to the input box, the chat stays as it was
                gr.Warning(str(exc))  # a toast, not gr.Error: that would mark every output as failed
                back = _typed(reply.user_text or "", box) if reply.sent else skip
                yield chat_messages(history, speakers), skip, back, skip, *_buttons(False)
                return
            for update in throttle(itertools.chain([first], reply.updates)):
                if not update.done:
                    yield reply_messages(update, speakers, reply.typing), *(skip,) * 7
                    continue
                messages = chat_messages(update.history, speakers)
                if update.dropped_turns:
                    gr.Info(dropped_notice(update.dropped_turns))
                notice = dropped_notice(update.dropped_turns)
                yield messages, update.history.to_dict(), skip, notice, *_buttons(False)

    def send(
        self,
        box: Box,
        history_state: States,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """The input box's message and images sent; a file that is no usable image is one error toast
        naming it, and nothing is sent."""
        with toasts():
            images = read_attachments(box_files(box))
        text = box_text(box)
        yield from self._reply(
            lambda history, options, cancel: self.session.send(
                history, text, options, params, cancel, images
            ),
            history_state,
            character_state,
            request,
            box,
        )

    def redo(self, action: Callable[..., Reply]) -> Callable[..., Iterator[tuple[Any, ...]]]:
        """The handler of Regenerate or Continue: ``action(history, options, settings, cancel)``."""

        def handler(
            history_state: States,
            character_state: dict[str, Any],
            params: dict[str, Any],
            request: gr.Request,
        ) -> Iterator[tuple[Any, ...]]:
            yield from self._reply(
                lambda history, options, cancel: action(history, options, params, cancel),
                history_state,
                character_state,
                request,
            )

        return handler

    def impersonate(
        self,
        box: Box,
        history_state: States,
        character_state: dict[str, Any],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """The model writes the user's message into the input box (outputs: the box, *buttons); images
        attached there stay."""
        if self.cancels.busy(request):
            gr.Warning(BUSY)
            yield (gr.skip(),) * 5
            return
        with toasts(), self.cancels.running(request) as cancel:
            history = self.session.current(history_state, character_state)
            options = chat_options(character_state)
            texts = self.session.impersonate(history, box_text(box), options, params, cancel)
            yield gr.skip(), *_buttons(True)
            for typed in throttle(texts):
                yield _typed(typed, box), *(gr.skip(),) * 4
            yield gr.skip(), *_buttons(False)

    def busy_notice(self) -> None:
        gr.Warning(BUSY)

    def idle(self, request: gr.Request) -> tuple[Any, ...]:
        """After any reply, failed ones included: the buttons back, unless another reply runs."""
        return (gr.skip(),) * 4 if self.cancels.busy(request) else _buttons(False)

    # -- hand edits ----------------------------------------------------------------------------------
    def remove(self, box: Box, history_state: States, character_state: dict[str, Any]) -> tuple[Any, Any]:
        """Drop the last exchange; its message (and images) go back to the input box unless something is
        typed or attached there."""
        with toasts():
            before = self.session.current(history_state, character_state)
            history, text = self.session.remove_last(before)
        if box_text(box).strip() or box_files(box):
            return history.to_dict(), gr.skip()
        images = self.session.removed_images(before, history)
        return history.to_dict(), {"text": text, "files": [image_file(image) for image in images]}

    def last_reply(self, history_state: States, character_state: dict[str, Any]) -> str:
        with toasts():
            reply = self.session.last_reply(self.session.current(history_state, character_state))
        gr.Info("Last reply copied")
        return reply

    def add_turn(self, role: str) -> Callable[[Box, States, dict[str, Any]], tuple[Any, str]]:
        def add(box: Box, history_state: States, character_state: dict[str, Any]) -> tuple[Any, str]:
            with toasts():
                images = read_attachments(box_files(box))
                history = self.session.current(history_state, character_state)
                return self.session.add_turn(history, role, box_text(box), images).to_dict(), ""

        return add

    # -- the chat list ------------------------------------------------------------------------------
    def open_chat(self, chat_id: str | None, character_state: dict[str, Any]) -> Any:
        if not chat_id:
            return gr.skip()
        with toasts():
            return self.session.load_chat(chat_options(character_state), chat_id).to_dict()

    def start_chat(self, character_state: dict[str, Any]) -> dict[str, Any]:
        with toasts():
            return self.session.start_chat(chat_options(character_state)).to_dict()

    def rename(self, name: str, history_state: States, character_state: dict[str, Any]) -> tuple[Any, str]:
        with toasts():
            history = self.session.current(history_state, character_state)
            return self.session.rename(history, name).to_dict(), ""

    def to_delete(self, history_state: States, character_state: dict[str, Any]) -> ChatRef:
        with toasts():
            return self.session.to_delete(self.session.current(history_state, character_state))

    def delete(self, chat: ChatRef) -> None:
        """Delete the confirmed chat; the history state is emptied, so the sync opens the next one."""
        with toasts():
            self.session.delete(chat)
        gr.Info(f"Deleted chat {chat}")


def build_chat_tab(ctx: UIContext) -> None:
    tab = ChatTab(ctx)
    remembered = gr.BrowserState({}, storage_key=OPEN_CHATS_KEY, secret=OPEN_CHATS_KEY)
    with gr.Row():
        with gr.Column(scale=4):
            model_notice = gr.Markdown(NO_MODEL, visible=False, elem_id="chat-model-notice")
            chatbot = gr.Chatbot(
                label="Chat",
                height=560,
                buttons=["copy", "copy_all"],
                feedback_options=None,
                elem_id="chat-chatbot",
            )
            notice = gr.Markdown(elem_id="chat-notice")
            build_message_tools(tab, chatbot, notice)  # click a message: edit, versions, branch, delete
            with gr.Row():
                # one line that grows: Gradio then sends on Enter and keeps Shift+Enter a newline
                user_input = gr.MultimodalTextbox(
                    show_label=False,
                    placeholder="Send a message (Enter) · drop, paste or attach images",
                    file_types=["image"],
                    file_count="multiple",
                    lines=1,
                    max_lines=12,
                    scale=6,
                    submit_btn=False,
                    max_plain_text_length=PASTE_AS_TEXT,
                    elem_id="chat-input",
                )
                generate = gr.Button("Generate", variant="primary", scale=1, elem_id="chat-generate")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
            tokens = gr.Markdown(elem_id="chat-tokens", elem_classes="hearth-keys")
            gr.Markdown(CHAT_KEYS, elem_id="chat-keys", elem_classes="hearth-keys")
            with gr.Row():
                regenerate = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
                continue_ = gr.Button("Continue", size="sm", elem_id="chat-continue")
                impersonate = gr.Button("Impersonate", size="sm", elem_id="chat-impersonate")
                remove_last = gr.Button("Remove last", size="sm", elem_id="chat-remove-last")
                copy_last = gr.Button("Copy last reply", size="sm", elem_id="chat-copy-last")
                dummy_message = gr.Button("Send dummy message", size="sm", elem_id="chat-dummy-message")
                dummy_reply = gr.Button("Send dummy reply", size="sm", elem_id="chat-dummy-reply")
            busy = gr.Button(visible="hidden", elem_id="chat-busy")  # pressed by Enter while busy (KEYS_JS)
        with gr.Column(scale=1, min_width=240):
            picture = gr.Image(
                label="Character", interactive=False, height=240, visible=False, elem_id="chat-picture"
            )
            mode = gr.Radio(list(CHAT_MODES), label="Mode", value="chat", elem_id="chat-mode")
            build_chat_options_panel(ctx)
            chats = gr.Dropdown(label="Past chats", choices=[], elem_id="chat-list")
            new_chat = gr.Button("New chat", size="sm", elem_id="chat-new")
            with gr.Accordion("Rename / delete", open=False, elem_id="chat-rename-delete"):
                new_name = gr.Textbox(label="New name", elem_id="chat-new-name")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm", elem_id="chat-rename")
                    delete = ConfirmButton("Delete", "chat-delete")

    hidden = {"show_progress": "hidden"}
    gr.on(
        None,
        tab.sync,
        [ctx.character, ctx.history, remembered],
        [chatbot, chats, picture, mode, ctx.history, remembered],
        **hidden,
    )
    status_inputs = [user_input, ctx.history, ctx.character, ctx.params]
    gr.on(None, tab.status, status_inputs, [model_notice, tokens], trigger_mode="always_last", **hidden)
    for enclosing in enclosing_tabs(chatbot):  # a model loaded in the Model tab meanwhile
        enclosing.select(tab.status, status_inputs, [model_notice, tokens], **hidden)

    # -- replies: busy until done, the buttons back after any end ------------------------------------
    buttons = [generate, regenerate, continue_, impersonate]
    streamed = [chatbot, ctx.history, user_input, notice, *buttons]
    chat_inputs = [ctx.history, ctx.character, ctx.params]
    for reply in (
        gr.on([generate.click, user_input.submit], tab.send, [user_input, *chat_inputs], streamed, **hidden),
        regenerate.click(tab.redo(tab.session.regenerate), chat_inputs, streamed, **hidden),
        continue_.click(tab.redo(tab.session.continue_reply), chat_inputs, streamed, **hidden),
        impersonate.click(tab.impersonate, [user_input, *chat_inputs], [user_input, *buttons], **hidden),
    ):
        # Gradio runs .then() only after a success here, .failure() after an error: the buttons need both
        reply.then(tab.idle, None, buttons, **hidden)
        reply.failure(tab.idle, None, buttons, **hidden)
    busy.click(tab.busy_notice, None, None, **hidden)
    stop.click(tab.cancels.stop, None, None, queue=False)

    # -- hand edits (each saves the chat) ------------------------------------------------------------
    states = [ctx.history, ctx.character]
    remove_last.click(tab.remove, [user_input, *states], [ctx.history, user_input])
    # the reply travels through a hidden box to the clipboard: the input box keeps what is being typed
    clipboard = gr.Textbox(visible="hidden", elem_id="chat-clipboard")
    copy_last.click(tab.last_reply, states, clipboard).success(None, clipboard, None, js=COPY_JS)
    dummy_message.click(tab.add_turn("user"), [user_input, *states], [ctx.history, user_input])
    dummy_reply.click(tab.add_turn("assistant"), [user_input, *states], [ctx.history, user_input])

    # -- mode and the past chats; the chatbot's own Clear (trash) button starts a new chat ------------
    mode.input(lambda value, state: {**state, "mode": value}, [mode, ctx.character], ctx.character)
    chats.input(tab.open_chat, [chats, ctx.character], ctx.history)
    gr.on([new_chat.click, chatbot.clear], tab.start_chat, ctx.character, ctx.history)
    rename.click(tab.rename, [new_name, *states], [ctx.history, new_name])
    delete.wire(tab.to_delete, states, tab.delete, [ctx.history], cancel_on=[chats.input, new_chat.click])
