"""Chat histories: the turns of one conversation, and their files under ``user_data/chats/<character>/``.

A history is plain data (role + content + metadata per turn) so the UI, the API and extensions can share
it; saving is atomic so a crash mid-save never costs a conversation. Character keys and chat ids are file
names: one that is not a plain name is refused (`safe_files.UnsafeNameError`) before anything is written. Imports accept our own JSON and
text-generation-webui's ``{"internal": [[user, bot], ...], "visible": ...}`` files.

Format version 2 adds reply versions: a regenerated reply keeps the earlier ones in
``metadata["versions"]`` (a list of ``{"content": text, "reasoning": ...}``, one per version, oldest first)
with ``metadata["version"]`` the index shown. The shown version is also the turn's own ``content`` and
metadata, so every reader that knows nothing of versions (prompts, the API, extensions) sees the chosen
reply; `Turn` keeps the two in step. Version 1 files (no versions) and tgw's files load unchanged.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from webui.errors import HearthError
from webui.safe_files import atomic_write_text, is_plain_name, path_inside, safe_name

FORMAT = "hearth-chat"
FORMAT_VERSION = 2  # 2: reply versions (metadata "versions" / "version")
ROLES = ("user", "assistant", "tool")  # "tool": a tool's result (API tool calling)
TGW_GREETING_MARKER = "<|BEGIN-VISIBLE-CHAT|>"
_PREVIEW_CHARS = 60


class HistoryError(HearthError):
    """A chat file is missing, malformed, or a chat operation cannot apply."""


#: Metadata that belongs to one version of a reply (kept with it in ``versions``); the rest is the turn's.
VERSION_FIELDS = ("reasoning", "reasoning_content", "tool_calls")


@dataclass(frozen=True)
class Turn:
    """One message. ``metadata`` holds extras such as ``{"greeting": True}`` or generation timings, and a
    regenerated reply's ``versions`` / ``version`` (see the module docstring): the shown version's entry is
    always rewritten from ``content`` and the version fields, so the two never disagree."""

    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        versions, index = self.metadata.get("versions"), self.metadata.get("version")
        if isinstance(versions, list) and isinstance(index, int) and 0 <= index < len(versions):
            synced = [*versions[:index], self._entry(), *versions[index + 1 :]]
            object.__setattr__(self, "metadata", {**self.metadata, "versions": synced})

    def _entry(self) -> dict[str, Any]:
        """The shown version as a ``versions`` entry."""
        return {"content": self.content, **{k: self.metadata[k] for k in VERSION_FIELDS if k in self.metadata}}

    @property
    def version_count(self) -> int:
        return len(self.metadata.get("versions") or ()) or 1

    @property
    def version_index(self) -> int:
        return int(self.metadata.get("version") or 0) if self.version_count > 1 else 0

    def with_version(self, content: str, **fields: Any) -> Turn:
        """This reply with a new version (`content` and its version `fields`, e.g. reasoning) added last
        and shown; the earlier versions are kept."""
        versions = list(self.metadata.get("versions") or [self._entry()])
        return self._showing([*versions, {"content": content, **fields}], len(versions))

    def at_version(self, index: int) -> Turn:
        """This reply showing version `index` (0-based)."""
        versions = list(self.metadata.get("versions") or [self._entry()])
        if not 0 <= index < len(versions):
            raise HistoryError(f"version {index + 1} does not exist: this message has {len(versions)}")
        return self._showing(versions, index)

    def edited(self, content: str) -> Turn:
        """This message with new text (the shown version's, for a reply with versions); a user message an
        extension rewrote loses the rewrite (``visible``): what was typed now is what the model reads."""
        metadata = {k: v for k, v in self.metadata.items() if k != "visible"}
        return Turn(self.role, content, metadata)

    def _showing(self, versions: list[dict[str, Any]], index: int) -> Turn:
        shown = versions[index]
        own = {k: v for k, v in self.metadata.items() if k not in (*VERSION_FIELDS, "versions", "version")}
        fields = {k: shown[k] for k in VERSION_FIELDS if k in shown}
        return Turn(self.role, str(shown["content"]), {**own, **fields, "versions": versions, "version": index})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.metadata:
            data["metadata"] = self.metadata
        return data


@dataclass(frozen=True)
class ChatHistory:
    """One conversation with one character; operations return new histories rather than mutating."""

    character: str
    turns: tuple[Turn, ...] = ()
    chat_id: str = ""
    title: str = ""
    created: str = ""
    updated: str = ""

    @classmethod
    def new(cls, character: str, greeting: str = "") -> ChatHistory:
        """A fresh chat; the character's greeting becomes the first assistant turn."""
        now = _now()
        turns = (Turn("assistant", greeting, {"greeting": True}),) if greeting.strip() else ()
        chat_id = f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        return cls(character=character, turns=turns, chat_id=chat_id, created=now, updated=now)

    def with_turn(self, role: str, content: str, **metadata: Any) -> ChatHistory:
        """This history plus one turn at the end."""
        if role not in ROLES:
            raise HistoryError(f"role must be one of {ROLES}, got {role!r}")
        return self.with_turns((*self.turns, Turn(role, content, dict(metadata))))

    def with_turns(self, turns: tuple[Turn, ...]) -> ChatHistory:
        """This history with its turns replaced (and ``updated`` moved to now)."""
        return ChatHistory(self.character, tuple(turns), self.chat_id, self.title, self.created, _now())

    def display_title(self) -> str:
        """The given title, else the start of the first user message, so chat lists are readable."""
        if self.title:
            return self.title
        first_user = next((t.content for t in self.turns if t.role == "user" and t.content.strip()), "")
        return _preview(first_user) or "New chat"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "id": self.chat_id,
            "character": self.character,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "turns": [t.to_dict() for t in self.turns],
        }

    def to_json(self) -> str:
        """The export form (also what is saved); readable and diffable."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_data(cls, data: Any, character: str, chat_id: str = "") -> ChatHistory:
        """Validate and convert our JSON or tgw's ``internal`` format; anything else is a HistoryError."""
        if not isinstance(data, dict):
            raise HistoryError("a chat file must hold a JSON object")
        if "turns" in data:
            turns = tuple(_turn_from(item, index) for index, item in enumerate(_list(data, "turns")))
        elif "internal" in data:
            turns = _turns_from_tgw(_list(data, "internal"))
        else:
            raise HistoryError("not a chat file: expected a 'turns' list or tgw's 'internal' list")
        now = _now()
        return cls(
            character=character,
            turns=turns,
            chat_id=chat_id or str(data.get("id") or ""),
            title=str(data.get("title") or ""),
            created=str(data.get("created") or now),
            updated=str(data.get("updated") or now),
        )


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise HistoryError(f"'{key}' must be a list")
    return value


