"""Characters: who the model plays in chat modes, loaded from tgw YAML/JSON and TavernAI/SillyTavern cards.

Cards arrive from the internet (PNG with a base64 JSON text chunk, or bare JSON), so everything here treats
input as untrusted: a malformed card is a `CharacterError` with a message a person can act on, and a
card's name never chooses where a file is written (see `safe_files.safe_name`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from webui.loader_api import HearthError
from webui.prompts.safe_files import atomic_write_bytes, atomic_write_text, path_inside, safe_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_SUFFIXES = (".yaml", ".yml", ".json")
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DEFAULT_FILE = Path(__file__).with_name("default_character.yaml")
_MAX_CHUNK = 64 * 1024 * 1024


class CharacterError(HearthError):
    """A character file or card is missing, unreadable or malformed."""


@dataclass(frozen=True)
class Character:
    """A persona for chat modes. ``context`` is the persona/scenario text that opens every prompt."""

    name: str
    context: str = ""
    greeting: str = ""
    example_dialogue: str = ""
    user_name: str | None = None
    picture: bytes | None = None
    picture_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (tgw's field names); the picture is stored next to it, not inside."""
        data: dict[str, Any] = {"name": self.name, "context": self.context, "greeting": self.greeting}
        if self.example_dialogue:
            data["example_dialogue"] = self.example_dialogue
        if self.user_name:
            data["user_name"] = self.user_name
        return data


def default_character() -> Character:
    """The built-in assistant persona, used when no character is chosen."""
    return character_from_dict(yaml.safe_load(_DEFAULT_FILE.read_text(encoding="utf-8")), "Assistant")


def character_from_dict(data: Any, fallback_name: str = "Character") -> Character:
    """Accept tgw fields, TavernAI V1 fields, or a V2/V3 card ({spec, data: {...}})."""
    if not isinstance(data, dict):
        raise CharacterError(f"a character must be a mapping of fields, got {type(data).__name__}")
    if isinstance(data.get("data"), dict) and (
        str(data.get("spec", "")).startswith("chara_card") or "name" not in data
    ):
        data = data["data"]
    text = {
        key: _text(data, key)
        for key in (
            "name",
            "char_name",
            "context",
            "greeting",
            "char_greeting",
            "example_dialogue",
            "description",
            "personality",
            "scenario",
            "first_mes",
            "mes_example",
            "char_persona",
            "world_scenario",
            "user_name",
            "your_name",
        )
    }
    name = text["name"] or text["char_name"] or fallback_name
    if text["context"] or not any(
        text[k] for k in ("description", "personality", "scenario", "char_persona")
    ):
        context = text["context"]
    else:
        parts = [text["description"] or text["char_persona"]]
        if text["personality"]:
            parts.append(f"{{{{char}}}}'s personality: {text['personality']}")
        if text["scenario"] or text["world_scenario"]:
            parts.append(f"Scenario: {text['scenario'] or text['world_scenario']}")
        context = "\n".join(p for p in parts if p)
    return Character(
        name=name.strip() or fallback_name,
        context=context.strip(),
        greeting=(text["greeting"] or text["first_mes"] or text["char_greeting"]).strip(),
        example_dialogue=(text["example_dialogue"] or text["mes_example"]).strip(),
        user_name=(text["user_name"] or text["your_name"]).strip() or None,
    )


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise CharacterError(f"field {key!r} must be text, got {type(value).__name__}")
    return str(value)


