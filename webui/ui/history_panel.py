"""The Chat history sub-tab: save, load, upload and download the current chat (``ctx.history``).

Storage and format checks are `webui.prompts.history.HistoryStore`; chats are kept per character, so the
list follows ``ctx.character["character"]`` and is re-read on page load and whenever the open chat changes
(a chat saved, renamed or deleted in the Chat tab). Loading or uploading replaces ``ctx.history``, which
the Chat tab renders (an uploaded chat is opened there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from webui.errors import HearthError
from webui.prompts.history import HistoryStore
from webui.safe_files import path_inside, safe_name
from webui.ui.context import UIContext, chat_history


def _character(state: dict[str, Any]) -> str:
    return (state or {}).get("character") or "Assistant"


def _error(message: str) -> gr.Error:
    """A user's mistake (nothing chosen, a bad file): a toast, no traceback in the console."""
    return gr.Error(message, print_exception=False)


class HistoryPanel:
    def __init__(self, store: HistoryStore, export_dir: Path):
        self.store = store
        self.export_dir = export_dir

    def choices(self, state: dict[str, Any], value: str | None = None) -> Any:
        """The saved chats of the current character; `value` (else the newest) is selected."""
        chats = self.store.list_chats(_character(state))
        ids = [c.chat_id for c in chats]
        return gr.update(
            choices=[(f"{c.title} ({c.updated[:16]}, {c.turn_count} turns)", c.chat_id) for c in chats],
            value=value if value in ids else (ids[0] if ids else None),
        )

    def follow(self, history: dict[str, Any] | None, state: dict[str, Any]) -> Any:
        """The list after the open chat changed, the open chat selected when it is saved."""
        return self.choices(state, (history or {}).get("id"))

    def save(self, history: dict[str, Any] | None, state: dict[str, Any]) -> Any:
        current = chat_history(history, _character(state))
        if current is None or not current.turns:
            raise _error("there is no chat to save yet")
        try:
            self.store.save(current)
        except (HearthError, ValueError) as exc:
            raise _error(f"chat not saved: {exc}") from None
        gr.Info(f"Saved chat {current.display_title()}")
        return self.choices(state, current.chat_id)

    def load(self, chat_id: str | None, state: dict[str, Any]) -> dict[str, Any]:
        if not chat_id:
            raise _error("choose a chat to load")
        try:
            return self.store.load(_character(state), chat_id).to_dict()
        except (HearthError, ValueError) as exc:
            raise _error(str(exc)) from None

    def upload(self, file: str | None, state: dict[str, Any]) -> tuple[dict[str, Any] | Any, Any]:
        if not file:
            return gr.update(), gr.update()
        try:
            imported = self.store.import_chat(_character(state), Path(file).read_bytes())
        except (HearthError, ValueError) as exc:
            raise _error(f"{Path(file).name}: {exc}") from None
        gr.Info(f"Imported chat {imported.display_title()}")
        return imported.to_dict(), self.choices(state, imported.chat_id)

    def download(self, history: dict[str, Any] | None, state: dict[str, Any]) -> str:
        current = chat_history(history, _character(state))
        if current is None:
            raise _error("there is no chat to download yet")
        name = safe_name(f"{current.character}-{current.chat_id or 'chat'}", "chat")  # a name, never a path
        path = path_inside(self.export_dir, name, ".json")
        path.write_text(current.to_json(), encoding="utf-8")
        return str(path)


def build_history_panel(ctx: UIContext) -> None:
    export_dir = Path(tempfile.mkdtemp(prefix="hearth-chats-"))
    panel = HistoryPanel(HistoryStore(ctx.app.settings.user_data_dir), export_dir)
    with gr.Row():
        chats = gr.Dropdown(
            label="Saved chats of the current character", choices=[], elem_id="history-dropdown", scale=3
        )
        refresh = gr.Button("Refresh", scale=1, elem_id="history-refresh")
        load = gr.Button("Load", scale=1, elem_id="history-load")
        save = gr.Button("Save current chat", scale=1, elem_id="history-save")
    with gr.Row():
        upload = gr.File(
            label="Upload a chat (Hearth JSON or text-generation-webui JSON)",
            file_types=[".json"],
            type="filepath",
            elem_id="history-upload",
        )
        with gr.Column():
            download = gr.Button("Download current chat", elem_id="history-download")
            exported = gr.File(label="Exported chat", interactive=False, elem_id="history-file")
    # no triggers: on page load and whenever either state changes
    gr.on(None, panel.follow, [ctx.history, ctx.character], [chats], show_progress="hidden")
    refresh.click(panel.follow, [ctx.history, ctx.character], [chats])
    load.click(panel.load, [chats, ctx.character], [ctx.history])
    save.click(panel.save, [ctx.history, ctx.character], [chats])
    upload.upload(panel.upload, [upload, ctx.character], [ctx.history, chats])
    download.click(panel.download, [ctx.history, ctx.character], [exported])
