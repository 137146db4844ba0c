"""Cache truth for chats you edit (issue 20): on the llama.cpp loader (tiny-llama.gguf) and Transformers
(tiny-llama), through the Chat tab's own session (real prompts, real generation core).

- After an edit at message k, the next reply evaluates only the prompt tokens after the edit point (the
  model's ``evaluated_tokens`` counter), not the whole chat again.
- Every reply of a chat that was edited, regenerated (versions), stepped to another version, branched and
  trimmed is, token for token, what a freshly loaded model (no cache at all) makes of the same prompt: the
  prefix cache never leaks the earlier text into a new reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from webui.chat_service import ChatOptions, ChatService
from webui.events import Finished
from webui.generation import GenerationRequest
from webui.loader_api import common_prefix_length
from webui.prompts.characters import Character
from webui.prompts.history import ChatHistory
from webui.ui.chat_session import ChatSession

pytest_plugins = ["tests.ui_harness"]
SETTINGS = {"max_new_tokens": 8, "sampling": {"do_sample": False, "ban_eos_token": True}}
OPTIONS = ChatOptions(mode="chat", character="Sage")
#: A long context, so that re-reading the whole chat would be far more than the tokens after an edit.
CONTEXT = " ".join(
    ["The Sage tells stories about dragons, villages by the sea and libraries of old books."] * 12
)


@dataclass
class Generation:
    request: GenerationRequest
    prompt_ids: list[int]
    finished: Finished
    evaluated: int  # tokens the model evaluated for it


class Ledger:
    """Every generation the chat asks of the core, with the tokens the model evaluated for it."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.app = app
        self.generations: list[Generation] = []
        self.original = app.core.stream
        monkeypatch.setattr(app.core, "stream", self.stream)

    def stream(self, request: GenerationRequest, *args: Any, **kwargs: Any) -> Iterator[Any]:
        model = self.app.models.require()
        before = model.evaluated_tokens
        for event in self.original(request, *args, **kwargs):
            if isinstance(event, Finished):
                ids = model.tokenize(request.prompt, request.add_bos_token)
                self.generations.append(Generation(request, ids, event, model.evaluated_tokens - before))
            yield event

    @property
    def last(self) -> Generation:
        return self.generations[-1]


def finish(reply: Any) -> ChatHistory:
    updates = list(reply.updates)
    assert updates[-1].done and updates[-1].finish_reason == "length"
    return updates[-1].history


def reused(previous: Generation, current: Generation) -> int:
    """Prompt tokens of `current` that the cache left by `previous` (its prompt and reply) already holds."""
    return common_prefix_length([*previous.prompt_ids, *previous.finished.token_ids], current.prompt_ids)


def assert_reads_only_new_tokens(previous: Generation, current: Generation) -> None:
    """The generation evaluated the prompt past the cached prefix, plus its own reply's tokens (the last
    generated token of a reply may or may not be fed back before it ends), and nothing more."""
    fresh = len(current.prompt_ids) - reused(previous, current)
    generated = current.finished.usage.completion_tokens
    assert fresh + generated - 1 <= current.evaluated <= fresh + generated + 1, (
        f"evaluated {current.evaluated} tokens; {fresh} new prompt tokens and {generated} generated"
    )


def edit_point(model: Any, prompt: str, edited: str) -> int:
    """Tokens of `prompt` before the edited message's text (the speaker's name included)."""
    return len(model.tokenize(prompt[: prompt.index(edited)].rstrip(), add_bos=True))


@pytest.fixture(params=["tiny-llama.gguf", "tiny-llama"])
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_edits_versions_and_branches_reuse_the_cache_and_never_change_a_reply(
    ui_app: Any, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = ChatSession(ChatService(ui_app))
    session.service.characters.save(Character("Sage", CONTEXT, "Welcome, traveller."))
    model = ui_app.models.load(model_name)
    ledger = Ledger(ui_app, monkeypatch)

    chat = session.new_chat(OPTIONS)
    for question in ("Tell me about the dragon.", "Where is the village?", "Who wrote the books?"):
        chat = finish(session.send(chat, question, OPTIONS, SETTINGS))
    assert [t.role for t in chat.turns] == ["assistant", *["user", "assistant"] * 3]

    # a regenerated reply keeps the first one as version 1: only the reply is generated again
    chat = finish(session.regenerate(chat, OPTIONS, SETTINGS))
    assert chat.turns[-1].version_count == 2
    assert_reads_only_new_tokens(ledger.generations[-2], ledger.last)

    # an edit at message 4 (the second question): only the prompt after it is read again
    before = ledger.last
    edited = "Which harbour do the fishermen sail from?"
    chat = session.edit_message(chat, 3, edited)
    chat = finish(session.regenerate(chat, OPTIONS, SETTINGS))
    assert chat.turns[-1].version_count == 3
    point = edit_point(model, ledger.last.request.prompt, edited)
    assert point > 200 and abs(reused(before, ledger.last) - point) <= 1
    assert_reads_only_new_tokens(before, ledger.last)

    # version 1 of the last reply chosen: the next prompt reads it, not the newest one
    chat = session.step_version(chat, 6, -1)
    chat = session.step_version(chat, 6, -1)
    first_version = chat.turns[6].content
    assert (
        chat.turns[6].version_index == 0 and first_version != chat.turns[6].metadata["versions"][2]["content"]
    )
    chat = finish(session.send(chat, "And then?", OPTIONS, SETTINGS))
    assert f"Sage: {first_version.strip()}\n" in ledger.last.request.prompt
    assert chat.turns[6].metadata["versions"][2]["content"] not in ledger.last.request.prompt
    assert_reads_only_new_tokens(ledger.generations[-2], ledger.last)

    # an edit of a reply in the middle (message 2), then a new message
    before = ledger.last
    edited = "Dragons sleep under the mountain."
    chat = session.edit_message(chat, 2, edited)
    chat = finish(session.send(chat, "Is that true?", OPTIONS, SETTINGS))
    point = edit_point(model, ledger.last.request.prompt, edited)
    assert abs(reused(before, ledger.last) - point) <= 1
    assert_reads_only_new_tokens(before, ledger.last)

    # a branch from message 5 (a reply), continued; then a middle message deleted there
    branch = finish(session.send(session.branch(chat, 4), "A different road.", OPTIONS, SETTINGS))
    assert branch.chat_id != chat.chat_id and len(branch.turns) == 7
    assert_reads_only_new_tokens(ledger.generations[-2], ledger.last)
    branch = session.delete_message(branch, 3)
    finish(session.regenerate(branch, OPTIONS, SETTINGS))
    assert_reads_only_new_tokens(ledger.generations[-2], ledger.last)

    # every reply again, each on a freshly loaded model: the same tokens, the same text
    assert len(ledger.generations) == 9
    for generation in ledger.generations:
        fresh = ui_app.models.load(model_name)
        events = list(ledger.original(generation.request, is_chat=True))
        done = events[-1]
        assert isinstance(done, Finished)
        assert fresh.evaluated_tokens >= len(generation.prompt_ids)  # nothing was cached
        assert done.token_ids == generation.finished.token_ids and done.text == generation.finished.text
