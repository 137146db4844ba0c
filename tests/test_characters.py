"""Characters: tgw YAML, Tavern JSON, PNG cards (V1, V2, V3) built here with Pillow; store and safe names;
a card's every field survives import, edit, save and export; the built-in Assistant cannot be deleted."""

from __future__ import annotations

import base64
import copy
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.errors import HearthError
from webui.prompts.characters import (
    Character,
    CharacterError,
    CharacterStore,
    character_from_dict,
    default_character,
    parse_character_file,
    parse_png_card,
    png_text_chunks,
)

V1_CARD = {
    "name": "Seraphina",
    "description": "A guardian of the forest.",
    "personality": "kind, protective",
    "scenario": "{{user}} wakes up in her glade.",
    "first_mes": "*Seraphina smiles* You're awake.",
    "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: The forest's keeper.",
}


def png_card(chunks: dict[str, str], compressed: bool = False) -> bytes:
    """A real 4x4 PNG with the given text chunks (zTXt when compressed), as SillyTavern writes cards."""
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=compressed)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 120, 40)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def b64json(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode("utf-8")).decode("ascii")


def test_v1_png_card_imports_all_fields() -> None:
    data = png_card({"chara": b64json(V1_CARD)})
    character = parse_png_card(data)
    assert character.name == "Seraphina"
    assert character.context == (
        "A guardian of the forest.\n{{char}}'s personality: kind, protective\nScenario: {{user}} wakes up in her glade."
    )
    assert character.greeting == "*Seraphina smiles* You're awake."
    assert character.example_dialogue.startswith("<START>\n{{user}}: Who are you?")
    assert character.picture == data
    assert Image.open(io.BytesIO(character.picture)).size == (4, 4)


def test_v2_png_card_reads_the_data_block() -> None:
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {**V1_CARD, "name": "Seraphina V2", "creator_notes": "ignored", "tags": ["fantasy"]},
    }
    character = parse_png_card(png_card({"chara": b64json(card)}, compressed=True))
    assert character.name == "Seraphina V2"
    assert character.greeting.startswith("*Seraphina smiles*")
    assert "kind, protective" in character.context


def test_v3_chunk_wins_over_chara() -> None:
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {**V1_CARD, "name": "Sera Three"}}
    data = png_card({"chara": b64json(V1_CARD), "ccv3": b64json(v3)})
    assert parse_png_card(data).name == "Sera Three"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a png at all", "not a PNG"),
        (png_card({"Comment": "hello"}), "no character card data"),
        (png_card({"chara": "%%%not base64%%%"}), "not base64-encoded JSON"),
        (png_card({"chara": base64.b64encode(b"[1, 2]").decode()}), "mapping"),
        (png_card({"chara": b64json({"name": {"nested": True}})}), "must be text"),
        (png_card({"chara": b64json(V1_CARD)})[:60], "truncated or corrupt"),
    ],
)
def test_corrupt_cards_raise_character_error(data: bytes, message: str) -> None:
    with pytest.raises(CharacterError, match=message) as info:
        parse_png_card(data)
    assert isinstance(info.value, HearthError)


def test_png_text_chunks_reads_itxt() -> None:
    info = PngInfo()
    info.add_itxt("note", "ünïcode", zip=True)
    buffer = io.BytesIO()
    Image.new("L", (2, 2)).save(buffer, format="PNG", pnginfo=info)
    assert png_text_chunks(buffer.getvalue())["note"] == "ünïcode"


def test_tgw_yaml_and_tavern_json_files() -> None:
    yaml_text = "name: Chiharu\ncontext: Chiharu is a tech enthusiast.\ngreeting: Hey!\nuser_name: Anon\n"
    character = parse_character_file(yaml_text.encode(), "Chiharu.yaml")
    assert character == Character("Chiharu", "Chiharu is a tech enthusiast.", "Hey!", user_name="Anon")
    tavern = parse_character_file(json.dumps(V1_CARD).encode(), "card.json")
    assert tavern.name == "Seraphina" and tavern.greeting.startswith("*Seraphina")
    unnamed = parse_character_file(b"context: no name here\n", "../../Nameless.yaml")
    assert unnamed.name == "Nameless"
    with pytest.raises(CharacterError, match="cannot parse"):
        parse_character_file(b"{not json", "x.json")