def png_text_chunks(data: bytes) -> dict[str, str]:
    """Keyword -> text of a PNG's tEXt, zTXt and iTXt chunks, parsed without decoding the image."""
    if not data.startswith(PNG_SIGNATURE):
        raise CharacterError("not a PNG file (bad signature)")
    chunks: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if length > _MAX_CHUNK or len(body) != length:
            raise CharacterError("the PNG is truncated or corrupt")
        pos += 12 + length
        if kind == b"IEND":
            break
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                chunks[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, value = rest.partition(b"\0")
                chunks[key.decode("latin-1")] = (zlib.decompress(value) if compressed else value).decode(
                    "utf-8"
                )
        except (zlib.error, UnicodeDecodeError, IndexError) as exc:
            raise CharacterError(f"the PNG text chunk {kind.decode('latin-1')} is corrupt: {exc}") from exc
    return chunks


def parse_png_card(data: bytes, fallback_name: str = "Character") -> Character:
    """A character from a Tavern/SillyTavern PNG card (``ccv3`` preferred over ``chara``); picture kept."""
    chunks = png_text_chunks(data)
    payload = chunks.get("ccv3") or chunks.get("chara")
    if payload is None:
        raise CharacterError("this PNG has no character card data (no 'chara' or 'ccv3' text chunk)")
    try:
        card = json.loads(base64.b64decode(payload.strip(), validate=False).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CharacterError(f"the card's character data is not base64-encoded JSON: {exc}") from exc
    character = character_from_dict(card, fallback_name)
    return replace(character, picture=data)


def parse_character_file(data: bytes, filename: str) -> Character:
    """An uploaded character of any supported kind, recognised by content first, then by extension."""
    stem = safe_name(Path(filename).stem, "Character")
    if data.startswith(PNG_SIGNATURE):
        return parse_png_card(data, stem)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CharacterError(f"{filename}: not a PNG card and not UTF-8 text") from exc
    try:
        parsed = json.loads(text) if filename.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CharacterError(f"{filename}: cannot parse ({exc})") from exc
    return character_from_dict(parsed, stem)


class CharacterStore:
    """User characters as ``<name>.yaml`` plus an optional ``<name>.png`` in one folder."""

    def __init__(self, user_data_dir: Path) -> None:
        self.folder = user_data_dir / "characters"

    def names(self) -> list[str]:
        """Saved character names, with the built-in Assistant first unless a user file overrides it."""
        names = {p.stem for p in self.folder.glob("*") if p.suffix.lower() in _DATA_SUFFIXES}
        return ["Assistant", *sorted(names - {"Assistant"}, key=str.lower)]

    def load(self, name: str) -> Character:
        """Load by name; 'Assistant' falls back to the built-in persona when no user file exists."""
        for suffix in _DATA_SUFFIXES:
            path = path_inside(self.folder, name, suffix)
            if path.is_file():
                character = parse_character_file(path.read_bytes(), path.name)
                return self._with_picture(character, path)
        if safe_name(name) == "Assistant":
            return default_character()
        raise CharacterError(f"no character named {name!r}")

    def _with_picture(self, character: Character, data_path: Path) -> Character:
        for suffix in _PICTURE_SUFFIXES:
            picture = data_path.with_suffix(suffix)
            if picture.is_file():
                return replace(character, picture_path=picture)
        return character

    def save(self, character: Character) -> Path:
        """Write the YAML (and the picture bytes, if any) atomically; returns the YAML path."""
        path = path_inside(self.folder, character.name, ".yaml")
        text = yaml.safe_dump(character.to_dict(), allow_unicode=True, sort_keys=False, width=1000)
        atomic_write_text(path, text)
        if character.picture:
            atomic_write_bytes(path.with_suffix(".png"), character.picture)
        return path

    def import_file(self, data: bytes, filename: str) -> Character:
        """Parse an uploaded YAML/JSON/PNG character and save it; returns it as saved."""
        character = parse_character_file(data, filename)
        self.save(character)
        return self.load(character.name)

    def delete(self, name: str) -> None:
        """Remove a character's data and picture files; a missing character is an error."""
        removed = False
        for suffix in (*_DATA_SUFFIXES, *_PICTURE_SUFFIXES):
            path = path_inside(self.folder, name, suffix)
            if path.is_file():
                path.unlink()
                removed = True
        if not removed:
            raise CharacterError(f"no character named {name!r}")
