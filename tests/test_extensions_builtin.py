"""The built-in extensions: lorebook (SillyTavern world info, keyword triggers, token budget), long_memory
(summaries made by tiny-llama through the core, kept with the chat) and character_bias (reply prefix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extensions.long_memory.memory import KEY, read_memory
from extensions.lorebook import import_book
from extensions.lorebook.book import (
    AFTER,
    BEFORE,
    NOT_ANY,
    LorebookError,
    entries_from_data,
    render,
    select,
    triggered,
)
from webui.app import App
from webui.chat_service import ChatOptions, ChatService
from webui.config import Settings
from webui.generation import GenerationRequest
from webui.plugins import hookimpl
from webui.prompts.history import ChatHistory
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False, ban_eos_token=True).model_dump()
CHAT = ChatOptions(mode="chat")

ST_WORLD = {
    "entries": {
        "0": {"uid": 0, "key": ["dragon", "wyrm"], "keysecondary": [], "comment": "Dragons",
              "content": "Dragons of Vel are blue and fear salt.", "constant": False, "selective": True,
              "selectiveLogic": 0, "order": 100, "position": 0, "disable": False, "probability": 100,
              "depth": 4, "scanDepth": None, "caseSensitive": None, "matchWholeWords": None},
        "1": {"uid": 1, "key": ["castle"], "keysecondary": ["night", "dark"], "selective": True,
              "selectiveLogic": 0, "content": "At night the castle gates are sealed.", "order": 50,
              "position": 1, "constant": False, "disable": False},
        "2": {"uid": 2, "key": [], "content": "The world is called Vel.", "constant": True, "order": 10,
              "position": 0, "disable": False},
        "3": {"uid": 3, "key": ["dragon"], "content": "never shown", "disable": True, "order": 999},
        "4": {"uid": 4, "key": ["/sal+t/i"], "content": "Salt is rare in Vel.", "order": 60, "position": 1},
    }
}


class PromptSpy:
    """Records what reaches the generation core (state_modifier and tokenizer_modifier see every request)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    @hookimpl
    def tokenizer_modifier(self, prompt: str) -> None:
        self.prompts.append(prompt)


@pytest.fixture
def make_app(models_dir: Path, tmp_path: Path):
    apps: list[App] = []

    def make(*extensions: str) -> tuple[App, PromptSpy]:
        app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path / "user", extensions=list(extensions)))
        app.models.load("tiny-llama.gguf")
        spy = PromptSpy()
        app.extensions.add("spy", spy)
        app.extensions.enable("spy")
        apps.append(app)
        return app, spy

    yield make
    for app in apps:
        app.models.unload()


# -- lorebook: pure ---------------------------------------------------------------------------------
def test_sillytavern_world_info_is_read() -> None:
    entries = entries_from_data(ST_WORLD)
    dragons, castle, world, disabled, salt = entries
    assert dragons.keys == ("dragon", "wyrm") and dragons.order == 100 and dragons.position == BEFORE
    assert castle.secondary == ("night", "dark") and castle.position == AFTER
    assert world.constant and disabled.disabled and salt.keys == ("/sal+t/i",)
    card = {"spec": "chara_card_v2", "data": {"name": "X", "character_book": {"entries": [
        {"keys": ["moon"], "content": "The moon is green.", "insertion_order": 7, "enabled": False,
         "position": "after_char"}]}}}
    [moon] = entries_from_data(card)
    assert moon.keys == ("moon",) and moon.order == 7 and moon.disabled and moon.position == AFTER
    for bad in ({"nope": 1}, {"entries": {"0": "text"}}, {"entries": {"0": {"content": "x", "key": 5}}}):
        with pytest.raises(LorebookError):
            entries_from_data(bad)


