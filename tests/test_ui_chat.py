"""The Chat tab: its plain helpers, and in a real browser over tiny-llama.gguf: a streamed reply that is
saved, Regenerate, Remove last, Impersonate, Stop mid-stream, hand-written turns and the screenshot; a reply
shown at once with busy buttons, errors as one toast over uncovered content, the open chat after a reload,
Delete asking first, and names, the picture and the live token count (issue 13)."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from webui.chat_service import ChatOptions, ChatService
from webui.config import Settings
from webui.errors import GenerationError
from webui.prompts.characters import Character
from webui.prompts.history import ChatHistory, HistoryStore
from webui.ui.chat_session import ChatSession
from webui.ui.chat_view import TYPING, chat_messages, dropped_notice

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
ROOT = Path(__file__).resolve().parent.parent
BOT = "#chat-chatbot [data-testid='bot']"
USER = "#chat-chatbot [data-testid='user']"


# -- helpers without a browser ---------------------------------------------------------------------
def test_chat_messages_and_notice() -> None:
    history = ChatHistory.new("Assistant", "Hi!").with_turn("user", "**bold**")
    history = history.with_turn("user", "translated for the model", visible="as typed")
    assert chat_messages(history) == [
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "**bold**"},
        {"role": "user", "content": "as typed"},
    ]
    assert chat_messages(None) == []
    assert dropped_notice(0) == ""
    assert "3 oldest turns were left out" in dropped_notice(3)
    assert "1 oldest turn was left out" in dropped_notice(1)


def test_session_opens_latest_chat_per_character_and_lists_unsaved(ui_app: Any) -> None:
    session = ChatSession(ChatService(ui_app))
    options = ChatOptions(user_name="Ann")
    fresh = session.open_chat(options)
    assert [t.content for t in fresh.turns] == ["How can I help you today?"]
    assert session.chat_choices(fresh)[0] == ("New chat (unsaved)", fresh.chat_id)
    saved = fresh.with_turn("user", "first question")
    session.service.histories.save(saved)
    assert session.open_chat(options).chat_id == saved.chat_id
    assert [c[1] for c in session.chat_choices(saved)] == [saved.chat_id]
    # a history of another character is replaced by this character's latest chat
    other = ChatHistory.new("Someone").to_dict()
    assert session.current(other, {"character": None}).chat_id == saved.chat_id
    assert session.picture(options) is None


def test_session_uses_the_characters_greeting_and_picture(ui_app: Any) -> None:
    session = ChatSession(ChatService(ui_app))
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    session.service.characters.save(
        Character("Ada", "A mathematician.", "Hello {{user}}, I am {{char}}.", picture=png)
    )
    options = ChatOptions(character="Ada", user_name="Bob")
    chat = session.open_chat(options)
    assert chat.character == "Ada" and chat.turns[0].content == "Hello Bob, I am Ada."
    picture = session.picture(options)
    assert picture is not None and Path(picture).read_bytes() == png


# -- browser -----------------------------------------------------------------------------------------
@pytest.fixture
def max_new_tokens() -> int:
    return 24


@pytest.fixture
def chat_state() -> dict[str, Any] | None:
    """The Chat tab's starting options (``ctx.character``), as "Save UI settings" would have kept them."""
    return None


@pytest.fixture
def ui_settings(ui_settings: Settings, max_new_tokens: int, chat_state: dict[str, Any] | None) -> Settings:
    """EOS banned (a random model may end at once) and `max_new_tokens`, from a preset in the test's copy."""
    (ui_settings.presets_dir / "UI test.yaml").write_text(
        yaml.safe_dump({"ban_eos_token": True}), encoding="utf-8"
    )
    ui_settings.preset = "UI test"
    ui_settings.extra["generation"] = {"max_new_tokens": max_new_tokens}
    if chat_state is not None:
        ui_settings.extra["chat"] = chat_state
    return ui_settings


def open_chat_tab(page: Any, server: UIServer) -> None:
    server.app.models.load("tiny-llama.gguf")
    page.reload()
    page.wait_for_selector(BOT)  # the greeting of the built-in Assistant


def send(page: Any, text: str) -> None:
    page.fill("#chat-input textarea", text)
    page.click("#chat-generate")


