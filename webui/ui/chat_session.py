"""What the Chat tab does, without Gradio: which chat is open, the past-chats list, replies, hand edits and
the token count. The tab (`webui.ui.chat_tab`) only turns widget values into these calls and their results
into widget updates, so everything here is tested by calling it (tests/test_chat_session.py).

Every method works on plain values: a `ChatHistory`, the `ChatOptions` of ``ctx.character`` and the
Parameters-tab settings dict. A person's mistake (nothing to continue, a blank name, no model) is raised as
a `HearthError`, which the tab shows as one toast; each edit saves the chat before it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from webui.chat_service import ChatError, ChatOptions, ChatService, ChatUpdate, request_from_settings
from webui.errors import HearthError
from webui.media import Image
from webui.prompts import chat as chat_ops
from webui.prompts.chat import substitute_names, user_name_for
from webui.prompts.history import ChatHistory, HistoryError
from webui.ui.context import chat_history, chat_options


@dataclass
class Reply:
    """A reply about to stream. `shown` is the chat to show at once (with the user's new message), before
    the prompt is even planned; `updates` plans it at the first step (a message too long for the context
    fails there) and then streams. `typing`: a new reply bubble belongs after `shown` until text arrives.
    `sent`: whether a new user message (text or images) was sent, which the input box gives up."""

    shown: ChatHistory
    updates: Iterator[ChatUpdate]
    user_text: str | None = None
    typing: bool = True
    sent: bool = False


@dataclass(frozen=True)
class TokenCount:
    """Tokens of the typed message and of the prompt the next reply would read, against the context."""

    message: int
    prompt: int | None
    context: int
    dropped_turns: int = 0
    problem: str = ""


class ChatRef(NamedTuple):
    """A saved chat to act on later (a pending delete); shown as its title."""

    character: str
    chat_id: str
    title: str

    def __str__(self) -> str:
        return repr(self.title)


def chat_label(title: str, updated: str) -> str:
    """A past-chats row: the title (the first words of the first message) and the local time to the second."""
    try:
        when = datetime.fromisoformat(updated).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        when = updated
    return f"{title} · {when}"


def unique(labels: list[str]) -> list[str]:
    """The labels with a counter added to repeats, so no two rows of a list read the same."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


class ChatSession:
    """The chat tab's non-Gradio side over the chat service (prompts, generation, saving)."""

    def __init__(self, service: ChatService) -> None:
        self.service = service
        self.histories = service.histories

    # -- which chat is open ------------------------------------------------------------------------
    def character_name(self, options: ChatOptions) -> str:
        return options.character or "Assistant"

    def speakers(self, options: ChatOptions) -> tuple[str, str]:
        """(the user's name, the character's name) as the chat shows them."""
        character = self.service.character(options.character)
        return user_name_for(options.user_name, character), character.name

    def picture(self, options: ChatOptions) -> str | None:
        path = self.service.character(options.character).picture_path
        return str(path) if path else None

    def new_chat(self, options: ChatOptions) -> ChatHistory:
        """A fresh chat opening with the character's greeting (names substituted)."""
        character = self.service.character(options.character)
        greeting = substitute_names(
            character.greeting, user_name_for(options.user_name, character), character.name
        )
        return ChatHistory.new(self.character_name(options), greeting)

    def open_chat(self, options: ChatOptions, chat_id: str | None = None) -> ChatHistory:
        """The character's chat `chat_id` (the one this browser had open) if it is saved, else its most
        recent chat, else a new one."""
        name = self.character_name(options)
        if chat_id:
            try:
                return self.histories.load(name, chat_id)
            except HearthError:
                pass  # deleted meanwhile, or never saved: the latest one instead
        return self.histories.latest(name) or self.new_chat(options)

    def current(
        self,
        history_state: dict[str, Any] | None,
        character_state: dict[str, Any],
        remembered: Mapping[str, Any] | None = None,
    ) -> ChatHistory:
        """The open chat; before one is open, or when the character was just switched, the chat this
        browser last had open for the character (`remembered`: character -> chat id), else its latest."""
        options = chat_options(character_state)
        history = chat_history(history_state)
        if history is None or history.character != self.character_name(options):
            chat_id = (remembered or {}).get(self.character_name(options))
            return self.open_chat(options, chat_id if isinstance(chat_id, str) else None)
        return history

    def unreadable(self, history_state: dict[str, Any] | None, character_state: dict[str, Any]) -> list[str]:
        """When a character's chats are opened (no chat open yet, or another character's): one line per
        saved chat of theirs that cannot be read. Such a file is left as it is, never overwritten."""
        history = chat_history(history_state)
        name = self.character_name(chat_options(character_state))
        if history is not None and history.character == name:
            return []
        return [f"A saved chat cannot be read and was left as it is: {p}" for p in self.histories.unreadable(name)]

    def chat_choices(self, history: ChatHistory) -> list[tuple[str, str]]:
        """(label, chat id) of the character's saved chats, newest first; an unsaved open chat on top.
        Labels never repeat (two new chats in one second get a counter)."""
        summaries = self.histories.list_chats(history.character)
        labels = unique([chat_label(s.title, s.updated) for s in summaries])
        choices = [(label, s.chat_id) for label, s in zip(labels, summaries, strict=True)]
        if history.chat_id not in {s.chat_id for s in summaries}:
            choices.insert(0, (f"{history.display_title()} (unsaved)", history.chat_id))
        return choices

    # -- the past-chats list -----------------------------------------------------------------------
    def load_chat(self, options: ChatOptions, chat_id: str) -> ChatHistory:
        return self.histories.load(self.character_name(options), chat_id)

    def start_chat(self, options: ChatOptions) -> ChatHistory:
        """A new chat, saved so it is in the list; the old one stays there."""
        history = self.new_chat(options)
        self.histories.save(history)
        return history

    def rename(self, history: ChatHistory, name: str) -> ChatHistory:
        if not name.strip():
            raise ChatError("type the new name first")
        self.histories.save(history)  # an unsaved chat can be named too
        return self.histories.rename(history.character, history.chat_id, name)

    def to_delete(self, history: ChatHistory) -> ChatRef:
        """What a confirmed Delete will remove: this chat, whatever is open by then."""
        return ChatRef(history.character, history.chat_id, history.display_title())

    def delete(self, chat: ChatRef) -> None:
        """Delete the chat (`open_chat` then gives the latest one left, else a new one)."""
        try:
            self.histories.delete(chat.character, chat.chat_id)
        except HistoryError:
            pass  # never saved: dropping it is enough

    # -- hand edits (each saves the chat) ----------------------------------------------------------
    def remove_last(self, history: ChatHistory) -> tuple[ChatHistory, str]:
        """Drop the last exchange and return its user message; the greeting (a first turn of the
        character's, flagged or not: a continued greeting loses its flag) always stays."""
        trimmed, text = chat_ops.remove_last(history)
        if not trimmed.turns and history.turns and history.turns[0].role == "assistant":
            trimmed = history  # only the greeting is left
        if len(trimmed.turns) == len(history.turns):
            kept = " (the greeting stays)" if history.turns else ""
            raise ChatError(f"there is no message to remove{kept}")
        self.histories.save(trimmed)
        return trimmed, text

    @staticmethod
    def removed_images(before: ChatHistory, after: ChatHistory) -> tuple[Image, ...]:
        """The images of the user message `remove_last` took from `before` (to give back with its text)."""
        removed = before.turns[len(after.turns) :]
        return next((t.images for t in removed if t.role == "user"), ())

    def last_reply(self, history: ChatHistory) -> str:
        replies = [t.content for t in history.turns if t.role == "assistant"]
        if not replies:
            raise ChatError("there is no reply to copy yet")
        return replies[-1]

    def add_turn(
        self, history: ChatHistory, role: str, text: str, images: Sequence[Image] = ()
    ) -> ChatHistory:
        """A message or a reply written by hand (no generation), with the `images` attached to it."""
        if not text.strip() and not images:
            raise ChatError("type the message first")
        if images:
            history = history.with_turn(role, text.strip(), images=tuple(images))
        else:
            add = chat_ops.send_dummy_message if role == "user" else chat_ops.send_dummy_reply
            history = add(history, text.strip())
        self.histories.save(history)
        return history

    # -- any message: edit, delete, versions, branch (each saves) ----------------------------------
    def edit_message(self, history: ChatHistory, turn: int, text: str) -> ChatHistory:
        """Message `turn` with the new text (a reply's shown version; its reasoning stays)."""
        return self._saved(chat_ops.edit_turn(history, turn, text.strip()))

    def delete_message(self, history: ChatHistory, turn: int) -> ChatHistory:
        """The chat without message `turn` (any one but the greeting)."""
        return self._saved(chat_ops.delete_turn(history, turn))

    def step_version(self, history: ChatHistory, turn: int, step: int) -> ChatHistory:
        """Reply `turn` showing its previous (`step` -1) or next (+1) version."""
        shown = chat_ops.turn_at(history, turn)
        if shown.version_count < 2:
            raise ChatError("this message has one version: regenerate the last reply to get another")
        target = shown.version_index + step
        if not 0 <= target < shown.version_count:
            raise ChatError(f"there is no version {target + 1}: this reply has {shown.version_count}")
        return self._saved(chat_ops.show_version(history, turn, target))

    def branch(self, history: ChatHistory, turn: int) -> ChatHistory:
        """A new saved chat with this one's messages up to and including `turn`; this one stays."""
        return self._saved(chat_ops.branch(history, turn))

    def _saved(self, history: ChatHistory) -> ChatHistory:
        self.histories.save(history)
        return history

    def fit_notice(self, history: ChatHistory, options: ChatOptions, settings: dict[str, Any]) -> str:
        """After an edit: what the next reply's prompt cannot hold (old turns left out, or a chat that does
        not fit at all), else "". Nothing is removed from the chat either way."""
        count = self.token_count(history, "", options, settings)
        if count is None:
            return ""
        if count.prompt is None:
            return f"⚠️ The chat no longer fits the context: {count.problem}"
        if count.dropped_turns:
            turns = "turn is" if count.dropped_turns == 1 else "turns are"
            return (
                f"⚠️ The chat is now longer than the context: the {count.dropped_turns} oldest {turns} left out "
                "of the next reply's prompt (they stay in the chat)."
            )
        return ""

    # -- replies -----------------------------------------------------------------------------------
    def send(
        self,
        history: ChatHistory,
        text: str | None,
        options: ChatOptions,
        settings: dict[str, Any],
        cancel: threading.Event | None = None,
        images: Sequence[Image] = (),
    ) -> Reply:
        """The reply to `text` and its `images` (neither: the character speaks again). No model, or
        images the model cannot take, is an error before anything is shown, so the message stays where it
        was typed."""
        self.service.app.models.require()
        text, images = (text or "").strip() or None, tuple(images)
        self._check_images(history, images)
        shown = history.with_turn("user", text or "", images=images) if text or images else history
        updates = self.service.stream_reply(history, text, options, settings, cancel, images=images)
        return Reply(shown, updates, text, sent=bool(text or images))

    def regenerate(
        self,
        history: ChatHistory,
        options: ChatOptions,
        settings: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> Reply:
        """The last reply written again, as its newest version (the earlier ones are kept)."""
        self.service.app.models.require()
        if len(history.turns) == 1:  # the greeting, flagged or not (see `remove_last`)
            raise ChatError("there is no reply to regenerate (the greeting stays)")
        base = chat_ops.regenerate(history)
        self._check_images(base)
        updates = self.service.stream_reply(base, None, options, settings, cancel, replacing=history.turns[-1])
        return Reply(base, updates)

    def continue_reply(
        self,
        history: ChatHistory,
        options: ChatOptions,
        settings: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> Reply:
        """The last reply made longer."""
        self.service.app.models.require()
        if not history.turns or history.turns[-1].role != "assistant":
            raise ChatError("there is no reply to continue")
        self._check_images(history)
        updates = self.service.stream_reply(history, None, options, settings, cancel, continue_last=True)
        return Reply(history, updates, typing=False)

    def _check_images(self, history: ChatHistory, images: Sequence[Image] = ()) -> None:
        """MediaError now (before anything is shown) when the loaded model cannot take the chat's images
        and `images` (no vision, or too many); the chat service checks again when it plans the prompt."""
        self.service.check_images(history, images)

    def impersonate(
        self,
        history: ChatHistory,
        text: str,
        options: ChatOptions,
        settings: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """The user's next message as the model would write it (from what is typed); the chat is unchanged."""
        self.service.app.models.require()
        updates = self.service.stream_reply(history, text, options, settings, cancel, impersonate=True)
        return (update.text for update in updates)

    # -- token count -------------------------------------------------------------------------------
    def token_count(
        self, history: ChatHistory, text: str, options: ChatOptions, settings: dict[str, Any]
    ) -> TokenCount | None:
        """The typed message's tokens and the next prompt's (with it), or None while no model is loaded.
        Never raises for what is typed: a prompt that cannot be built says why in ``problem``. Extensions'
        prompt hooks are not run (counting happens on every keystroke)."""
        model = self.service.app.models.model
        if model is None:
            return None
        try:
            sizes = request_from_settings(settings, prompt="")
        except ValidationError:
            sizes = request_from_settings({}, prompt="")  # the Parameters tab reports its own bad fields
        context = min(sizes.truncation_length or model.n_ctx, model.n_ctx)
        message = len(model.tokenize(text, add_bos=False)) if text.strip() else 0
        try:
            build = self.service.prompt_builder(
                max_new_tokens=sizes.max_new_tokens, truncation_length=sizes.truncation_length
            )
            prompt = build(text.strip() or None, history, options, self.service.character_for(options))
        except HearthError as exc:
            return TokenCount(message, None, context, problem=str(exc))
        tokens = len(model.tokenize(prompt.text, add_bos=sizes.add_bos_token))
        tokens += sum(self.service.image_tokens(model, image) for image in prompt.images)
        return TokenCount(message, tokens, context, prompt.dropped_turns)