def test_triggers_whole_words_secondary_keys_and_regex() -> None:
    dragons, castle, world, disabled, salt = entries_from_data(ST_WORLD)
    assert triggered(dragons, "A DRAGON lands.") and not triggered(dragons, "a dragonfly")
    assert not triggered(castle, "the castle") and triggered(castle, "the castle at night")
    assert triggered(world, "") and not triggered(disabled, "dragon")
    assert triggered(salt, "SALLT!") and not triggered(salt, "sugar")
    only_without = entries_from_data({"entries": {"0": {"key": ["castle"], "keysecondary": ["night"],
                                                         "selectiveLogic": NOT_ANY, "content": "Day."}}})[0]
    assert triggered(only_without, "castle by day") and not triggered(only_without, "castle by night")


def test_selection_fits_the_budget_by_priority_and_scan_depth() -> None:
    entries = entries_from_data(ST_WORLD)
    words = lambda text: len(text.split())  # noqa: E731
    messages = ["a dragon flew", "over the castle", "at night, with salt"]
    chosen = select(entries, messages, budget=100, scan_depth=4, count_tokens=words)
    assert [e.order for e in chosen] == [10, 50, 60, 100]  # insertion order: ascending
    before, after = render(chosen)
    assert before == "The world is called Vel.\nDragons of Vel are blue and fear salt."
    assert after == "At night the castle gates are sealed.\nSalt is rare in Vel."
    # 5 (constant) + 8 (dragons, order 100) fit in 14; salt (5) and castle (7) do not
    assert [e.order for e in select(entries, messages, budget=14, scan_depth=4, count_tokens=words)] == [10, 100]
    # scan depth 1: only the newest message ("at night, with salt") is searched
    assert [e.order for e in select(entries, messages, budget=100, scan_depth=1, count_tokens=words)] == [10, 60]


def test_import_validates_and_stores(tmp_path: Path) -> None:
    path, count = import_book(tmp_path, "My World.json", json.dumps(ST_WORLD).encode())
    assert count == 5 and path.parent == tmp_path and json.loads(path.read_text()) == ST_WORLD
    with pytest.raises(LorebookError, match="not JSON"):
        import_book(tmp_path, "x.json", b"{oops")
    with pytest.raises(LorebookError, match="entries"):
        import_book(tmp_path, "x.json", b"[]")


# -- lorebook: in a real chat prompt ---------------------------------------------------------------
def test_lorebook_entries_enter_the_chat_prompt_within_budget(make_app) -> None:
    app, _ = make_app("lorebook")
    import_book(Path(app.settings.user_data_dir) / "lorebooks", "vel.json", json.dumps(ST_WORLD).encode())
    service = ChatService(app)
    history = ChatHistory.new("Assistant", "How can I help you today?").with_turn("user", "Tell me of the castle.")
    history = history.with_turn("assistant", "It is old.")
    text = service.build_prompt(history, "Is there a dragon at night?", CHAT, max_new_tokens=8).text
    context_at = text.index("The following is a conversation")
    assert text.index("The world is called Vel.") < text.index("Dragons of Vel") < context_at
    assert context_at < text.index("At night the castle gates are sealed.")
    assert "never shown" not in text and "Salt is rare" not in text

    count = lambda s: len(app.core.tokenize(s, add_bos=False))  # noqa: E731
    app.extensions.set_params("lorebook", {"budget_tokens": count("The world is called Vel.\n") + 2})
    text = service.build_prompt(history, "Is there a dragon at night?", CHAT, max_new_tokens=8).text
    assert "The world is called Vel." in text and "Dragons of Vel" not in text and "castle gates" not in text

    app.extensions.set_params("lorebook", {"budget_tokens": 512})
    deep = service.build_prompt(history, "Hello at night", CHAT, max_new_tokens=8).text
    assert "castle gates" in deep  # scan depth 4 reaches "Tell me of the castle."
    app.extensions.set_params("lorebook", {"scan_depth": 1})
    assert "castle gates" not in service.build_prompt(history, "Hello at night", CHAT, max_new_tokens=8).text


