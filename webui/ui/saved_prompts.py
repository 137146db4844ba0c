"""Saved prompts in the Default and Notebook tabs: pick one to load it, Save as, and Delete with a
confirmation step, over `webui.prompts.prompt_store.PromptStore` (user_data/prompts/<name>.txt, one folder for
both tabs).

The list is read from the folder when the page loads, when the tab is selected and after each change, so
a prompt saved in one tab (or another browser) is offered in the other without a restart.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.prompts.prompt_store import PromptStore
from webui.ui.confirm import ConfirmButton
from webui.ui.streaming import toasts
from webui.ui.textviews import refresh_when_shown


class SavedPrompts:
    """The panel's handlers over one store."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store

    def choices(self, current: str | None = None) -> Any:
        """The list re-read; `current` stays selected while it exists."""
        names = self.store.names()
        return gr.update(choices=names, value=current if current in names else None)

    def load(self, chosen: str | None) -> tuple[Any, Any]:
        """(prompt text, Save-as name) for the picked prompt."""
        if not chosen:
            return gr.skip(), gr.skip()
        with toasts():
            return self.store.load(chosen), chosen

    def save(self, label: str, text: str) -> Any:
        existed = label.strip() in self.store.names()
        with toasts():
            saved_as = self.store.save(label, text)
        gr.Info(f"Saved prompt {saved_as!r}" + (" (its previous text replaced)" if existed else ""))
        return self.choices(saved_as)

    def check_delete(self, chosen: str | None) -> str:
        """What Delete would remove (asked to confirm), or a toast saying why nothing can be."""
        if not chosen:
            raise gr.Error("Saved prompt: choose the prompt to delete first", print_exception=False)
        if chosen not in self.store.names():
            raise gr.Error(f"Saved prompt: {chosen!r} is no longer saved", print_exception=False)
        return chosen

    def delete(self, chosen: str) -> Any:
        with toasts():
            self.store.delete(chosen)
        gr.Info(f"Deleted prompt {chosen!r}")
        return self.choices(None)


def build_saved_prompts(store: PromptStore, name: str, box: gr.Textbox) -> None:
    """The accordion under a prompt box; loading a prompt replaces `box`'s text, saving stores it."""
    panel = SavedPrompts(store)
    with gr.Accordion("Saved prompts", open=False, elem_id=f"{name}-saved-prompts"):
        with gr.Row():
            saved = gr.Dropdown(
                store.names(), label="Saved prompt", value=None, elem_id=f"{name}-saved", scale=3
            )
            delete = ConfirmButton("Delete", f"{name}-delete")
        with gr.Row():
            label = gr.Textbox(label="Save as", placeholder="name", scale=3, elem_id=f"{name}-save-name")
            save = gr.Button("Save", scale=1, elem_id=f"{name}-save")
    saved.input(panel.load, saved, [box, label])
    save.click(panel.save, [label, box], saved)
    delete.wire(panel.check_delete, [saved], panel.delete, [saved], cancel_on=[saved.input])
    refresh_when_shown(saved, panel.choices, [saved], [saved])
