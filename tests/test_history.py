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


# -- issue 20: reply versions in the file (format 2), older files, damaged files -----------------------
def versioned() -> ChatHistory:
    """A chat whose last reply was regenerated twice: versions "one", "two" (with reasoning), "three"."""
    first = Turn("assistant", "one")
    turn = first.with_version("two", reasoning="thought two").with_version("three")
    return sample().with_turns((*sample().turns[:2], turn))


def test_versions_keep_the_shown_reply_in_content_and_round_trip(tmp_path: Path) -> None:
    history = versioned()
    reply = history.turns[-1]
    assert (reply.content, reply.version_index, reply.version_count) == ("three", 2, 3)
    assert "reasoning" not in reply.metadata  # the shown version has none
    assert [v["content"] for v in reply.metadata["versions"]] == ["one", "two", "three"]
    second = reply.at_version(1)
    assert (second.content, second.metadata["reasoning"], second.version_index) == ("two", "thought two", 1)
    assert second.at_version(0).content == "one" and "reasoning" not in second.at_version(0).metadata
    # an edit changes the shown version only; the stored entry follows the turn's content
    edited = second.edited("two, edited")
    assert edited.metadata["versions"][1] == {"content": "two, edited", "reasoning": "thought two"}
    assert edited.at_version(2).at_version(1).content == "two, edited"
    with pytest.raises(HistoryError, match="version 4 does not exist"):
        reply.at_version(3)
    store = HistoryStore(tmp_path)
    path = store.save(history.with_turns((*history.turns[:2], edited)))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 2
    assert data["turns"][-1]["content"] == "two, edited" and data["turns"][-1]["metadata"]["version"] == 1
    assert store.load("Aria", history.chat_id).turns[-1] == edited
    assert Turn("user", "plain").version_count == 1 and Turn("user", "plain").version_index == 0


def test_version_1_files_still_load(tmp_path: Path) -> None:
    folder = tmp_path / "chats" / "Aria"
    folder.mkdir(parents=True)
    v1 = {
        "format": "hearth-chat",
        "version": 1,
        "id": "old",
        "character": "Aria",
        "title": "",
        "created": "2025-01-01T00:00:00+00:00",
        "updated": "2025-01-01T00:00:00+00:00",
        "turns": [
            {"role": "assistant", "content": "Ahoy!", "metadata": {"greeting": True}},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Arr.", "metadata": {"reasoning": "a pirate"}},
        ],
    }
    (folder / "old.json").write_text(json.dumps(v1), encoding="utf-8")
    history = HistoryStore(tmp_path).load("Aria", "old")
    assert [t.content for t in history.turns] == ["Ahoy!", "Hi", "Arr."]
    assert history.turns[-1].version_count == 1 and history.turns[-1].metadata == {"reasoning": "a pirate"}
    regenerated = history.turns[-1].with_version("Yarr.")
    assert regenerated.metadata["versions"] == [{"content": "Arr.", "reasoning": "a pirate"}, {"content": "Yarr."}]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"versions": "x", "version": 0}, "versions must be a list"),
        ({"versions": [], "version": 0}, "versions must be a list"),
        ({"versions": [{"text": "x"}], "version": 0}, "versions must be a list"),
        ({"versions": [{"content": "x"}], "version": 1}, "version must be the index"),
        ({"versions": [{"content": "x"}], "version": True}, "version must be the index"),
        ({"version": 0}, "versions must be a list"),
    ],
)
def test_malformed_versions_are_refused(tmp_path: Path, metadata: dict, message: str) -> None:
    payload = {"turns": [{"role": "assistant", "content": "x", "metadata": metadata}]}
    with pytest.raises(HistoryError, match=f"turn 1: {message}"):
        HistoryStore(tmp_path).import_chat("Aria", json.dumps(payload))


def test_a_damaged_chat_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    good = sample()
    store.save(good)
    folder = tmp_path / "chats" / "Aria"
    (folder / "broken.json").write_text('{"turns": [', encoding="utf-8")
    bad_versions = {"turns": [{"role": "assistant", "content": "x", "metadata": {"versions": [], "version": 0}}]}
    (folder / "odd.json").write_text(json.dumps(bad_versions), encoding="utf-8")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert [c.chat_id for c in store.list_chats("Aria")] == [good.chat_id]
    problems = store.unreadable("Aria")
    assert len(problems) == 2
    assert problems[0].startswith("broken.json: cannot read chat 'broken'")
    assert problems[1].startswith("odd.json: turn 1: versions must be a list")
    assert store.latest("Aria") == good
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing rewritten
    assert store.unreadable("Nobody") == []


def test_edit_delete_version_and_branch_operations() -> None:
    from webui.prompts.chat import BRANCH_MARK, branch, delete_turn, edit_turn, show_version

    history = versioned().with_turn("user", "later question", visible="as typed")
    edited = edit_turn(history, 3, "later question, edited")
    assert edited.turns[3] == Turn("user", "later question, edited")  # the extension's rewrite is gone
    assert edited.turns[:3] == history.turns[:3] and edited.chat_id == history.chat_id
    greeting = edit_turn(history, 0, "Ahoy, matey!").turns[0]
    assert greeting == Turn("assistant", "Ahoy, matey!", {"greeting": True})
    with pytest.raises(HistoryError, match="cannot be empty"):
        edit_turn(history, 1, "  ")
    with pytest.raises(HistoryError, match="no longer in the chat"):
        edit_turn(history, 9, "x")

    middle = delete_turn(history, 1)  # a middle message: the rest stay in order
    assert [t.content for t in middle.turns] == ["Ahoy!", "three", "later question"]
    assert middle.turns[1].version_count == 3
    with pytest.raises(HistoryError, match="greeting stays"):
        delete_turn(history, 0)
    unflagged = ChatHistory("Aria", (Turn("assistant", "continued greeting"), Turn("user", "q")), "c")
    with pytest.raises(HistoryError, match="greeting stays"):
        delete_turn(unflagged, 0)
    assert [t.role for t in delete_turn(ChatHistory("Aria", (Turn("user", "q"),), "c"), 0).turns] == []

    shown = show_version(history, 2, 1)
    assert shown.turns[2].content == "two" and shown.turns[2].metadata["reasoning"] == "thought two"
    assert shown.turns[3] == history.turns[3]

    branched = branch(shown, 2)
    assert branched.chat_id != history.chat_id and branched.character == "Aria"
    assert branched.turns == shown.turns[:3] and branched.title == f"Hi there{BRANCH_MARK}"
    assert branch(branched, 0).title == branched.title  # a branch of a branch is not "(branch) (branch)"
    with pytest.raises(HistoryError, match="no longer in the chat"):
        branch(history, 4)
