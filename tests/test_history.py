"""Chat histories on disk: save/load/list/rename/delete, imports (ours and tgw's), atomic writes, safe names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from webui import safe_files
from webui.errors import HearthError
from webui.prompts.history import ChatHistory, HistoryError, HistoryStore, Turn


def sample(character: str = "Aria") -> ChatHistory:
    return (
        ChatHistory.new(character, greeting="Ahoy!")
        .with_turn("user", "Hi there")
        .with_turn("assistant", "Arr.")
    )


def test_new_chat_starts_with_the_greeting() -> None:
    history = ChatHistory.new("Aria", greeting="Ahoy!")
    assert history.turns == (Turn("assistant", "Ahoy!", {"greeting": True}),)
    assert ChatHistory.new("Aria").turns == ()
    assert history.chat_id and history.display_title() == "New chat"
    with pytest.raises(HistoryError):
        history.with_turn("system", "nope")


def test_save_load_roundtrip(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = sample().with_turn("user", "Ünïcode ✓", tokens=12)
    path = store.save(history)
    assert path == tmp_path / "chats" / "Aria" / f"{history.chat_id}.json"
    loaded = store.load("Aria", history.chat_id)
    assert loaded == history
    assert loaded.turns[-1].metadata == {"tokens": 12}
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == "hearth-chat"


def test_list_newest_first_with_titles(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    older = ChatHistory(
        "Aria", (Turn("user", "first chat " * 20),), "older", updated="2024-01-01T00:00:00+00:00"
    )
    newer = ChatHistory("Aria", (Turn("user", "second"),), "newer", updated="2025-01-01T00:00:00+00:00")
    store.save(older)
    store.save(newer)
    (tmp_path / "chats" / "Aria" / "garbage.json").write_text("{not json")
    chats = store.list_chats("Aria")
    assert [c.chat_id for c in chats] == ["newer", "older"]
    assert chats[0].title == "second" and chats[0].turn_count == 1
    assert chats[1].title.endswith("…") and len(chats[1].title) <= 60
    assert store.latest("Aria").chat_id == "newer"
    assert store.list_chats("Nobody") == [] and store.latest("Nobody") is None


def test_rename_and_delete(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    history = sample()
    store.save(history)
    renamed = store.rename("Aria", history.chat_id, "Treasure hunt")
    assert renamed.chat_id == "Treasure hunt" and renamed.title == "Treasure hunt"
    assert [c.chat_id for c in store.list_chats("Aria")] == ["Treasure hunt"]
    assert store.load("Aria", "Treasure hunt").turns == history.turns
    other = sample()
    store.save(other)
    with pytest.raises(HistoryError, match="already exists"):
        store.rename("Aria", other.chat_id, "Treasure hunt")
    store.delete("Aria", "Treasure hunt")
    assert [c.chat_id for c in store.list_chats("Aria")] == [other.chat_id]
    with pytest.raises(HistoryError, match="no chat"):
        store.delete("Aria", "Treasure hunt")


def test_import_and_export(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    original = sample()
    store.save(original)
    exported = store.load("Aria", original.chat_id).to_json()  # what Download serves
    imported = store.import_chat("Bob", exported)
    assert imported.turns == original.turns and imported.character == "Bob"
    assert imported.chat_id != original.chat_id
    assert store.load("Bob", imported.chat_id) == imported


def test_import_tgw_format(tmp_path: Path) -> None:
    tgw = {
        "internal": [
            ["<|BEGIN-VISIBLE-CHAT|>", "Hello, I'm Chiharu."],
            ["Hi!", "How are you?"],
            ["Fine", ""],
        ],
        "visible": [["", "Hello, I&#x27;m Chiharu."], ["Hi!", "How are you?"], ["Fine", ""]],
    }
    history = HistoryStore(tmp_path).import_chat("Chiharu", json.dumps(tgw).encode())
    assert history.turns == (
        Turn("assistant", "Hello, I'm Chiharu.", {"greeting": True}),
        Turn("user", "Hi!"),
        Turn("assistant", "How are you?"),
        Turn("user", "Fine"),
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"messages": []}', "not a chat file"),
        ('{"turns": [{"role": "wizard", "content": "x"}]}', "turn 1"),
        ('{"turns": [{"role": "user", "content": 5}]}', "turn 1"),
        ('{"turns": {"role": "user"}}', "must be a list"),
        ('{"internal": [["only one"]]}', r"internal\[0\]"),
    ],
)
def test_import_rejects_malformed_files(tmp_path: Path, payload: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        HistoryStore(tmp_path).import_chat("Aria", payload)
    assert not (tmp_path / "chats" / "Aria").exists() or not list((tmp_path / "chats" / "Aria").iterdir())


@pytest.mark.parametrize("failing", ["replace", "write"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = HistoryStore(tmp_path)
    history = sample()
    path = store.save(history)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    if failing == "replace":
        monkeypatch.setattr(safe_files.os, "replace", boom)
    else:
        monkeypatch.setattr(safe_files.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(history.with_turn("user", "this must not half-land"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert store.load("Aria", history.chat_id) == history


def test_hostile_names_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    root = tmp_path / "user_data"
    store = HistoryStore(root)
    for character, chat_id in [
        ("../../etc", "passwd"),
        ("Aria", "../../etc/passwd"),
        ("..", ".."),
        ("/abs", "\\x"),
    ]:
        history = ChatHistory(character, (Turn("user", "x"),), chat_id)
        with pytest.raises(safe_files.UnsafeNameError, match="not allowed"):
            store.save(history)
        with pytest.raises(HearthError):
            store.load(character, chat_id)
    assert not tmp_path.joinpath("user_data").exists()
    store.save(ChatHistory("Aria", (Turn("user", "x"),), "first"))
    renamed = store.rename("Aria", "first", "../../../outside")  # a title: made into a plain file name
    assert (root / "chats" / "Aria" / f"{renamed.chat_id}.json").is_file()
    assert not any(p for p in tmp_path.rglob("*") if root not in p.parents and p != root)


def test_safe_name_rules() -> None:
    assert safe_files.safe_name("../../etc/passwd") == "_._etc_passwd"
    assert safe_files.safe_name("..") == "unnamed"
    assert safe_files.safe_name("  .hidden ") == "hidden"
    assert safe_files.safe_name("NUL") == "_NUL"
    assert safe_files.safe_name("日本語 キャラ") == "日本語 キャラ"
    assert "\x00" not in safe_files.safe_name("a\x00b\x1fc")
    assert len(safe_files.safe_name("x" * 500)) <= 100
    assert os.sep not in safe_files.safe_name(f"a{os.sep}b")
