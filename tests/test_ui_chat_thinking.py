"""The Chat tab with a thinking model (issue 16): the reply's reasoning in a collapsible "Thinking" block
above the answer, filled live, saved with the chat; the Thinking switch and the thinking budget in the chat
options. In a real browser over tiny-llama.gguf with DeepSeek-R1's own template picked as a user template
(its generation prompt opens ``<think>`` when thinking is on, so a reply starts inside the block)."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.test_ui_chat import chat_state, saved_chat, send, ui_settings  # noqa: F401  (fixtures)
from tests.test_ui_chat_options import wait_for
from webui.events import TextChunk
from webui.ui import chat_tab, streaming

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
ROOT = Path(__file__).resolve().parent.parent
R1 = ROOT / "tests" / "data" / "chat_templates" / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
CHATBOT = "#chat-chatbot"
THOUGHT = f"{CHATBOT} .thought-group"
BOT = f"{CHATBOT} [data-testid='bot']"


@pytest.fixture
def max_new_tokens() -> int:
    """Replies of 24 tokens (EOS banned by test_ui_chat's `ui_settings`): without a budget all reasoning."""
    return 24


class Recorder:
    """Every request the core is asked to generate; `hold()` pauses the next reply after its first text."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.held = threading.Event()  # the reply is paused
        self.release = threading.Event()
        self._hold = False

    def hold(self) -> None:
        self._hold, self.held, self.release = True, threading.Event(), threading.Event()

    def wrap(self, original: Any) -> Any:
        def stream(request: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            self.requests.append(request)
            hold, self._hold, text = self._hold, False, ""
            for event in original(request, *args, **kwargs):
                yield event
                text += event.text if isinstance(event, TextChunk) else ""
                if hold and text.strip():
                    hold = False
                    self.held.set()
                    assert self.release.wait(120), "the test never released the reply"

        return stream


@pytest.fixture
def recorder(ui_server: UIServer, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(ui_server.app.core, "stream", recorder.wrap(ui_server.app.core.stream))
    return recorder


def words(text: str) -> str:
    """Letters and digits only: random text rendered as Markdown keeps those, whatever else it does."""
    return re.sub(r"[\W_]", "", text)


def setup_thinking(page: Any, server: UIServer) -> None:
    """tiny-llama with DeepSeek-R1's template (a user template picked in the template control), instruct
    mode, Thinking on and a budget of 4 tokens, all through the controls."""
    app = server.app
    app.models.load("tiny-llama.gguf")
    templates = app.settings.user_data_dir / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "R1.jinja").write_text(R1.read_text(encoding="utf-8"), encoding="utf-8")
    page.reload()
    page.wait_for_selector(BOT)  # the greeting
    assert page.locator("#chat-thinking").is_hidden()  # chat mode does not render the template
    page.locator("#chat-mode label:has(input[value='instruct'])").click()
    page.wait_for_selector("#chat-thinking")
    page.locator("#chat-thinking label:has(input[value='On'])").click()
    page.locator("#chat-thinking-budget input").fill("4")
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Instruction template", exact=True).click()
    page.locator("#template-dropdown input").click()
    page.get_by_role("option", name="R1", exact=True).click()
    page.wait_for_function(
        "document.querySelector('#template-text .cm-content')?.innerText.includes('<think>')"
    )
    page.get_by_role("tab", name="Chat", exact=True).click()


def wait_reply_shown(page: Any, server: UIServer, bots: int) -> None:
    """Until the reply has ended and the chat shows `bots` bot messages (a Thinking block is one)."""
    wait_for(lambda: not server.app.core.busy, "the reply did not end")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == {bots}')
    page.wait_for_function("document.querySelector('#chat-generate').innerText.trim() === 'Generate'")


@pytest.mark.browser
def test_thinking_block_streams_above_the_answer_is_saved_and_turns_off(
    page: Any, ui_server: UIServer, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every streamed step reaches the page, so the paused one below is on screen (not one skipped for speed)
    monkeypatch.setattr(chat_tab, "throttle", functools.partial(streaming.throttle, interval=0))
    setup_thinking(page, ui_server)

    # live: the reply is paused while it thinks: the block is open with a spinner, no answer yet
    recorder.hold()
    send(page, "Hi")
    wait_for(recorder.held.is_set, "the model wrote no reasoning")
    request = recorder.requests[-1]
    assert (
        request.prompt.endswith("<｜User｜>Hi<｜Assistant｜><think>\n")
        and request.thinking_budget.tokens == 4
    )
    page.wait_for_selector(f"{THOUGHT} .title.expanded .loading-spinner")
    reply_row = page.locator(f"{CHATBOT} .bot-row").last
    assert reply_row.locator("[data-testid='bot']").count() == 1  # the block alone
    recorder.release.set()
    wait_reply_shown(page, ui_server, 3)  # greeting, block, answer

    # done: collapsed, no spinner, holding the saved reasoning; the answer is below it, outside the block
    turn = saved_chat(ui_server).turns[-1]
    reasoning, answer = turn.metadata["reasoning"], turn.content
    assert reasoning.strip() and answer.strip()  # the budget closed the block; the answer followed

    def check_block() -> None:
        thought = page.locator(THOUGHT)
        assert thought.count() == 1 and thought.locator(".title").inner_text().strip() == "Thinking"
        # collapsed: its text is hidden (not drawn, or inert once it was open while streaming), no spinner
        page.wait_for_selector(f"{THOUGHT} .title:not(.expanded)")
        assert thought.locator(".content:not([inert])").count() == 0
        assert thought.locator(".loading-spinner").count() == 0
        answer_shown = page.locator(BOT).nth(2)  # after the greeting and the block
        assert answer_shown.locator(".thought-group").count() == 0
        assert words(answer_shown.inner_text()) == words("Assistant" + answer)
        # collapsible: a click opens it on the reasoning, another closes it
        thought.locator(".title").click()
        page.wait_for_selector(f"{THOUGHT} .title.expanded")
        assert words(thought.locator(".content:not([inert])").inner_text()) == words(reasoning)
        thought.locator(".title").click()
        page.wait_for_selector(f"{THOUGHT} .title:not(.expanded)")

    check_block()
    page.reload()  # saved with the chat: the block is there again
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 3')
    check_block()

    # the options are kept by "Save UI settings" with the other chat options
    setup_thinking(page, ui_server)
    page.get_by_role("tab", name="Session", exact=True).click()
    page.locator("#session-save").click()
    page.wait_for_function("document.querySelector('#session-saved')?.textContent.includes('Saved')")
    saved = yaml.safe_load(ui_server.app.settings.settings_file.read_text(encoding="utf-8"))["chat"]
    # On is the default (unset = on, as llama-server), so it may be saved as unset
    assert (saved["enable_thinking"] is not False, saved["thinking_budget"], saved["mode"]) == (True, 4, "instruct")
    page.get_by_role("tab", name="Chat", exact=True).click()

    # Thinking off: the template closes the block in the prompt, and no Thinking block appears
    page.locator("#chat-thinking label:has(input[value='Off'])").click()
    wait_for(lambda: page.locator("#chat-thinking input[value='Off']").is_checked(), "Off not chosen")
    send(page, "Again")
    wait_reply_shown(page, ui_server, 4)
    assert recorder.requests[-1].prompt.endswith("<｜User｜>Again<｜Assistant｜><think>\n</think>")
    last = saved_chat(ui_server).turns[-1]
    assert last.content.strip() and "reasoning" not in last.metadata
    assert page.locator(THOUGHT).count() == 1  # the first reply's only
    assert page.locator(BOT).last.locator(".thought-group").count() == 0

    # a bad budget: one toast naming the box, which keeps what was typed; the chat keeps the last good one
    box = page.locator("#chat-thinking-budget input")
    box.fill("-2")
    page.locator("#chat-input textarea").click()  # leaves the box
    toast = page.locator(".toast-body")
    toast.first.wait_for()
    assert toast.count() == 1 and "Thinking budget" in toast.first.inner_text()
    assert box.input_value() == "-2"
    page.locator("#chat-thinking label:has(input[value='On'])").click()
    wait_for(lambda: page.locator("#chat-thinking input[value='On']").is_checked(), "On not chosen")
    send(page, "Once more")
    wait_reply_shown(page, ui_server, 6)
    assert recorder.requests[-1].thinking_budget.tokens == 4
