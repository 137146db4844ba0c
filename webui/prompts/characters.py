"""Characters: who the model plays in chat modes, loaded from tgw YAML/JSON and TavernAI/SillyTavern cards.

Cards arrive from the internet (PNG with a base64 JSON text chunk, or bare JSON), so everything here treats
input as untrusted: a malformed card is a `CharacterError` with a message a person can act on, and a
card's name never chooses where a file is written (see `safe_files.safe_name`). A card is checked for size,
pixel count and text-chunk size before anything in it is decompressed (see `webui.prompts.png_card`).

An imported card keeps every field, those Hearth does not use too (creator notes, tags, alternate
greetings, character book, extensions, ...): the whole card is saved under ``card:`` in the character's
YAML, and `Character.to_card` gives it back with the fields Hearth edits updated.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from webui.prompts.png_card import PNG_SIGNATURE, CharacterError, check_picture, png_text_chunks
from webui.safe_files import (
    atomic_write_bytes,
    atomic_write_text,
    check_name,
    is_plain_name,
    path_inside,
    safe_name,
)

_DATA_SUFFIXES = (".yaml", ".yml", ".json")
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DEFAULT_FILE = Path(__file__).with_name("default_character.yaml")
#: Fields that mark a mapping as a TavernAI/SillyTavern card rather than a tgw character.
_CARD_FIELDS = (
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "char_name",
    "char_persona",
)
_V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")


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
    #: The imported Tavern card as it came (V1 fields, or ``{spec, spec_version, data}``), kept whole so
    #: saving loses none of its fields; None for a character made in Hearth or from tgw YAML.
    card: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (tgw's field names, then the imported card); the picture is stored next to it."""
        data: dict[str, Any] = {"name": self.name, "context": self.context, "greeting": self.greeting}
        if self.example_dialogue:
            data["example_dialogue"] = self.example_dialogue
        if self.user_name:
            data["user_name"] = self.user_name
        if self.card:
            data["card"] = self.card
        return data

    def to_card(self) -> dict[str, Any]:
        """A SillyTavern card (V2, or the imported card's own spec) holding every field of the imported
        card, with name, greeting and example dialogue as edited here. The description is rewritten only
        when the context was edited (the context joins description, personality and scenario)."""
        card = copy.deepcopy(self.card) if self.card else {}
        wrapped = isinstance(card.get("data"), dict)
        data = card["data"] if wrapped else card
        if not self.card or character_from_dict(self.card).context != self.context:
            data.update(description=self.context, personality="", scenario="")
        data.update(name=self.name, first_mes=self.greeting, mes_example=self.example_dialogue)
        if wrapped:  # V2 writers repeat the V1 fields at the top level for old readers: keep them in step
            card.update({key: value for key, value in data.items() if key in card and key in _V1_FIELDS})
            return card
        return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def default_character() -> Character:
    """The built-in assistant persona, used when no character is chosen."""
    return character_from_dict(yaml.safe_load(_DEFAULT_FILE.read_text(encoding="utf-8")), "Assistant")


def character_from_dict(data: Any, fallback_name: str = "Character") -> Character:
    """Accept tgw fields, TavernAI V1 fields, or a V2/V3 card ({spec, data: {...}})."""
    if not isinstance(data, dict):
        raise CharacterError(f"a character must be a mapping of fields, got {type(data).__name__}")
    card = _card_of(data)
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
        card=card,
    )


def _card_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The Tavern card in `data`: a saved character's ``card``, or `data` itself when it is a card."""
    if "card" in data:
        if not isinstance(data["card"], dict):
            raise CharacterError(f"field 'card' must be a mapping, got {type(data['card']).__name__}")
        return data["card"]
    if isinstance(data.get("data"), dict) or any(key in data for key in _CARD_FIELDS):
        return data
    return None


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise CharacterError(f"field {key!r} must be text, got {type(value).__name__}")
    return str(value)


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
        check_picture(data, filename)
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
    """User characters as ``<key>.yaml`` plus an optional ``<key>.png`` in one folder.

    A character's *key* is its file name: what lists show, the UI keeps and chats are filed under. Saving
    derives it from the display name (`key`), so a card named ``/somewhere/CARD`` is stored as
    ``_somewhere_CARD``; looking a character up takes a key, and a key that is not a plain name is refused."""

    def __init__(self, user_data_dir: Path) -> None:
        self.folder = user_data_dir / "characters"

    def names(self) -> list[str]:
        """Saved character names, with the built-in Assistant first unless a user file overrides it."""
        names = {
            p.stem
            for p in self.folder.glob("*")
            if p.suffix.lower() in _DATA_SUFFIXES and is_plain_name(p.stem)
        }
        return ["Assistant", *sorted(names - {"Assistant"}, key=str.lower)]

    def load(self, name: str) -> Character:
        """Load by name; 'Assistant' falls back to the built-in persona when no user file exists."""
        for suffix in _DATA_SUFFIXES:
            path = path_inside(self.folder, name, suffix, what="character")
            if path.is_file():
                character = parse_character_file(path.read_bytes(), path.name)
                return self._with_picture(character, path)
        if check_name(name, "character") == "Assistant":
            return default_character()
        raise CharacterError(f"no character named {name!r}")

    def _with_picture(self, character: Character, data_path: Path) -> Character:
        for suffix in _PICTURE_SUFFIXES:
            picture = data_path.with_suffix(suffix)
            if picture.is_file():
                return replace(character, picture_path=picture)
        return character

    @staticmethod
    def key(name: str) -> str:
        """The key (file name) a character with this display name is saved under."""
        return safe_name(name, "Character")

    def save(self, character: Character) -> Path:
        """Write the YAML (and the picture bytes, if any) atomically; returns the YAML path (its stem is the key).

        The picture is checked for size first, so a refused picture leaves nothing written."""
        path = path_inside(self.folder, self.key(character.name), ".yaml", what="character")
        if character.picture:
            check_picture(character.picture)
        text = yaml.safe_dump(character.to_dict(), allow_unicode=True, sort_keys=False, width=1000)
        atomic_write_text(path, text)
        if character.picture:
            atomic_write_bytes(path.with_suffix(".png"), character.picture)
        return path

    def import_file(self, data: bytes, filename: str) -> Character:
        """Parse an uploaded YAML/JSON/PNG character and save it; returns it as saved."""
        character = parse_character_file(data, filename)
        return self.load(self.save(character).stem)

    def is_saved(self, name: str) -> bool:
        """Whether a user file holds this character (the built-in Assistant has none until edited)."""
        return any(path_inside(self.folder, name, s, what="character").is_file() for s in _DATA_SUFFIXES)

    def delete(self, name: str) -> None:
        """Remove a character's data and picture files; a missing character is an error, and so is the
        built-in Assistant (deleting a user's edited Assistant brings the built-in one back)."""
        if not self.is_saved(name) and check_name(name, "character") == "Assistant":
            raise CharacterError("the built-in Assistant cannot be deleted")
        removed = False
        for suffix in (*_DATA_SUFFIXES, *_PICTURE_SUFFIXES):
            path = path_inside(self.folder, name, suffix, what="character")
            if path.is_file():
                path.unlink()
                removed = True
        if not removed:
            raise CharacterError(f"no character named {name!r}")
