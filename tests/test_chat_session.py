"""The Chat tab's logic without a browser (`webui.ui.chat_session.ChatSession`) on the tiny llama.cpp model:
replies, hand edits, the past-chats list, the chat a browser had open, the token count; and the rendering
helpers (names, the typing bubble)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from webui.chat_service import ChatError, ChatOptions, ChatService
from webui.errors import HearthError, NoModelLoaded
from webui.prompts.characters import Character
from webui.prompts.history import ChatHistory
from webui.ui.chat_session import ChatSession, TokenCount, chat_label, unique
from webui.ui.chat_view import TYPING, chat_messages, token_label
from webui.ui.markup import literal_text

pytest_plugins = ["tests.ui_harness"]
SETTINGS = {"max_new_tokens": 6, "sampling": {"ban_eos_token": True}}
OPTIONS = ChatOptions()


@pytest.fixture
def session(ui_app: Any) -> ChatSession:
    return ChatSession(ChatService(ui_app))


@pytest.fixture
def loaded(session: ChatSession) -> ChatSession:
    session.service.app.models.load("tiny-llama.gguf")
    return session


def greeting_chat() -> ChatHistory:
    return ChatHistory.new("Assistant", "How can I help you today?")


def roles(history: ChatHistory) -> list[str]:
    return [t.role for t in history.turns]


# -- replies -------------------------------------------------------------------------------------------
def test_send_shows_the_message_at_once_then_streams_and_saves_the_reply(loaded: ChatSession) -> None:
    reply = loaded.send(greeting_chat(), "  Hello there  ", OPTIONS, SETTINGS)
    assert roles(reply.shown) == ["assistant", "user"] and reply.shown.turns[-1].content == "Hello there"
    assert reply.typing and reply.user_text == "Hello there"
    assert loaded.histories.latest("Assistant") is None  # nothing planned or saved before the first step
    updates = list(reply.updates)
    assert all(not u.done for u in updates[:-1]) and updates[-1].done
    final = updates[-1].history
    assert roles(final) == ["assistant", "user", "assistant"] and final.turns[-1].content.strip()
    assert loaded.histories.latest("Assistant") == final


def test_regenerate_continue_and_impersonate(loaded: ChatSession) -> None:
    first = list(loaded.send(greeting_chat(), "Tell me a story", OPTIONS, SETTINGS).updates)[-1].history
    regenerated = loaded.regenerate(first, OPTIONS, SETTINGS)
    assert roles(regenerated.shown) == ["assistant", "user"] and regenerated.typing
    again = list(regenerated.updates)[-1].history
    assert roles(again) == ["assistant", "user", "assistant"] and again.chat_id == first.chat_id

    continued = loaded.continue_reply(again, OPTIONS, SETTINGS)
    assert not continued.typing and continued.shown == again
    longer = list(continued.updates)[-1].history
    assert longer.turns[-1].content.startswith(again.turns[-1].content.rstrip())
    assert len(longer.turns[-1].content) > len(again.turns[-1].content.rstrip())

    typed = list(loaded.impersonate(longer, "I think", OPTIONS, SETTINGS))
    assert typed[-1].startswith("I think") and len(typed[-1]) > len("I think")
    assert loaded.histories.latest("Assistant") == longer  # impersonating leaves the chat as it was


def test_nothing_to_continue_or_regenerate_and_no_model_fail_before_anything_is_shown(
    session: ChatSession,
) -> None:
    with pytest.raises(NoModelLoaded):
        session.send(greeting_chat(), "hello", OPTIONS, SETTINGS)  # at the call, not at the first step
    session.service.app.models.load("tiny-llama.gguf")
    with pytest.raises(ChatError, match="no reply to continue"):
        session.continue_reply(ChatHistory.new("Assistant").with_turn("user", "hi"), OPTIONS, SETTINGS)
    with pytest.raises(ChatError, match="no reply to regenerate"):
        session.regenerate(greeting_chat(), OPTIONS, SETTINGS)
    with pytest.raises(HearthError, match="no reply to regenerate"):
        session.regenerate(greeting_chat().with_turn("user", "hi"), OPTIONS, SETTINGS)


def test_stop_before_the_first_token_shows_and_keeps_no_reply(loaded: ChatSession) -> None:
    stopped = threading.Event()
    stopped.set()
    final = list(loaded.send(greeting_chat(), "hello", OPTIONS, SETTINGS, stopped).updates)[-1]
    assert final.finish_reason == "cancelled" and roles(final.history) == ["assistant", "user"]


# -- hand edits ----------------------------------------------------------------------------------------
def test_remove_last_never_deletes_the_greeting(loaded: ChatSession) -> None:
    chat = loaded.add_turn(greeting_chat(), "user", "question")
    chat = loaded.add_turn(chat, "assistant", "answer")
    chat, text = loaded.remove_last(chat)
    assert roles(chat) == ["assistant"] and text == "question"
    assert loaded.histories.latest("Assistant") == chat
    with pytest.raises(ChatError, match="greeting stays"):
        loaded.remove_last(chat)
    # a continued greeting is no longer flagged as one: it still stays
    continued = list(loaded.continue_reply(chat, OPTIONS, SETTINGS).updates)[-1].history
    assert roles(continued) == ["assistant"] and continued.turns[0].content != chat.turns[0].content
    with pytest.raises(ChatError, match="greeting stays"):
        loaded.remove_last(continued)
    assert roles(loaded.histories.latest("Assistant")) == ["assistant"]


def test_copy_and_hand_written_turns_and_their_mistakes(session: ChatSession) -> None:
    with pytest.raises(ChatError, match="no reply to copy"):
        session.last_reply(ChatHistory.new("Assistant"))
    with pytest.raises(ChatError, match="type the message first"):
        session.add_turn(greeting_chat(), "user", "   ")
    chat = session.add_turn(session.add_turn(greeting_chat(), "user", " q "), "assistant", "**a**")
    assert [t.content for t in chat.turns[1:]] == ["q", "**a**"] and session.last_reply(chat) == "**a**"
    assert session.histories.latest("Assistant") == chat


# -- the past-chats list and the open chat -------------------------------------------------------------
def test_new_rename_delete(session: ChatSession) -> None:
    first = session.add_turn(greeting_chat(), "user", "first chat")
    second = session.start_chat(OPTIONS)
    assert {c.chat_id for c in session.histories.list_chats("Assistant")} == {first.chat_id, second.chat_id}
    with pytest.raises(ChatError, match="new name"):
        session.rename(second, " ")
    renamed = session.rename(second, "My second chat")
    assert renamed.chat_id == "My second chat" and renamed.title == "My second chat"
    pending = session.to_delete(renamed)
    assert str(pending) == "'My second chat'"
    session.delete(pending)
    assert [c.chat_id for c in session.histories.list_chats("Assistant")] == [first.chat_id]
    assert session.open_chat(OPTIONS).chat_id == first.chat_id
    session.delete(session.to_delete(ChatHistory.new("Assistant")))  # never saved: nothing to do


def test_the_chat_a_browser_had_open_is_reopened(session: ChatSession) -> None:
    older, newer = (
        replace(
            ChatHistory.new("Assistant", "Hi!").with_turn("user", f"{age} chat"),
            updated=f"2026-01-0{day}T00:00:00+00:00",
        )
        for day, age in ((1, "older"), (2, "newer"))
    )
    session.histories.save(older)
    session.histories.save(newer)
    state = {"character": None}
    assert session.current(None, state).chat_id == newer.chat_id  # nothing remembered: the latest
    assert session.current(None, state, {"Assistant": older.chat_id}).chat_id == older.chat_id
    other = ChatHistory.new("Ada").to_dict()  # the character was just switched: its remembered chat
    assert session.current(other, state, {"Assistant": older.chat_id}).chat_id == older.chat_id
    for stale in ("gone", "../escape", 7, None):
        assert session.current(None, state, {"Assistant": stale}).chat_id == newer.chat_id
    assert session.current(newer.to_dict(), state, {"Assistant": older.chat_id}).chat_id == newer.chat_id


def test_past_chats_rows_never_read_the_same(session: ChatSession) -> None:
    chats = [session.start_chat(OPTIONS) for _ in range(3)]  # within one second, all "New chat"
    titled = session.add_turn(ChatHistory.new("Assistant"), "user", "What is the capital of France, and why?")
    rows = {chat_id: label for label, chat_id in session.chat_choices(titled)}
    labels = list(rows.values())
    assert len(labels) == 4 and len(set(labels)) == 4
    assert rows[titled.chat_id].startswith("What is the capital of France, and why? · ")
    assert sum(label.startswith("New chat · ") for label in labels) == 3
    assert set(rows) == {c.chat_id for c in [*chats, titled]}
    assert unique(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]
    assert chat_label("New chat", "2026-01-02T03:04:05+00:00").count(":") == 2  # to the second
    assert chat_label("x", "not a date") == "x · not a date"


# -- names, typing bubble, token count -----------------------------------------------------------------
def test_speakers_picture_and_rendered_names(session: ChatSession) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    session.service.characters.save(
        Character("Ada", "A mathematician.", "Hello {{user}}.", user_name="Bob", picture=png)
    )
    options = ChatOptions(character="Ada")
    assert session.speakers(options) == ("Bob", "Ada") and session.speakers(OPTIONS) == ("You", "Assistant")
    assert session.picture(options) is not None and session.picture(OPTIONS) is None
    chat = session.new_chat(options).with_turn("user", "a<b")
    assert chat_messages(chat, ("Bob", "Ada"), typing=True) == [
        {"role": "assistant", "content": "**Ada**\n\nHello Bob."},
        {"role": "user", "content": "**Bob**\n\na&lt;b"},
        {"role": "assistant", "content": f"**Ada**\n\n{TYPING}"},
    ]
    assert literal_text("*Dr. <X>*") == "\\*Dr\\. \\<X\\>\\*"


def test_token_count_follows_the_text_and_never_raises(session: ChatSession) -> None:
    chat = greeting_chat()
    assert session.token_count(chat, "hello", OPTIONS, SETTINGS) is None
    assert token_label(None) == "Tokens: no model loaded"
    session.service.app.models.load("tiny-llama.gguf")
    model = session.service.app.models.require()
    empty = session.token_count(chat, "", OPTIONS, SETTINGS)
    typed = session.token_count(chat, "hello world, how are you?", OPTIONS, SETTINGS)
    assert empty is not None and typed is not None
    assert empty.message == 0 and typed.message == len(
        model.tokenize("hello world, how are you?", add_bos=False)
    )
    assert empty.prompt is not None and typed.prompt is not None and typed.prompt > empty.prompt
    assert typed.context == model.n_ctx
    assert session.token_count(chat, "", OPTIONS, {**SETTINGS, "truncation_length": 256}).context == 256
    too_long = session.token_count(chat, "word " * 2 * model.n_ctx, OPTIONS, SETTINGS)
    assert too_long is not None and too_long.prompt is None and "tokens" in too_long.problem
    bad = session.token_count(chat, "hi", OPTIONS, {"max_new_tokens": -3})  # the Parameters tab reports it
    assert bad is not None and bad.prompt is not None
    assert token_label(TokenCount(3, 40, 1024)) == "Message: 3 tokens · Chat prompt: 40 / 1024 tokens"
    assert "⚠️" in token_label(too_long)