def wait_idle(server: UIServer, timeout: float = 30) -> None:
    """Until the core runs nothing (the reply has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.app.core.busy:
            return
        time.sleep(0.05)
    raise AssertionError("generation did not end")


def saved_chat(server: UIServer) -> ChatHistory:
    history = HistoryStore(server.app.settings.user_data_dir).latest("Assistant")
    assert history is not None
    return history


@pytest.mark.browser
def test_chat_streams_regenerates_removes_and_impersonates(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    send(page, "Hello there")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 2')
    page.wait_for_selector(f"{USER} >> text=Hello there")
    assert page.input_value("#chat-input textarea") == ""
    wait_idle(ui_server)
    first = saved_chat(ui_server)
    assert [t.role for t in first.turns] == ["assistant", "user", "assistant"]
    assert first.turns[-1].content.strip()  # a reply was streamed and saved

    page.click("#chat-regenerate")
    deadline = time.monotonic() + 30
    while saved_chat(ui_server).turns[-1].content == first.turns[-1].content:
        assert time.monotonic() < deadline, "Regenerate did not replace the reply"
        time.sleep(0.1)
    wait_idle(ui_server)
    regenerated = saved_chat(ui_server)
    assert len(regenerated.turns) == 3 and regenerated.chat_id == first.chat_id
    assert page.locator(BOT).count() == 2

    page.click("#chat-remove-last")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 1')
    assert page.input_value("#chat-input textarea") == "Hello there"
    assert len(saved_chat(ui_server).turns) == 1

    page.fill("#chat-input textarea", "")
    page.click("#chat-impersonate")
    page.wait_for_function("document.querySelector('#chat-input textarea').value.length > 0")
    wait_idle(ui_server)
    assert len(saved_chat(ui_server).turns) == 1  # impersonating leaves the chat as it was


@pytest.mark.browser
@pytest.mark.parametrize("max_new_tokens", [600])
def test_stop_ends_a_long_reply_and_keeps_the_partial_text(page: Any, ui_server: UIServer) -> None:
    class Slow:
        """A logits processor that only waits, so the reply is still streaming when Stop is pressed."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            time.sleep(0.05)
            return scores

    open_chat_tab(page, ui_server)
    ui_server.app.core.extra_processors.append(Slow())
    send(page, "Tell me a long story")
    page.wait_for_function(
        f'(() => {{ const b = document.querySelectorAll("{BOT}"); return b.length == 2 && b[1].innerText.trim().length > 0; }})()'
    )
    page.click("#chat-stop")
    wait_idle(ui_server, timeout=10)
    reply = saved_chat(ui_server).turns[-1]
    assert reply.role == "assistant" and reply.content.strip()
    assert len(ui_server.app.models.require().tokenize(reply.content, add_bos=False)) < 300
    shown = page.locator(BOT).nth(1).inner_text()
    time.sleep(0.5)
    assert page.locator(BOT).nth(1).inner_text() == shown  # nothing more arrives


