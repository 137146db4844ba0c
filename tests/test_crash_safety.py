"""Nothing lost in a crash (issue 12, item 7): stale temp files from a killed save are removed at start, and
the user's message is on disk while the reply streams (held inside a real logits-processor hook of
tiny-llama.gguf, so the file is read mid-reply, waiting on state and never on a fixed sleep)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webui import safe_files
from webui.app import App
from webui.chat_service import ChatOptions, ChatService
from webui.config import Settings
from webui.plugins import hookimpl
from webui.prompts.history import ChatHistory
from webui.sampling import SamplingParams


# -- crash leftovers -----------------------------------------------------------------------------------
def test_stale_temp_files_are_removed_at_start_and_nothing_else(tmp_path: Path) -> None:
    user, presets = tmp_path / "user", tmp_path / "presets"
    settings = tmp_path / "conf" / "settings.yaml"
    old = time.time() - 3600
    stale = [
        user / "chats" / "Aria" / ".c.json.abcd1234.tmp",
        user / "characters" / ".A.yaml.hearth-ab_cd123.tmp",
        presets / ".Mine.yaml.zzzzzzzz.tmp",
        settings.parent / ".settings.yaml.hearth-12345678.tmp",
    ]
    kept = [
        user / "prompts" / ".p.txt.hearth-fresh123.tmp",  # young: a save may be in progress
        user / "prompts" / "notes.abcd1234.tmp",
        user / ".notes.tmp",
        presets / "sub" / ".x.yaml.abcd1234.tmp",
        settings.parent / ".other.yaml.abcd1234.tmp",
        user / "chats" / "Aria" / "c.json",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        if path.name != ".p.txt.hearth-fresh123.tmp":
            os.utime(path, (old, old))
    app = App.create(
        Settings(
            models_dir=tmp_path / "models", user_data_dir=user, presets_dir=presets, settings_file=settings
        )
    )
    assert app.settings.user_data_dir == user
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_atomic_writes_use_the_name_the_cleanup_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def crash(src: str, dst: Any) -> None:
        seen.append(Path(src).name)
        raise OSError("killed")

    monkeypatch.setattr(safe_files.os, "replace", crash)
    with pytest.raises(OSError):
        safe_files.atomic_write_text(tmp_path / "settings.yaml", "x")
    assert safe_files.temp_target(seen[0]) == "settings.yaml" and ".hearth-" in seen[0]


# -- the user's message is on disk while the reply streams ---------------------------------------------
class Gate:
    """A logits-processor hook that holds the generation at its first token until released."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    @hookimpl
    def logits_processor(self) -> list[Any]:
        def hold(input_ids: Any, scores: Any) -> Any:
            self.started.set()
            assert self.release.wait(30), "the test never released the generation"
            return scores

        return [hold]


@pytest.fixture
def chat_app(models_dir: Path, tmp_path: Path) -> Iterator[tuple[App, Gate]]:
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path / "user"))
    app.models.load("tiny-llama.gguf")
    gate = Gate()
    app.extensions.add("gate", gate)
    app.extensions.enable("gate")
    yield app, gate
    gate.release.set()
    app.models.unload()


SETTINGS = {"max_new_tokens": 4, "sampling": SamplingParams(do_sample=False, ban_eos_token=True).model_dump()}


def run_in_thread(updates: Iterator[Any]) -> tuple[threading.Thread, list[Any]]:
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.extend(updates), daemon=True)
    thread.start()
    return thread, seen


def test_the_message_is_saved_before_the_reply_and_the_reply_when_it_ends(chat_app: tuple[App, Gate]) -> None:
    app, gate = chat_app
    service = ChatService(app)
    history = ChatHistory.new("Assistant", "Hello.")
    thread, seen = run_in_thread(service.stream_reply(history, "remember me", ChatOptions(), SETTINGS))
    assert gate.started.wait(30)
    mid = service.histories.load("Assistant", history.chat_id)  # what a kill -9 now would leave
    assert [(t.role, t.content) for t in mid.turns] == [("assistant", "Hello."), ("user", "remember me")]
    gate.release.set()
    thread.join(30)
    saved = service.histories.load("Assistant", history.chat_id)
    assert seen[-1].done and saved.turns[-1].content == seen[-1].text and len(saved.turns) == 3


def test_stop_saves_the_partial_reply_and_continue_keeps_the_file_until_it_ends(
    chat_app: tuple[App, Gate],
) -> None:
    app, gate = chat_app
    service = ChatService(app)
    history = ChatHistory.new("Assistant").with_turn("user", "hi").with_turn("assistant", "Once")
    service.histories.save(history)
    cancel = threading.Event()
    thread, seen = run_in_thread(
        service.stream_reply(history, None, ChatOptions(), SETTINGS, cancel, continue_last=True)
    )
    assert gate.started.wait(30)
    assert service.histories.load("Assistant", history.chat_id).turns == history.turns  # nothing dropped
    cancel.set()
    gate.release.set()
    thread.join(30)
    saved = service.histories.load("Assistant", history.chat_id)
    assert seen[-1].finish_reason == "cancelled"
    assert saved.turns[-1].content.startswith("Once") and saved.turns[-1].content == seen[-1].text
