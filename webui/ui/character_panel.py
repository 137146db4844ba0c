"""The Character sub-tab: choose, edit, upload (YAML/JSON/PNG card), save, export and delete characters.

Parsing and storage are `webui.prompts.characters.CharacterStore`; choosing a character sets
``ctx.character["character"]`` to its key, the file name (other keys of that state are kept: the Chat tab
owns the mode). Uploads are size-checked before they are read. The list is re-read on page load and by
Refresh, so characters saved since the server started are there; saving keeps every field of an imported
card (`Character.card`), and Delete asks first (the built-in Assistant cannot be deleted).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from webui.errors import HearthError
from webui.prompts.characters import Character, CharacterStore
from webui.prompts.png_card import check_upload_size
from webui.safe_files import path_inside
from webui.ui.confirm import ConfirmButton
from webui.ui.context import UIContext

FIELDS = ("name", "context", "greeting", "example_dialogue", "user_name", "picture")
_USER_NAME = FIELDS.index("user_name")


def _error(what: str, message: str) -> gr.Error:
    return gr.Error(f"{what}: {message}", print_exception=False)


def _root(block: Any) -> gr.Blocks:
    """The Blocks a component was built in (for its page-load event)."""
    while getattr(block, "parent", None) is not None:
        block = block.parent
    return block


def _key(state: dict[str, Any]) -> str:
    return (state or {}).get("character") or "Assistant"


class CharacterPanel:
    def __init__(self, store: CharacterStore, export_dir: Path | None = None):
        self.store = store
        self.export_dir = export_dir or Path(tempfile.mkdtemp(prefix="hearth-cards-"))

    def show(self, name: str | None) -> list[Any]:
        """Field values for a character, in `FIELDS` order."""
        try:
            character = self.store.load(name or "Assistant")
        except HearthError as exc:
            raise _error("character", str(exc)) from None
        picture = str(character.picture_path) if character.picture_path else None
        return [
            character.name,
            character.context,
            character.greeting,
            character.example_dialogue,
            character.user_name or "",
            picture,
        ]

    def select(self, name: str | None, state: dict[str, Any]) -> list[Any]:
        return self._chosen(name or "Assistant", state)

    def _chosen(self, key: str, state: dict[str, Any]) -> list[Any]:
        """Field values and the new ``ctx.character`` for a chosen character: a card that names the user
        clears the name typed before (the card's is used); otherwise the typed name stays."""
        values = self.show(key)
        user_name = None if values[_USER_NAME] else state.get("user_name")
        values[_USER_NAME] = values[_USER_NAME] or user_name or ""
        return [*values, {**state, "character": key, "user_name": user_name}]

    def _choices(self, value: str | None) -> Any:
        return gr.update(choices=self.store.names(), value=value)

    def on_load(self, state: dict[str, Any]) -> list[Any]:
        """The list and the chosen character's fields as they are on disk now (page load)."""
        key = _key(state)
        if key not in self.store.names():  # deleted meanwhile (another tab, another browser)
            return [self._choices("Assistant"), *self._chosen("Assistant", state)]
        values = self.show(key)
        values[_USER_NAME] = state.get("user_name") or values[_USER_NAME]
        return [self._choices(key), *values, gr.skip()]

    def refresh(self, state: dict[str, Any]) -> list[Any]:
        """Re-read the list; the fields (maybe being edited) stay unless their character is gone."""
        key = _key(state)
        if key in self.store.names():
            return [self._choices(key), *[gr.skip()] * len(FIELDS), gr.skip()]
        return [self._choices("Assistant"), *self._chosen("Assistant", state)]

    def upload(self, file: str | None, state: dict[str, Any]) -> list[Any]:
        if not file:
            return [gr.skip(), *[gr.skip()] * len(FIELDS), gr.skip()]
        path = Path(file)
        try:
            check_upload_size(path)
            character = self.store.import_file(path.read_bytes(), path.name)
        except HearthError as exc:
            raise _error(path.name, str(exc)) from None
        key = self.store.key(character.name)  # the file name: what the list and the chats use
        gr.Info(f"Imported character {character.name}")
        return [self._choices(key), *self._chosen(key, state)]

    def _from_fields(self, values: tuple[Any, ...], state: dict[str, Any], picture_bytes: bool) -> Character:
        """The character the fields describe, keeping the card of the one being edited (its other fields)."""
        name, context, greeting, example_dialogue, user_name, picture = values
        if not (name or "").strip():
            raise _error("Character's name", "a character needs a name")
        try:
            card = self.store.load(_key(state)).card
        except HearthError:
            card = None
        data = check_upload_size(Path(picture)).read_bytes() if picture and picture_bytes else None
        return Character(
            name.strip(),
            context or "",
            greeting or "",
            example_dialogue=(example_dialogue or "").strip(),
            user_name=(user_name or "").strip() or None,
            picture=data,
            card=card,
        )

    def save(self, *values: Any) -> list[Any]:
        *fields, state = values
        try:
            character = self._from_fields(tuple(fields), state, picture_bytes=True)
            key = self.store.save(character).stem
        except (HearthError, ValueError) as exc:
            raise _error("character not saved", str(exc)) from None
        gr.Info(f"Saved character {character.name}")
        return [self._choices(key), {**state, "character": key}]

    def export(self, *values: Any) -> str:
        """The character as shown (unsaved edits included) as a SillyTavern V2 card JSON file."""
        *fields, state = values
        try:
            character = self._from_fields(tuple(fields), state, picture_bytes=False)
            path = path_inside(self.export_dir, self.store.key(character.name), ".json")
        except (HearthError, ValueError) as exc:
            raise _error("character not exported", str(exc)) from None
        path.write_text(json.dumps(character.to_card(), ensure_ascii=False, indent=2), encoding="utf-8")
        return str(path)

    def check_delete(self, name: str | None) -> str:
        """What Delete will remove once confirmed; the built-in Assistant is refused here."""
        try:
            if not name or not self.store.is_saved(name):
                if (name or "Assistant") == "Assistant":
                    raise _error("Character", "the built-in Assistant cannot be deleted")
                raise _error("Character", f"no character named {name!r}")
        except HearthError as exc:
            raise _error("Character", str(exc)) from None
        return name

    def delete(self, name: str, state: dict[str, Any]) -> list[Any]:
        try:
            self.store.delete(name)
        except (HearthError, ValueError) as exc:
            raise _error("Character", str(exc)) from None
        gr.Info("Restored the built-in Assistant" if name == "Assistant" else f"Deleted character {name}")
        return [self._choices("Assistant"), *self._chosen("Assistant", state)]


def build_character_panel(ctx: UIContext) -> None:
    panel = CharacterPanel(CharacterStore(ctx.app.settings.user_data_dir))
    current = ctx.character.value.get("character") or "Assistant"
    names = panel.store.names()
    first = panel.show(current if current in names else "Assistant")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                select = gr.Dropdown(
                    label="Character", choices=names, value=first[0], elem_id="character-dropdown", scale=3
                )
                refresh = gr.Button("Refresh", scale=1, size="sm", elem_id="character-refresh")
                save = gr.Button("Save", scale=1, elem_id="character-save")
                delete = ConfirmButton("Delete", "character-delete")
            name = gr.Textbox(label="Character's name", value=first[0], elem_id="character-name")
            context = gr.Textbox(label="Context", value=first[1], lines=8, elem_id="character-context")
            greeting = gr.Textbox(label="Greeting", value=first[2], lines=3, elem_id="character-greeting")
            example_dialogue = gr.Textbox(
                label="Example dialogue",
                value=first[3],
                lines=5,
                info="Sample exchanges ({{user}}: ... / {{char}}: ...) placed after the context.",
                elem_id="character-example-dialogue",
            )
            user_name = gr.Textbox(
                label="Your name",
                value=ctx.character.value.get("user_name") or first[4],
                placeholder="You",
                elem_id="character-user-name",
            )
        with gr.Column(scale=1):
            picture = gr.Image(label="Picture", type="filepath", value=first[5], elem_id="character-picture")
            upload = gr.File(
                label="Upload a character (YAML, JSON or a TavernAI/SillyTavern PNG card)",
                file_types=[".yaml", ".yml", ".json", ".png"],
                type="filepath",
                elem_id="character-upload",
            )
            export = gr.Button("Export as card (JSON)", elem_id="character-export")
            exported = gr.File(label="Exported card", interactive=False, elem_id="character-file")
    fields = [name, context, greeting, example_dialogue, user_name, picture]
    shown = [select, *fields, ctx.character]
    # page load only: gr.on without triggers would also run on every change of ctx.character (a mode
    # switch, each key typed in "Your name") and overwrite the fields being edited
    _root(select).load(panel.on_load, [ctx.character], shown, show_progress="hidden")
    refresh.click(panel.refresh, [ctx.character], shown, show_progress="hidden")
    select.input(panel.select, [select, ctx.character], [*fields, ctx.character])
    upload.upload(panel.upload, [upload, ctx.character], shown)
    save.click(panel.save, [*fields, ctx.character], [select, ctx.character])
    export.click(panel.export, [*fields, ctx.character], [exported])
    delete.wire(panel.check_delete, [select], panel.delete, shown, [ctx.character], cancel_on=[select.input])
    user_name.input(
        lambda text, state: {**state, "user_name": text.strip() or None},
        [user_name, ctx.character],
        ctx.character,
        show_progress="hidden",
        trigger_mode="always_last",  # every keystroke's state, in order: the last one wins
        queue=False,
    )