def test_store_save_load_list_delete(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path)
    assert store.names() == ["Assistant"]
    assert store.load("Assistant") == default_character()
    saved = store.import_file(png_card({"chara": b64json(V1_CARD)}), "Seraphina.png")
    assert saved.name == "Seraphina"
    assert saved.picture_path == tmp_path / "characters" / "Seraphina.png"
    assert (tmp_path / "characters" / "Seraphina.yaml").is_file()
    assert store.names() == ["Assistant", "Seraphina"]
    assert store.load("Seraphina").context == parse_png_card(png_card({"chara": b64json(V1_CARD)})).context
    store.delete("Seraphina")
    assert store.names() == ["Assistant"]
    assert not list((tmp_path / "characters").iterdir())
    with pytest.raises(CharacterError, match="no character named"):
        store.load("Seraphina")


def test_hostile_card_names_stay_in_the_characters_folder(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path)
    for hostile in ("../../evil", "..", "/etc/passwd", "a\\..\\b", "con", "x\x00y\nz", ".hidden"):
        path = store.save(Character(hostile, context="c"))
        assert path.parent == tmp_path / "characters"
        assert not path.name.startswith(".")
    assert not (tmp_path / "evil.yaml").exists()
    unicode = store.save(Character("Ёлка 雪"))
    assert unicode.name == "Ёлка 雪.yaml"
    assert store.load("Ёлка 雪").name == "Ёлка 雪"


#: A SillyTavern V2 card with every field of the spec, some Hearth does not use.
FULL_V2_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        **V1_CARD,
        "name": "Seraphina",
        "creator_notes": "Best with min_p.",
        "system_prompt": "You are {{char}}. Stay in character.",
        "post_history_instructions": "Reply in two paragraphs.",
        "alternate_greetings": ["*She waves.*", "Oh, hello."],
        "character_book": {
            "name": "Glade lore",
            "extensions": {},
            "entries": [
                {
                    "keys": ["glade"],
                    "content": "The glade is hidden.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 0,
                }
            ],
        },
        "tags": ["fantasy", "guardian"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "fav": False, "depth_prompt": {"prompt": "x", "depth": 4}},
    },
}


def test_v2_card_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path)
    imported = store.import_file(png_card({"chara": b64json(FULL_V2_CARD)}), "Seraphina.png")
    assert imported.card == FULL_V2_CARD
    saved_yaml = yaml.safe_load((tmp_path / "characters" / "Seraphina.yaml").read_text(encoding="utf-8"))
    assert saved_yaml["card"] == FULL_V2_CARD and saved_yaml["example_dialogue"] == imported.example_dialogue
    assert imported.to_card() == FULL_V2_CARD  # nothing edited: the card comes back as it came
    # edit what Hearth shows (example dialogue, greeting), save, load: the rest of the card is untouched
    edited = replace(imported, example_dialogue="<START>\n{{user}}: Hi\n{{char}}: Hello.", greeting="Welcome.")
    store.save(edited)
    again = store.load("Seraphina")
    assert again.example_dialogue == "<START>\n{{user}}: Hi\n{{char}}: Hello."
    expected = copy.deepcopy(FULL_V2_CARD)
    expected["data"].update(mes_example=again.example_dialogue, first_mes="Welcome.")
    assert again.to_card() == expected
    # an edited context becomes the description (it joined description, personality and scenario)
    card = replace(again, context="A tired guardian.").to_card()
    assert card["data"]["description"] == "A tired guardian." and card["data"]["personality"] == ""
    assert card["data"]["character_book"] == FULL_V2_CARD["data"]["character_book"]
    # the exported card imports back to the same character
    assert character_from_dict(card).context == "A tired guardian."


def test_v1_card_exports_as_v2_with_its_fields_and_tgw_yaml_has_no_card() -> None:
    v1 = {**V1_CARD, "chat": "Seraphina - 2023-1-1", "avatar": "none"}
    character = parse_character_file(json.dumps(v1).encode(), "card.json")
    card = character.to_card()
    assert card["spec"] == "chara_card_v2" and card["data"] == v1
    plain = parse_character_file(b"name: Ann\ncontext: Ann is kind.\n", "Ann.yaml")
    assert plain.card is None and "card" not in plain.to_dict()
    assert plain.to_card()["data"]["description"] == "Ann is kind."
    with pytest.raises(CharacterError, match="'card' must be a mapping"):
        parse_character_file(b"name: Ann\ncard: [1, 2]\n", "Ann.yaml")


def test_the_built_in_assistant_cannot_be_deleted(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path)
    with pytest.raises(CharacterError, match="built-in Assistant cannot be deleted"):
        store.delete("Assistant")
    store.save(Character("Assistant", context="My own assistant."))  # a user's edited Assistant
    assert store.is_saved("Assistant") and store.load("Assistant").context == "My own assistant."
    store.delete("Assistant")  # removes the user's copy: the built-in one is back
    assert store.load("Assistant") == default_character()
