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

Format version 3 adds images (`Turn.images`, a message's attached pictures): a turn's ``"images"`` list
names each by its file in ``<chat id>.media/`` beside the saved chat, or holds it inline as a ``data:`` URL
in an exported chat and in `ChatHistory.to_dict` (see `webui.prompts.history_media`). A chat without
images is still written as version 2, byte for byte as before. An image that cannot be read back (missing,
corrupt) leaves its turn with a note (``metadata["media_notes"]``) instead of failing the whole chat.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from webui.errors import HearthError
from webui.media import Image, MediaError
from webui.prompts.history_media import MEDIA_NOTES, MEDIA_SUFFIX, MediaFolder, from_inline, inline
from webui.safe_files import atomic_write_text, is_plain_name, path_inside, safe_name

FORMAT = "hearth-chat"
FORMAT_VERSION = 3  # 2: reply versions (metadata "versions" / "version"); 3: images
_TEXT_VERSION = 2  # what a chat without images is written as (readers before images load it whole)
ROLES = ("user", "assistant", "tool")  # "tool": a tool's result (API tool calling)
#: Roles whose turns may hold images: the user's attachments, and a reply that showed a picture (API clients
#: such as SillyTavern send a character's generated pictures back on its messages).
IMAGE_ROLES = ("user", "assistant")
#: Where a turn's stored image is found, by file name: an Image, or None to leave it out unread.
ImageSource = Callable[[str], "Image | None"]
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
    #: The message's images, in order (a user's attachments); the text is `content`.
    images: tuple[Image, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
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
        return Turn(self.role, content, metadata, self.images)

    def _showing(self, versions: list[dict[str, Any]], index: int) -> Turn:
        shown = versions[index]
        own = {k: v for k, v in self.metadata.items() if k not in (*VERSION_FIELDS, "versions", "version")}
        fields = {k: shown[k] for k in VERSION_FIELDS if k in shown}
        return Turn(self.role, str(shown["content"]), {**own, **fields, "versions": versions, "version": index},
                    self.images)

    def to_dict(self, image_ref: Callable[[Image], str] = inline) -> dict[str, Any]:
        """The turn as plain data; each image as `image_ref` gives it (default: a ``data:`` URL)."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.metadata:
            data["metadata"] = self.metadata
        if self.images:
            data["images"] = [image_ref(image) for image in self.images]
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

    def with_turn(self, role: str, content: str, *, images: tuple[Image, ...] | list[Image] = (),
                  **metadata: Any) -> ChatHistory:
        """This history plus one turn at the end (`images`: the message's attached images)."""
        if role not in ROLES:
            raise HistoryError(f"role must be one of {ROLES}, got {role!r}")
        if images and role not in IMAGE_ROLES:
            raise HistoryError(f"a {role} message cannot hold images (only {' and '.join(IMAGE_ROLES)} messages)")
        return self.with_turns((*self.turns, Turn(role, content, dict(metadata), tuple(images))))

    def with_turns(self, turns: tuple[Turn, ...]) -> ChatHistory:
        """This history with its turns replaced (and ``updated`` moved to now)."""
        return ChatHistory(self.character, tuple(turns), self.chat_id, self.title, self.created, _now())

    def display_title(self) -> str:
        """The given title, else the start of the first user message, so chat lists are readable."""
        if self.title:
            return self.title
        first_user = next((t.content for t in self.turns if t.role == "user" and t.content.strip()), "")
        return _preview(first_user) or "New chat"

    @property
    def images(self) -> tuple[Image, ...]:
        """Every image of the chat, in order (one entry per attachment, repeats included)."""
        return tuple(image for turn in self.turns for image in turn.images)

    def to_dict(self, image_ref: Callable[[Image], str] = inline) -> dict[str, Any]:
        """The chat as plain data; images inline as ``data:`` URLs unless `image_ref` names them otherwise
        (`HistoryStore.save` names them by file)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION if self.images else _TEXT_VERSION,
            "id": self.chat_id,
            "character": self.character,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "turns": [t.to_dict(image_ref) for t in self.turns],
        }

    def to_json(self, image_ref: Callable[[Image], str] = inline) -> str:
        """The export form (images inline: the file is the whole chat); readable and diffable."""
        return json.dumps(self.to_dict(image_ref), ensure_ascii=False, indent=2)

    @classmethod
    def from_data(cls, data: Any, character: str, chat_id: str = "", media: ImageSource | None = None) -> ChatHistory:
        """Validate and convert our JSON or tgw's ``internal`` format; anything else is a HistoryError.
        Inline images are read here; images named by file come from `media` (a saved chat's folder; without
        it, or when it fails, the turn gets a note instead of the image)."""
        if not isinstance(data, dict):
            raise HistoryError("a chat file must hold a JSON object")
        if "turns" in data:
            turns = tuple(_turn_from(item, index, media) for index, item in enumerate(_list(data, "turns")))
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


def _turn_from(item: Any, index: int, media: ImageSource | None) -> Turn:
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
    images, notes = _images_from(item.get("images"), index, media)
    if notes:
        earlier = metadata.get(MEDIA_NOTES)
        earlier = earlier if isinstance(earlier, list) else []
        metadata = {**metadata, MEDIA_NOTES: list(dict.fromkeys([*earlier, *notes]))}
    return Turn(item["role"], item["content"], metadata, images)


def _images_from(entries: Any, index: int, media: ImageSource | None) -> tuple[tuple[Image, ...], list[str]]:
    """A turn's images, and a note for each one that cannot be had (the rest of the chat still loads)."""
    if entries is None:
        return (), []
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise HistoryError(f"turn {index + 1}: images must be a list of image file names or data: URLs")
    images: list[Image] = []
    notes: list[str] = []
    for number, entry in enumerate(entries, 1):
        try:
            if entry.startswith("data:"):
                image: Image | None = from_inline(entry, f"the data URL of image {number}")
            elif media is None:
                raise MediaError(f"{entry} is stored beside the saved chat, not in this file")
            else:
                image = media(entry)
        except MediaError as exc:
            notes.append(f"image {number} could not be loaded: {exc}")
            continue
        if image is not None:
            images.append(image)
    return tuple(images), notes


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


#: One save, delete or rename of a chat's files at a time (its JSON and its images must agree).
_FILES_LOCK = threading.RLock()


class HistoryStore:
    """Chats on disk, one JSON file each, one folder per character; a chat's images in ``<chat id>.media/``
    beside its JSON (see `webui.prompts.history_media`)."""

    def __init__(self, user_data_dir: Path) -> None:
        self.root = user_data_dir / "chats"

    def _folder(self, character: str) -> Path:
        return path_inside(self.root, character, what="character")

    def _path(self, character: str, chat_id: str) -> Path:
        return path_inside(self._folder(character), chat_id, ".json", what="chat")

    def media(self, character: str, chat_id: str) -> MediaFolder:
        """The folder of a chat's images (it exists only while the chat holds some)."""
        return MediaFolder(path_inside(self._folder(character), chat_id, MEDIA_SUFFIX, what="chat"))

    def save(self, history: ChatHistory) -> Path:
        """Atomically write the chat (a crash leaves the previous version) and its images; returns its path.
        New images are stored before the JSON that names them, and images no longer named are removed after."""
        if not history.chat_id:
            raise HistoryError("cannot save a chat without an id (use ChatHistory.new)")
        path = self._path(history.character, history.chat_id)
        media = self.media(history.character, history.chat_id)
        with _FILES_LOCK:
            media.write(history.images)
            atomic_write_text(path, history.to_json(image_ref=lambda image: image.file_name))
            media.prune({image.file_name for image in history.images})
        return path

    def load(self, character: str, chat_id: str) -> ChatHistory:
        """The saved chat with its images (an image that cannot be read leaves a note on its turn)."""
        return self._read(character, chat_id, functools.cache(self.media(character, chat_id).read))  # each file once

    def _read(self, character: str, chat_id: str, media: ImageSource) -> ChatHistory:
        path = self._path(character, chat_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HistoryError(f"no chat {chat_id!r} for {character!r}") from None
        except (OSError, ValueError) as exc:
            raise HistoryError(f"cannot read chat {chat_id!r}: {exc}") from exc
        return ChatHistory.from_data(data, character, chat_id=path.stem, media=media)

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
                history = self._read(character, path.stem, lambda name: None)  # the list needs no pictures
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
            self.delete(character, chat_id)
        return renamed

    def delete(self, character: str, chat_id: str) -> None:
        """Remove the chat and its images."""
        path = self._path(character, chat_id)
        media = self.media(character, chat_id)
        with _FILES_LOCK:
            if not path.is_file():
                raise HistoryError(f"no chat {chat_id!r} for {character!r}")
            path.unlink()
            media.remove()

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
