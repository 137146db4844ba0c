"""The Character sub-tab: choose, edit, upload (YAML/JSON/PNG card), save and delete characters.

Parsing and storage are `webui.prompts.characters.CharacterStore`; choosing a character sets
``ctx.character["character"]`` to its key, the file name (other keys of that state are kept: the Chat tab
owns the mode). Uploads are size-checked before they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from webui.loader_api import HearthError
from webui.prompts.characters import Character, CharacterStore
from webui.prompts.png_card import check_upload_size
from webui.ui.context import UIContext

FIELDS = ("name", "context", "greeting", "user_name", "picture")


class CharacterPanel:
    def __init__(self, store: CharacterStore):
        self.store = store

    def show(self, name: str | None) -> list[Any]:
        """Field values for a character (name, context, greeting, your name, picture)."""
        try:
            character = self.store.load(name or "Assistant")
        except HearthError as exc:
            raise gr.Error(str(exc)) from None
        picture = str(character.picture_path) if character.picture_path else None
        return [character.name, character.context, character.greeting, character.user_name or "", picture]

    def select(self, name: str | None, state: dict[str, Any]) -> list[Any]:
        return self._chosen(name or "Assistant", state)

    def _chosen(self, key: str, state: dict[str, Any]) -> list[Any]:
        """Field values and the new ``ctx.character`` for a chosen character: a card that names the user
        clears the name typed before (the card's is used); otherwise the typed name stays."""
        values = self.show(key)
        user_name = None if values[3] else state.get("user_name")
        values[3] = values[3] or user_name or ""
        return [*values, {**state, "character": key, "user_name": user_name}]

    def _choices(self, value: str | None) -> Any:
        return gr.update(choices=self.store.names(), value=value)

    def upload(self, file: str | None, state: dict[str, Any]) -> list[Any]:
        if not file:
            return [gr.update(), *[gr.update()] * len(FIELDS), state]
        path = Path(file)
        try:
            check_upload_size(path)
            character = self.store.import_file(path.read_bytes(), path.name)
        except HearthError as exc:
            raise gr.Error(f"{path.name}: {exc}") from None
        key = self.store.key(character.name)  # the file name: what the list and the chats use
        gr.Info(f"Imported character {character.name}")
        return [self._choices(key), *self._chosen(key, state)]

    def save(
        self,
        name: str,
        context: str,
        greeting: str,
        user_name: str,
        picture: str | None,
        state: dict[str, Any],
    ) -> list[Any]:
        if not name.strip():
            raise gr.Error("name: a character needs a name")
        try:
            data = check_upload_size(Path(picture)).read_bytes() if picture else None
            character = Character(
                name.strip(), context, greeting, user_name=user_name.strip() or None, picture=data
            )
            key = self.store.save(character).stem
        except (HearthError, ValueError) as exc:
            raise gr.Error(f"character not saved: {exc}") from None
        gr.Info(f"Saved character {character.name}")
        return [self._choices(key), {**state, "character": key}]

    def delete(self, name: str | None, state: dict[str, Any]) -> list[Any]:
        try:
            self.store.delete(name or "")
        except (HearthError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Deleted character {name}")
        return [self._choices("Assistant"), *self._chosen("Assistant", state)]


def build_character_tab(ctx: UIContext) -> None:
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
                save = gr.Button("Save", scale=1, elem_id="character-save")
                delete = gr.Button("Delete", scale=1, variant="stop", elem_id="character-delete")
            name = gr.Textbox(label="Character's name", value=first[0], elem_id="character-name")
            context = gr.Textbox(label="Context", value=first[1], lines=8, elem_id="character-context")
            greeting = gr.Textbox(label="Greeting", value=first[2], lines=3, elem_id="character-greeting")
            user_name = gr.Textbox(
                label="Your name",
                value=ctx.character.value.get("user_name") or first[3],
                placeholder="You",
                elem_id="character-user-name",
            )
        with gr.Column(scale=1):
            picture = gr.Image(label="Picture", type="filepath", value=first[4], elem_id="character-picture")
            upload = gr.File(
                label="Upload a character (YAML, JSON or a TavernAI/SillyTavern PNG card)",
                file_types=[".yaml", ".yml", ".json", ".png"],
                type="filepath",
                elem_id="character-upload",
            )
    fields = [name, context, greeting, user_name, picture]
    select.input(panel.select, [select, ctx.character], [*fields, ctx.character])
    upload.upload(panel.upload, [upload, ctx.character], [select, *fields, ctx.character])
    save.click(panel.save, [*fields, ctx.character], [select, ctx.character])
    delete.click(panel.delete, [select, ctx.character], [select, *fields, ctx.character])
    user_name.input(
        lambda text, state: {**state, "user_name": text.strip() or None},
        [user_name, ctx.character],
        ctx.character,
        show_progress="hidden",
    )