@pytest.mark.browser
def test_hand_written_turns_render_markdown_and_make_the_screenshot(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    page.fill("#chat-input textarea", "How do I reverse a list in Python?")
    page.click("#chat-dummy-message")
    page.wait_for_selector(f"{USER} >> text=reverse a list")
    page.fill(
        "#chat-input textarea",
        "Use **slicing** or `reversed()`:\n\n```python\nitems = [1, 2, 3]\nprint(items[::-1])\n"
        "print(list(reversed(items)))\n```\n\nSlicing makes a copy; `items.reverse()` works in place.",
    )
    page.click("#chat-dummy-reply")
    page.wait_for_selector(f"{BOT} pre code")
    page.wait_for_selector(f"{BOT} strong >> text=slicing")
    assert [t.role for t in saved_chat(ui_server).turns] == ["assistant", "user", "assistant"]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#chat-copy-last")  # to the clipboard, not into the input box
    page.wait_for_function("navigator.clipboard.readText().then(t => t.startsWith('Use **slicing**'))")
    assert page.input_value("#chat-input textarea") == ""
    path = ui_server.shots / "chat.png"
    page.screenshot(path=str(path))
    if os.environ.get("HEARTH_UPDATE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "screenshot-chat.png")


def dummy_exchange(page: Any, user: str, reply: str) -> None:
    count = page.locator(BOT).count()
    page.fill("#chat-input textarea", user)
    page.click("#chat-dummy-message")
    page.wait_for_function("document.querySelector('#chat-input textarea').value == ''")
    page.fill("#chat-input textarea", reply)
    page.click("#chat-dummy-reply")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == {count + 1}')


@pytest.mark.browser
def test_no_model_is_a_toast_and_keeps_the_message(page: Any, ui_server: UIServer) -> None:
    page.wait_for_selector(BOT)
    send(page, "is anyone there?")
    page.wait_for_selector(".toast-body >> text=/no model is loaded/")
    assert page.input_value("#chat-input textarea") == "is anyone there?"
    assert page.locator(USER).count() == 0


@pytest.mark.browser
@pytest.mark.parametrize("max_new_tokens", [700])
def test_dropped_turns_are_announced(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    filler = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
    for i in range(3):
        dummy_exchange(page, f"question {i}: {filler}", f"answer {i}: {filler}")
    send(page, "and now?")
    page.wait_for_selector("#chat-notice >> text=/oldest turns? (was|were) left out/")
    wait_idle(ui_server)


@pytest.mark.browser
def test_past_chats_new_rename_delete_and_mode(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    dummy_exchange(page, "first chat", "noted")
    first = saved_chat(ui_server)
    page.click("#chat-new")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 1')
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    assert len(store.list_chats("Assistant")) == 2

    page.click("#chat-rename-delete button, #chat-rename-delete")  # open the accordion
    page.fill("#chat-new-name textarea, #chat-new-name input", "My second chat")
    page.click("#chat-rename")
    page.wait_for_function("document.querySelector('#chat-list input').value.startsWith('My second chat')")
    assert {c.chat_id for c in store.list_chats("Assistant")} == {first.chat_id, "My second chat"}

    page.click("#chat-delete")
    page.click("#chat-delete-confirm")
    page.wait_for_selector(f"{USER} >> text=first chat")  # back to the remaining chat
    assert [c.chat_id for c in store.list_chats("Assistant")] == [first.chat_id]

    page.click("#chat-mode label:has-text('instruct') >> nth=-1")
    send(page, "in instruct mode")
    wait_idle(ui_server)
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 3')
    # the reply re-rendered the tab from the states: the mode stuck in ctx.character
    assert page.is_checked("#chat-mode input[value='instruct']")


@pytest.mark.browser
def test_a_message_too_long_for_the_context_is_an_error_that_loses_nothing(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    n_ctx = ui_server.app.models.require().n_ctx
    message = "word " * (2 * n_ctx)
    send(page, message)
    toast = page.locator(".toast-body.warning")
    toast.wait_for()
    assert "tokens" in toast.inner_text() and "truncation length" in toast.inner_text()
    page.wait_for_function(f"document.querySelector('#chat-input textarea').value.length === {len(message.strip())}")
    assert page.locator(USER).count() == 0 and page.locator(BOT).count() == 1  # the chat as it was
    assert HistoryStore(ui_server.app.settings.user_data_dir).latest("Assistant") is None
    send(page, "Hello again")  # and the chat goes on
    page.wait_for_selector(f"{USER} >> text=Hello again")
    wait_idle(ui_server)
    assert [t.role for t in saved_chat(ui_server).turns] == ["assistant", "user", "assistant"]


# -- issue 13: the card's user name, Stop before the first token, the saved-chats list ------------------
def test_the_cards_user_name_reaches_the_greeting_and_the_prompt(ui_app: Any) -> None:
    service = ChatService(ui_app)
    service.characters.save(Character("Cap", "{{char}} sails with {{user}}.", "Ahoy, {{user}}!", user_name="Peter"))
    options = ChatOptions(character="Cap")  # nobody typed a name: the card's is used
    chat = ChatSession(service).new_chat(options)
    assert chat.turns[0].content == "Ahoy, Peter!"
    ui_app.models.load("tiny-llama.gguf")
    prompt = service.build_prompt(chat, "Who am I?", options, max_new_tokens=16)
    assert "Cap sails with Peter." in prompt.text and "Peter: Who am I?" in prompt.text
    assert "Ann: Who am I?" in service.build_prompt(chat, "Who am I?", ChatOptions("chat", "Cap", "Ann"), max_new_tokens=16).text


def test_stop_before_the_first_token_leaves_no_empty_reply(ui_app: Any) -> None:
    import threading

    service = ChatService(ui_app)
    ui_app.models.load("tiny-llama.gguf")
    history = ChatHistory.new("Assistant", "Hi!")
    stopped = threading.Event()
    stopped.set()
    updates = list(service.stream_reply(history, "hello", ChatOptions(), {"max_new_tokens": 8}, stopped))
    assert updates[-1].finish_reason == "cancelled"
    assert [t.role for t in updates[-1].history.turns] == ["assistant", "user"]
    assert [t.role for t in service.histories.latest("Assistant").turns] == ["assistant", "user"]


def test_saved_chats_panel_lists_chats_with_turn_counts(ui_app: Any) -> None:
    from webui.ui.history_panel import HistoryPanel

    store = HistoryStore(ui_app.settings.user_data_dir)
    chat = ChatHistory.new("Assistant", "Hi!").with_turn("user", "saved question")
    store.save(chat)
    update = HistoryPanel(store, Path(ui_app.settings.user_data_dir)).choices({"character": None})
    assert update["value"] == chat.chat_id
    assert update["choices"][0][1] == chat.chat_id and "2 turns" in update["choices"][0][0]


def test_chat_messages_show_raw_html_as_text() -> None:
    history = ChatHistory.new("Assistant").with_turn("assistant", "a<b then b>a and `<b>` in code")
    assert chat_messages(history)[0]["content"] == "a&lt;b then b>a and `<b>` in code"


# -- issue 13: feedback while a reply is written, errors, the open chat, delete, names and tokens -------
INPUT = "#chat-input textarea"
ENABLED = "!document.querySelector('#chat-generate').disabled"


class Gate:
    """A logits processor holding the reply before its first token until the test opens it; with
    `fail_at` it raises at that call (a generation that fails after some text)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.calls = 0
        self.fail_at: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        assert self.open.wait(60), "the test never opened the gate"
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise GenerationError("the model tripped")
        return scores


def bot_texts(page: Any) -> list[str]:
    return [b.inner_text() for b in page.locator(BOT).all()]


@pytest.mark.browser
def test_a_reply_shows_at_once_and_keeps_the_buttons_busy_until_it_ends(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    gate = Gate()
    ui_server.app.core.extra_processors.append(gate)
    try:
        send(page, "Hello there")
        # before any token: the message, a typing bubble, and Generate busy
        page.wait_for_selector(f"{USER} >> text=Hello there")
        page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 2')
        assert bot_texts(page)[-1].strip().endswith(TYPING) and gate.calls == 0
        page.wait_for_function("document.querySelector('#chat-generate').disabled")
        assert "Writing" in page.inner_text("#chat-generate")
        assert all(page.is_disabled(f"#chat-{b}") for b in ("regenerate", "continue", "impersonate"))
        # a second message while busy is refused out loud and stays in the box
        page.fill(INPUT, "second message")
        page.press(INPUT, "Enter")
        page.wait_for_selector(".toast-body >> text=/still being written/")
        assert page.input_value(INPUT) == "second message" and page.locator(USER).count() == 1
        typed = len(ui_server.app.models.require().tokenize("second message", add_bos=False))
        page.wait_for_selector(f"#chat-tokens >> text=Message: {typed} tokens")  # counted meanwhile
        gate.open.set()
        page.wait_for_function(ENABLED)
        wait_idle(ui_server)
        assert page.inner_text("#chat-generate") == "Generate"
        assert saved_chat(ui_server).turns[-1].content.strip()
        assert not bot_texts(page)[-1].strip().endswith(TYPING)

        # a reply failing after some text: one error toast, and the buttons come back
        gate.calls, gate.fail_at = 0, 3
        page.click("#chat-generate")
        page.wait_for_selector(".toast-body >> text=/the model tripped/")
        page.wait_for_function(ENABLED)
        assert page.locator(".toast-body").filter(has_text="the model tripped").count() == 1
    finally:
        gate.open.set()


@pytest.mark.browser
def test_errors_are_one_toast_that_covers_nothing(page: Any, ui_server: UIServer, capfd: Any) -> None:
    page.wait_for_selector(BOT)
    # no model: said up front, pointing to the Model tab
    page.wait_for_selector("#chat-model-notice >> text=/No model is loaded/")
    assert "Model tab" in page.inner_text("#chat-model-notice")
    page.wait_for_selector("#chat-tokens >> text=/no model loaded/")
    send(page, "is anyone there?")
    page.wait_for_selector(".toast-body >> text=/no model is loaded/")
    assert page.input_value(INPUT) == "is anyone there?"
    page.fill(INPUT, "")
    page.click("#chat-dummy-message")  # an event with Gradio's default progress display, failing
    page.wait_for_selector(".toast-body >> text=/type the message first/")
    # Gradio has marked the input box as an output of a failed event: its status tracker holds "Error"
    page.wait_for_selector("#chat-input [data-testid='status-tracker'].full:has(> .error)", state="attached")
    # one toast per error; nothing covered: the chat shown, the input box takes clicks and typing
    assert page.locator(".toast-body").filter(has_text="no model is loaded").count() == 1
    assert page.locator("[data-testid='status-tracker']:visible", has_text="Error").count() == 0
    page.locator(BOT).first.click(trial=True, timeout=5_000)  # nothing lies over the greeting
    page.click(INPUT, timeout=5_000)
    page.keyboard.type("still editable")
    assert page.input_value(INPUT) == "still editable"
    assert "Traceback" not in capfd.readouterr().err  # a person's mistakes are no bugs
    # a model loaded meanwhile (here: elsewhere): back on the Chat tab, the notice is gone
    ui_server.app.models.load("tiny-llama.gguf")
    page.click("button[role='tab']:has-text('Model')")
    page.click("button[role='tab']:has-text('Chat') >> nth=0")
    page.wait_for_selector("#chat-model-notice", state="hidden")
    page.wait_for_selector("#chat-tokens >> text=/Message: \\d+ tokens/")


@pytest.mark.browser
def test_a_reload_reopens_the_chat_being_viewed(page: Any, ui_server: UIServer) -> None:
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    for day, age in ((1, "older"), (2, "newer")):
        chat = ChatHistory.new("Assistant", "Hi!").with_turn("user", f"the {age} chat")
        store.save(replace(chat, updated=f"2026-01-0{day}T00:00:00+00:00"))
    page.reload()
    page.wait_for_selector(f"{USER} >> text=the newer chat")
    before = page.evaluate("localStorage.getItem('hearth-open-chats')")
    page.click("#chat-list input")
    page.click("[role='option'] >> text=/the older chat/")
    page.wait_for_selector(f"{USER} >> text=the older chat")
    page.wait_for_function(f"localStorage.getItem('hearth-open-chats') !== {json.dumps(before)}")
    page.reload()
    page.wait_for_selector(f"{USER} >> text=the older chat")
    assert page.locator(USER).count() == 1


@pytest.mark.browser
def test_deleting_a_chat_asks_first(page: Any, ui_server: UIServer) -> None:
    open_chat_tab(page, ui_server)
    dummy_exchange(page, "keep me", "kept")
    store = HistoryStore(ui_server.app.settings.user_data_dir)
    page.click("#chat-rename-delete")  # open the accordion
    page.click("#chat-delete")
    page.wait_for_selector("#chat-delete-confirm >> text=Confirm delete: 'keep me'")
    assert len(store.list_chats("Assistant")) == 1  # one click deletes nothing
    page.click("#chat-delete-cancel")
    page.wait_for_selector("#chat-delete-confirm", state="hidden")
    assert len(store.list_chats("Assistant")) == 1
    page.click("#chat-delete")
    page.click("#chat-delete-confirm")
    page.wait_for_selector(".toast-body >> text=/Deleted chat 'keep me'/")
    page.wait_for_function(f'document.querySelectorAll("{USER}").length == 0')
    assert store.list_chats("Assistant") == []


def png_picture() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 48), (180, 40, 40)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.browser
@pytest.mark.parametrize("chat_state", [{"character": "Ada"}])
def test_names_picture_and_a_live_token_count(page: Any, ui_server: UIServer) -> None:
    card = Character("Ada", "A mathematician.", "Hello {{user}}, I am Ada.", user_name="Bob", picture=png_picture())
    ChatService(ui_server.app).characters.save(card)
    open_chat_tab(page, ui_server)
    page.wait_for_selector(f"{BOT} >> text=Hello Bob, I am Ada.")
    assert bot_texts(page)[0].startswith("Ada")
    page.wait_for_selector("#chat-chatbot img[src*='gradio_api/file=']")  # the character's picture
    model = ui_server.app.models.require()
    page.fill(INPUT, "hello world, how are you?")
    tokens = len(model.tokenize("hello world, how are you?", add_bos=False))
    page.wait_for_selector(f"#chat-tokens >> text=Message: {tokens} tokens")
    assert f"/ {model.n_ctx} tokens" in page.inner_text("#chat-tokens")
    page.click("#chat-dummy-message")
    page.wait_for_selector(f"{USER} >> text=hello world, how are you?")
    assert page.locator(USER).first.inner_text().startswith("Bob")
    page.wait_for_selector("#chat-tokens >> text=Message: 0 tokens")