# -- long_memory -------------------------------------------------------------------------------------
def long_chat(exchanges: int) -> ChatHistory:
    history = ChatHistory.new("Assistant", "How can I help you today?")
    for i in range(exchanges):
        history = history.with_turn("user", f"Question number {i}: what do you think about topic {i} today?")
        history = history.with_turn("assistant", f"Answer number {i}: topic {i} is interesting in many ways.")
    return history


def test_long_memory_summarises_dropped_turns_with_the_model_and_keeps_it(make_app) -> None:
    app, spy = make_app("long_memory")
    app.extensions.set_params("long_memory", {"summary_tokens": 16})
    service = ChatService(app)
    settings = {"max_new_tokens": 8, "truncation_length": 300, "sampling": GREEDY}
    history = long_chat(10)
    without = service.prompt_builder(max_new_tokens=8, truncation_length=300)(
        "And now?", history, CHAT, service.character(None))
    assert without.dropped_turns > 0  # the chat outgrows the context

    *_, last = service.stream_reply(history, "And now?", CHAT, settings)
    assert last.done and last.finished.usage.completion_tokens == 8
    summary_requests = [p for p in spy.prompts if p.startswith("Summarise the conversation")]
    assert summary_requests and "Question number 0" in summary_requests[0]
    saved = service.histories.load("Assistant", history.chat_id)
    memory = read_memory(saved)
    assert memory.summary and memory.start - 1 >= without.dropped_turns
    assert KEY in saved.turns[memory.start - 1].metadata and len(saved.turns) == len(history.turns) + 2

    # The reply's prompt: the summary, then every turn it does not cover; nothing in between is lost.
    reply_prompt = [p for p in spy.prompts if not p.startswith("Summarise")][-1]
    assert "Summary of the earlier conversation:" in reply_prompt and memory.summary in reply_prompt
    assert saved.turns[memory.start - 1].content not in reply_prompt
    assert all(t.content in reply_prompt for t in saved.turns[memory.start : len(history.turns)])

    *_, again = service.stream_reply(saved, "ok", CHAT, settings)  # the summary only moves forward
    assert read_memory(again.history).start >= memory.start and again.history.turns[-1].role == "assistant"


def test_long_memory_leaves_short_chats_alone(make_app) -> None:
    app, spy = make_app("long_memory")
    service = ChatService(app)
    *_, last = service.stream_reply(long_chat(1), "hi", CHAT, {"max_new_tokens": 4, "sampling": GREEDY})
    assert read_memory(last.history).summary == "" and len(spy.prompts) == 1


# -- character_bias ------------------------------------------------------------------------------------
def test_character_bias_starts_the_reply_and_the_prompt(make_app) -> None:
    app, spy = make_app("character_bias")
    service = ChatService(app)
    history = ChatHistory.new("Assistant", "How can I help you today?")
    *_, last = service.stream_reply(history, "How are you?", CHAT, {"max_new_tokens": 6, "sampling": GREEDY})
    reply = last.history.turns[-1]
    assert reply.role == "assistant" and reply.content.startswith("*I am so happy*")
    assert len(reply.content) > len("*I am so happy*")
    assert spy.prompts[-1].endswith("Assistant: *I am so happy*")
    assert last.history.turns[-2].content == "How are you?"
    app.extensions.set_params("character_bias", {"activate": False})
    *_, plain = service.stream_reply(history, "How are you?", CHAT, {"max_new_tokens": 6, "sampling": GREEDY})
    assert not plain.history.turns[-1].content.startswith("*I am so happy*")


def test_requests_keep_validating(make_app) -> None:
    app, _ = make_app("character_bias", "lorebook", "long_memory", "example")
    done = app.core.generate(GenerationRequest(prompt="plain text", max_new_tokens=3, sampling=GREEDY))
    assert done.usage.completion_tokens == 3 and app.extensions.notices == []
