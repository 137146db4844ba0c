"""The Model tab's "Loaded models" panel: every model in memory (the UI's and those the API loaded by name,
`webui.model_pool`) with its loader, estimated memory, requests and idle time; "Use in UI" points the UI at
one without reloading it, "Unload" frees one (waiting for its requests, or cancelling them when ticked).
Hearth's own fixed cost (the process's memory before any model) is shown apart from the models' estimates.

The panel is re-read by its Refresh button and after every load, unload or switch made from this tab.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.app import App
from webui.errors import HearthError
from webui.model_budget import gib


def _idle(seconds: float) -> str:
    if seconds < 60:
        return "in use" if seconds == 0 else f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def loaded_html(app: App) -> str:
    """The table of loaded models, the UI's marked, then Hearth's fixed cost and why the UI has no model."""
    rows = app.pool.snapshot()
    body = "".join(
        f'<tr data-model="{html.escape(r["name"])}"><td>{html.escape(r["name"])}{" <b>(UI)</b>" if r["ui"] else ""}</td>'
        f"<td>{html.escape(r['loader'] or '')}</td><td>{gib(r['estimate'].total)}</td>"
        f"<td>{r['requests']}</td><td>{_idle(r['idle_s'])}</td></tr>"
        for r in rows
    )
    table = (
        "<table><thead><tr><th>Model</th><th>Loader</th><th>Estimated memory</th><th>Requests</th><th>Idle</th>"
        f"</tr></thead><tbody>{body}</tbody></table>"
        if rows
        else "<p>No model is loaded.</p>"
    )
    note = f'<p class="hearth-ui-note">{html.escape(app.pool.ui_note)}</p>' if app.pool.ui_note else ""
    fixed = (
        f'<p id="hearth-fixed-cost">Hearth itself (Python and its libraries, before any model): '
        f"{gib(app.base_rss)} of RAM, not part of the estimates above.</p>"
    )
    return f'<div id="loaded-models-table">{table}{note}{fixed}</div>'


@dataclass
class LoadedModels:
    app: App
    table: Any = None
    choice: Any = None
    #: The click events of "Use in UI" and "Unload", for the Model tab to chain its status after.
    use_event: Any = None
    unload_event: Any = None

    def refresh(self, current: str | None = None) -> tuple[str, Any]:
        names = self.app.pool.loaded_names()
        return loaded_html(self.app), gr.update(choices=names, value=current if current in names else None)

    def use(self, name: str | None) -> tuple[str, Any]:
        if not name:
            raise gr.Error("choose a loaded model first", print_exception=False)
        try:
            self.app.pool.use_in_ui(name)
        except HearthError as exc:
            raise gr.Error(f"{name}: {exc}", print_exception=False) from None
        return self.refresh(name)

    def unload(self, name: str | None, cancel: bool) -> tuple[str, Any]:
        if not name:
            raise gr.Error("choose a loaded model first", print_exception=False)
        self.app.pool.unload(name, cancel=cancel)
        return self.refresh(None)


def build_loaded_models(app: App) -> LoadedModels:
    panel = LoadedModels(app)
    with gr.Accordion("Loaded models", open=True, elem_id="loaded-models"):
        panel.table = gr.HTML(lambda: loaded_html(app), elem_id="loaded-models-html")
        with gr.Row():
            panel.choice = gr.Dropdown(
                label="Loaded model",
                choices=app.pool.loaded_names(),
                value=None,
                elem_id="loaded-models-choice",
                scale=3,
            )
            cancel = gr.Checkbox(
                label="cancel its running requests", value=False, elem_id="loaded-models-cancel"
            )
        with gr.Row():
            use = gr.Button("Use in UI", size="sm", elem_id="loaded-models-use")
            unload = gr.Button("Unload", size="sm", elem_id="loaded-models-unload")
            refresh = gr.Button("Refresh", size="sm", elem_id="loaded-models-refresh")
    panel.use_event = use.click(panel.use, [panel.choice], [panel.table, panel.choice])
    panel.unload_event = unload.click(panel.unload, [panel.choice, cancel], [panel.table, panel.choice])
    refresh.click(panel.refresh, [panel.choice], [panel.table, panel.choice])
    return panel
