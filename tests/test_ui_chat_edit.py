"""Editing a chat (issue 20): any message edited or deleted, a reply's versions, a branch into a new chat;
the session's operations without a browser, then the flows in a real browser over tiny-llama.gguf: click a
message, edit it and regenerate, step between versions and keep one, delete a middle message, branch and find
the new chat in Past chats, a Thinking reply selected through its two chat messages, an edit refused while a
reply is written, and all of it still there after a reload (a damaged chat file named, and kept)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.test_ui_chat import (  # noqa: F401  (fixtures)
    BOT,
    ENABLED,
    USER,
    Gate,
    chat_state,
    max_new_tokens,
    open_chat_tab,
    saved_chat,
    send,
    ui_settings,
    wait_idle,
)
from webui.chat_service import ChatError, ChatOptions, ChatService
from webui.errors import HearthError
from webui.prompts.history import ChatHistory, HistoryStore, Turn
from webui.ui.chat_session import ChatSession
from webui.ui.chat_view import chat_messages, message_turn

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
SETTINGS = {"max_new_tokens": 6, "sampling": {"ban_eos_token": True}}
OPTIONS = ChatOptions()


# -- without a browser ---------------------------------------------------------------------------------
def thinking_chat() -> ChatHistory:
    """Greeting, a question, a reply with reasoning and two versions, a question, a reply."""
    reply = Turn("assistant", "first answer", {"reasoning": "first thought"}).with_version(
        "second answer", reasoning="second thought"
    )
    chat = ChatHistory.new("Assistant", "Hi!").with_turn("user", "q1")
    return chat.with_turns((*chat.turns, reply)).with_turn("user", "q2").with_turn("assistant", "plain")


def test_chatbot_messages_map_to_turns_and_show_versions() -> None:
    chat = thinking_chat()
    messages = chat_messages(chat, ("You", "Assistant"))
    assert len(messages) == 6  # the reply with reasoning is two messages: its Thinking block, its answer
    assert [message_turn(chat, i) for i in range(7)] == [0, 1, 2, 2, 3, 4, None]
    assert messages[3]["content"].startswith("**Assistant** · ‹ 2/2 ›\n\nsecond answer")
    assert messages[2]["content"] == "second thought" and messages[2]["metadata"]["title"] == "Thinking"
    assert message_turn(chat, -1) is None and message_turn(None, 0) is None
    assert chat_messages(chat)[3]["content"] == "‹ 2/2 ›\n\nsecond answer"


@pytest.fixture
def session(ui_app: Any) -> ChatSession:
    return ChatSession(ChatService(ui_app))


def test_session_edits_deletes_steps_and_branches_and_saves_each(session: ChatSession) -> None:
    store = session.histories
    chat = thinking_chat()
    edited = session.edit_message(chat, 2, "  second answer, edited  ")
    assert edited.turns[2].content == "second answer, edited"
    assert edited.turns[2].metadata["reasoning"] == "second thought"  # the reasoning stays with its version
    assert store.load("Assistant", chat.chat_id) == edited
    stepped = session.step_version(edited, 2, -1)
    assert (stepped.turns[2].content, stepped.turns[2].metadata["reasoning"]) == (
        "first answer",
        "first thought",
    )
    assert store.load("Assistant", chat.chat_id) == stepped
    again = session.step_version(stepped, 2, 1)
    assert again.turns[2].content == "second answer, edited"
    with pytest.raises(ChatError, match="no version 3"):
        session.step_version(again, 2, 1)
    with pytest.raises(ChatError, match="one version"):
        session.step_version(again, 1, 1)
    with pytest.raises(HearthError, match="no longer in the chat"):
        session.step_version(again, 9, 1)

    trimmed = session.delete_message(again, 1)
    assert [t.content for t in trimmed.turns] == ["Hi!", "second answer, edited", "q2", "plain"]
    with pytest.raises(HearthError, match="greeting stays"):
        session.delete_message(trimmed, 0)
    branched = session.branch(trimmed, 1)
    assert branched.turns == trimmed.turns[:2] and branched.title.endswith("(branch)")
    assert {c.chat_id for c in store.list_chats("Assistant")} == {chat.chat_id, branched.chat_id}
    assert store.load("Assistant", chat.chat_id) == trimmed  # the chat it came from is unchanged
    with pytest.raises(HearthError, match="cannot be empty"):
        session.edit_message(trimmed, 1, " ")
    assert store.load("Assistant", chat.chat_id) == trimmed


def test_regenerating_keeps_versions_and_a_stopped_one_loses_nothing(session: ChatSession) -> None:
    import threading

    session.service.app.models.load("tiny-llama.gguf")
    first = list(session.send(ChatHistory.new("Assistant", "Hi!"), "hello", OPTIONS, SETTINGS).updates)[
        -1
    ].history
    reply = first.turns[-1].content
    second = list(session.regenerate(first, OPTIONS, SETTINGS).updates)[-1].history
    assert second.turns[-1].version_count == 2 and second.turns[-1].version_index == 1
    assert second.turns[-1].metadata["versions"][0]["content"] == reply
    assert session.histories.latest("Assistant") == second
    stopped = threading.Event()
    stopped.set()  # Stop before the first token: the reply and its versions stay as they were
    final = list(session.regenerate(second, OPTIONS, SETTINGS, stopped).updates)[-1]
    assert final.finish_reason == "cancelled" and final.history.turns == second.turns
    assert session.histories.latest("Assistant").turns == second.turns
    continued = list(session.continue_reply(second, OPTIONS, SETTINGS).updates)[-1].history
    turn = continued.turns[-1]  # a continued version stays that version, longer
    assert (
        turn.version_count == 2
        and turn.metadata["versions"][1]["content"] == turn.content != second.turns[-1].content
    )


def test_an_edit_too_long_for_the_context_warns_and_keeps_everything(session: ChatSession) -> None:
    chat = ChatHistory.new("Assistant", "Hi!")
    for i in range(3):
        chat = chat.with_turn("user", f"question {i}").with_turn("assistant", f"answer {i}")
    assert session.fit_notice(chat, OPTIONS, SETTINGS) == ""  # no model: nothing to measure
    model = session.service.app.models.load("tiny-llama.gguf")
    assert session.fit_notice(chat, OPTIONS, SETTINGS) == ""
    per_word = len(model.tokenize("word " * 10, add_bos=False)) / 10
    half = "word " * int(0.55 * model.n_ctx / per_word)
    long = session.edit_message(session.edit_message(chat, 1, half), 3, half)  # question 0 and its answer go
    notice = session.fit_notice(long, OPTIONS, SETTINGS)
    assert "longer than the context" in notice and "2 oldest turns are left out" in notice
    assert session.histories.load("Assistant", chat.chat_id) == long  # saved whole
    huge = session.edit_message(long, 6, "word " * (2 * model.n_ctx))
    assert "no longer fits the context" in session.fit_notice(huge, OPTIONS, SETTINGS)
    assert session.histories.load("Assistant", chat.chat_id).turns[6].content == huge.turns[6].content


def test_a_damaged_chat_is_named_when_the_chats_open(session: ChatSession) -> None:
    good = ChatHistory.new("Assistant", "Hi!").with_turn("user", "fine")
    session.histories.save(good)
    damaged = session.histories.root / "Assistant" / "damaged.json"
    damaged.write_text('{"turns": [{"role": "user"', encoding="utf-8")
    problems = session.unreadable(None, {"character": None})
    assert len(problems) == 1 and "damaged.json" in problems[0] and "left as it is" in problems[0]
    assert session.unreadable(good.to_dict(), {"character": None}) == []  # said once, on opening
    assert session.current(None, {"character": None}).chat_id == good.chat_id
    session.histories.save(session.current(None, {"character": None}).with_turn("assistant", "ok"))
    assert damaged.read_text(encoding="utf-8") == '{"turns": [{"role": "user"'


# -- browser -------------------------------------------------------------------------------------------
TOOLS = "#chat-message-tools"
LABEL = "#chat-msg-label"
EDIT = "#chat-msg-text textarea"


def select(page: Any, selector: str, text: str, label: str) -> None:
    """Click the chat message holding `text` and wait for the tools to name it (``Message 4 of 5``)."""
    page.locator(selector).filter(has_text=text).last.click()
    page.wait_for_selector(f"{LABEL} >> text={label}")


def reply(page: Any, server: UIServer, text: str, bots: int) -> None:
    send(page, text)
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == {bots}')
    wait_idle(server)
    page.wait_for_function(ENABLED)


@pytest.mark.browser
def test_edit_versions_delete_branch_and_reload(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    reply(page, ui_server, "first question", 2)
    reply(page, ui_server, "second question", 3)
    chat_id = saved_chat(ui_server).chat_id
    assert page.locator(TOOLS).is_hidden()

    # edit the second question in place, then regenerate the reply to it: version 2 of 2
    select(page, USER, "second question", "Message 4 of 5")
    assert page.input_value(EDIT) == "second question"
    page.fill(EDIT, "second question, edited")
    page.click("#chat-msg-save")
    page.wait_for_selector(f"{USER} >> text=second question, edited")
    assert store.load("Assistant", chat_id).turns[3].content == "second question, edited"
    first_reply = store.load("Assistant", chat_id).turns[4].content
    page.click("#chat-regenerate")
    page.wait_for_selector(f"{BOT} >> text=‹ 2/2 ›")
    wait_idle(ui_server)
    page.wait_for_function(ENABLED)
    turn = store.load("Assistant", chat_id).turns[4]
    assert turn.version_count == 2 and turn.metadata["versions"][0]["content"] == first_reply

    # step back to version 1 and keep it: the chat shows it and the saved chat holds it
    select(page, BOT, "‹ 2/2 ›", "Message 5 of 5")
    assert "version ‹ 2/2 ›" in page.inner_text(LABEL) and page.is_disabled("#chat-msg-next")
    page.click("#chat-msg-prev")
    page.wait_for_selector(f"{BOT} >> text=‹ 1/2 ›")
    # a textarea's value turns "\r\n" and "\r" into "\n" (the tiny model's replies may hold a "\r")
    shown = first_reply.replace("\r\n", "\n").replace("\r", "\n")
    page.wait_for_function(f"document.querySelector('{EDIT}').value === {json.dumps(shown)}")
    kept = store.load("Assistant", chat_id).turns[4]
    assert kept.version_index == 0 and kept.content == first_reply

    # an edit while a reply is being written is refused, and what was typed stays
    gate = Gate()
    ui_server.app.core.extra_processors.append(gate)
    try:
        send(page, "third question")
        page.wait_for_function("document.querySelector('#chat-generate').disabled")
        select(page, USER, "first question", "Message 2 of")
        page.fill(EDIT, "typed while busy")
        page.click("#chat-msg-save")
        page.wait_for_selector(".toast-body >> text=/press Stop \\(Esc\\) first/")
        assert page.input_value(EDIT) == "typed while busy"
    finally:
        gate.open.set()
    wait_idle(ui_server)
    page.wait_for_function(ENABLED)
    ui_server.app.core.extra_processors.remove(gate)
    assert store.load("Assistant", chat_id).turns[1].content == "first question"

    # delete a middle message (the first question), asked first
    select(page, USER, "first question", "Message 2 of 7")
    page.click("#chat-msg-delete")
    page.click("#chat-msg-delete-confirm")
    page.wait_for_function(f'document.querySelectorAll("{USER}").length == 2')
    page.wait_for_selector(TOOLS, state="hidden")
    saved = store.load("Assistant", chat_id)
    assert [t.role for t in saved.turns] == [
        "assistant",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert "first question" not in [t.content for t in saved.turns]

    # a chat with a Thinking reply, saved meanwhile, then a branch: both are in Past chats
    thinking = thinking_chat()
    store.save(thinking)
    select(page, USER, "second question, edited", "Message 3 of 6")
    page.click("#chat-msg-branch")
    page.wait_for_selector(".toast-body >> text=/Branched a new chat/")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 2')
    branch = next(c for c in store.list_chats("Assistant") if c.title.endswith("(branch)"))
    assert [t.content for t in store.load("Assistant", branch.chat_id).turns] == [
        t.content for t in saved.turns[:3]
    ]
    page.wait_for_function("document.querySelector('#chat-list input').value.includes('(branch)')")
    page.click("#chat-list input")
    page.click("[role='option'] >> text=/q1 · /")
    page.wait_for_selector(f"{USER} >> text=q2")
    # its reply is two chat messages (Thinking, answer): clicking the answer selects that one turn
    select(page, BOT, "second answer", "Message 3 of 5")
    page.fill(EDIT, "second answer, edited in the browser")
    page.click("#chat-msg-save")
    page.wait_for_selector(f"{BOT} >> text=second answer, edited in the browser")
    edited = store.load("Assistant", thinking.chat_id).turns[2]
    assert (
        edited.content == "second answer, edited in the browser"
        and edited.metadata["reasoning"] == "second thought"
    )

    # after a reload: the thinking chat open again, the edited chat and its branch all as saved; a chat file
    # damaged meanwhile is named in a toast and left as it is
    damaged = store.root / "Assistant" / "damaged.json"
    damaged.write_text('{"turns": [', encoding="utf-8")
    page.reload()
    page.wait_for_selector(".toast-body >> text=/damaged.json/")
    assert "cannot be read" in page.locator(".toast-body").filter(has_text="damaged.json").inner_text()
    page.wait_for_selector(f"{BOT} >> text=second answer, edited in the browser")
    page.click("#chat-list input")
    page.click("[role='option'] >> text=/second question, edited · /")
    page.wait_for_selector(f"{USER} >> text=second question, edited")
    page.wait_for_selector(f"{BOT} >> text=‹ 1/2 ›")
    assert (
        page.locator(USER).count() == 2 and page.locator(USER).filter(has_text="first question").count() == 0
    )
    page.click("#chat-list input")
    assert page.locator("[role='option']").filter(has_text="(branch)").count() == 1
    assert damaged.read_text(encoding="utf-8") == '{"turns": ['