def _turn_from(item: Any, index: int) -> Turn:
    if (
        not isinstance(item, dict)
        or item.get("role") not in ROLES
        or not isinstance(item.get("content"), str)
    ):
        raise HistoryError(f"turn {index + 1}: expected {{role: user|assistant, content: text}}")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise HistoryError(f"turn {index + 1}: metadata must be an object")
    if "versions" in metadata or "version" in metadata:
        _check_versions(metadata, index)
    return Turn(item["role"], item["content"], metadata)


def _check_versions(metadata: dict[str, Any], index: int) -> None:
    versions, shown = metadata.get("versions"), metadata.get("version")
    if not (
        isinstance(versions, list)
        and versions
        and all(isinstance(v, dict) and isinstance(v.get("content"), str) for v in versions)
    ):
        raise HistoryError(f"turn {index + 1}: versions must be a list of {{content: text}} objects")
    if not (isinstance(shown, int) and not isinstance(shown, bool) and 0 <= shown < len(versions)):
        raise HistoryError(f"turn {index + 1}: version must be the index of one of its {len(versions)} versions")


def _turns_from_tgw(pairs: list[Any]) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) >= 2 and all(isinstance(x, str) for x in pair[:2])):
            raise HistoryError(f"internal[{index}]: expected a [user, bot] pair of strings")
        user, bot = pair[0], pair[1]
        if user == TGW_GREETING_MARKER:
            if bot:
                turns.append(Turn("assistant", bot, {"greeting": True}))
            continue
        if user:
            turns.append(Turn("user", user))
        if bot:
            turns.append(Turn("assistant", bot))
    return tuple(turns)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _preview(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _PREVIEW_CHARS else line[: _PREVIEW_CHARS - 1] + "…"


@dataclass(frozen=True)
class ChatSummary:
    """One row of the past-chats list."""

    chat_id: str
    title: str
    preview: str
    updated: str
    turn_count: int


class HistoryStore:
    """Chats on disk, one JSON file each, one folder per character."""

    def __init__(self, user_data_dir: Path) -> None:
        self.root = user_data_dir / "chats"

    def _folder(self, character: str) -> Path:
        return path_inside(self.root, character, what="character")

    def _path(self, character: str, chat_id: str) -> Path:
        return path_inside(self._folder(character), chat_id, ".json", what="chat")

    def save(self, history: ChatHistory) -> Path:
        """Atomically write the chat (a crash leaves the previous version); returns its path."""
        if not history.chat_id:
            raise HistoryError("cannot save a chat without an id (use ChatHistory.new)")
        path = self._path(history.character, history.chat_id)
        atomic_write_text(path, history.to_json())
        return path

    def load(self, character: str, chat_id: str) -> ChatHistory:
        path = self._path(character, chat_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HistoryError(f"no chat {chat_id!r} for {character!r}") from None
        except (OSError, ValueError) as exc:
            raise HistoryError(f"cannot read chat {chat_id!r}: {exc}") from exc
        return ChatHistory.from_data(data, character, chat_id=path.stem)

    def list_chats(self, character: str) -> list[ChatSummary]:
        """Past chats, newest first; unreadable files are skipped rather than hiding the others (see
        `unreadable`)."""
        return self._scan(character)[0]

    def unreadable(self, character: str) -> list[str]:
        """What is wrong with each chat file of `character` that cannot be read (they stay as they are)."""
        return self._scan(character)[1]

    def _scan(self, character: str) -> tuple[list[ChatSummary], list[str]]:
        folder = self._folder(character)
        summaries, problems = [], []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            if not is_plain_name(path.stem):
                continue
            try:
                history = self.load(character, path.stem)
            except HistoryError as exc:
                problems.append(f"{path.name}: {exc}")
                continue
            last = history.turns[-1].content if history.turns else ""
            summaries.append(
                ChatSummary(
                    path.stem, history.display_title(), _preview(last), history.updated, len(history.turns)
                )
            )
        return sorted(summaries, key=lambda s: (s.updated, s.chat_id), reverse=True), problems

    def latest(self, character: str) -> ChatHistory | None:
        """The most recent chat with a character, which the chat tab reopens."""
        chats = self.list_chats(character)
        return self.load(character, chats[0].chat_id) if chats else None

    def rename(self, character: str, chat_id: str, new_name: str) -> ChatHistory:
        """Give a chat a new name: it becomes the title and (sanitised) the file name."""
        history = self.load(character, chat_id)
        new_id = safe_name(new_name, fallback=chat_id)
        target = self._path(character, new_id)
        if new_id != chat_id and target.exists():
            raise HistoryError(f"a chat named {new_id!r} already exists")
        renamed = ChatHistory(character, history.turns, new_id, new_name.strip(), history.created, _now())
        self.save(renamed)
        if new_id != chat_id:
            self._path(character, chat_id).unlink()
        return renamed

    def delete(self, character: str, chat_id: str) -> None:
        path = self._path(character, chat_id)
        if not path.is_file():
            raise HistoryError(f"no chat {chat_id!r} for {character!r}")
        path.unlink()

    def import_chat(self, character: str, data: bytes | str) -> ChatHistory:
        """Validate an uploaded chat (ours or tgw's) and save it as a new chat of this character."""
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise HistoryError(f"the uploaded chat is not valid JSON: {exc}") from exc
        fresh = ChatHistory.new(character)
        imported = ChatHistory.from_data(parsed, character, chat_id=fresh.chat_id)
        self.save(imported)
        return imported
