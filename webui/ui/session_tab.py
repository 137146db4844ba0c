"""The Session tab: which extensions are enabled, light/dark, and saving the UI's state to settings.yaml.

Saved settings are read back by `webui.config.parse_settings` on the next start: known `Settings` fields
at the top level, UI state under ``theme``, ``generation``, ``sampling`` and ``chat`` (kept in
``Settings.extra``, which `default_params` / `default_character_state` start from).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from webui.app import App
from webui.config import ROOT, Settings
from webui.prompts.safe_files import atomic_write_text
from webui.sampling import SamplingParams
from webui.ui import is_dark
from webui.ui.context import UIContext
from webui.ui.extensions_ui import build_extensions_settings

#: Settings that describe this run or this machine rather than a preference worth saving, secrets, and
#: risks accepted for one run only (anyone who can click "save" must not make them permanent).
_NOT_SAVED = {
    "settings_file",
    "model",
    "loader",
    "extra",
    "loader_args",
    "api_key",
    "admin_key",
    "gradio_auth",
    "allow_unauthenticated",
}
#: Loader arguments that stay flags of the run: models running their own code need --trust-remote-code.
_LOADER_ARGS_NOT_SAVED = {"trust_remote_code"}
TOGGLE_JS = "(theme) => { document.body.classList.toggle('dark', theme === 'dark'); return theme; }"


def settings_document(
    settings: Settings, params: dict[str, Any], character: dict[str, Any], theme: str
) -> dict[str, Any]:
    """What settings.yaml gets: non-default settings plus the UI state (samplers only where not neutral)."""
    defaults = Settings()
    doc: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in _NOT_SAVED or value == getattr(defaults, f.name):
            continue
        doc[f.name] = str(value) if isinstance(value, Path) else value
    loader_args = {k: v for k, v in settings.loader_args.items() if k not in _LOADER_ARGS_NOT_SAVED}
    if loader_args:
        doc["loader_args"] = loader_args
    doc.update(
        {k: v for k, v in settings.extra.items() if k not in ("theme", "generation", "sampling", "chat")}
    )
    doc["theme"] = theme
    doc["generation"] = {k: v for k, v in params.items() if k != "sampling"}
    doc["sampling"] = SamplingParams.model_validate(params.get("sampling") or {}).non_neutral()
    doc["chat"] = dict(character)
    return doc


def save_settings_file(app: App, params: dict[str, Any], character: dict[str, Any], theme: str) -> Path:
    path = app.settings.settings_file or ROOT / "settings.yaml"
    doc = settings_document(app.settings, params, character, theme)
    atomic_write_text(path, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    app.settings.extra.update({k: doc[k] for k in ("theme", "generation", "sampling", "chat")})
    return path


def build_session_tab(ctx: UIContext) -> None:
    app = ctx.app
    with gr.Row():
        with gr.Column():
            build_extensions_settings(ctx)
        with gr.Column():
            theme = gr.Radio(
                ["light", "dark"],
                value="dark" if is_dark(app) else "light",
                label="Theme",
                elem_id="session-theme",
            )
            save = gr.Button("Save UI settings to settings.yaml", variant="primary", elem_id="session-save")
            saved = gr.Markdown(elem_id="session-saved")

    def save_all(params: dict[str, Any], character: dict[str, Any], chosen: str) -> str:
        try:
            path = save_settings_file(app, params, character, chosen)
        except (OSError, ValueError) as exc:
            raise gr.Error(f"settings not saved: {exc}") from None
        return f"Saved to `{path}`."

    theme.change(None, [theme], [theme], js=TOGGLE_JS)
    save.click(save_all, [ctx.params, ctx.character, theme], [saved])
