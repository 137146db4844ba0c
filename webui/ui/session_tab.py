"""The Session tab: which extensions are enabled, light/dark, and saving the UI's state.

"Save UI settings" writes UI state only (`webui.config.UI_STATE_KEYS`: ``theme``, ``generation``,
``sampling``, ``chat``, ``extensions``, ``extension_params``) to `Settings.settings_path`
(user_data/settings.yaml unless --settings names another file), keeping the other keys a person wrote in
that file. Flags of this run (ports, --listen, --api, keys, folders, model, loader parameters) are never
written: a one-off flag stays one-off. `webui.config.parse_settings` reads the file back on the next start
into ``Settings.extra`` / ``Settings.extensions``, which `default_params` / `default_character_state` and
the extension manager start from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from webui.app import App
from webui.config import ConfigError, read_settings_file
from webui.extensions import PARAMS_KEY
from webui.safe_files import atomic_write_text
from webui.sampling import SamplingParams
from webui.ui.context import UIContext
from webui.ui.extensions_ui import build_extensions_settings

TOGGLE_JS = "(theme) => { document.body.classList.toggle('dark', theme === 'dark'); return theme; }"


def is_dark(app: App) -> bool:
    """Whether the saved theme is dark (applied on page load)."""
    return str(app.settings.extra.get("theme", "light")).lower() == "dark"


def ui_state(app: App, params: dict[str, Any], character: dict[str, Any], theme: str) -> dict[str, Any]:
    """The UI state worth keeping (samplers only where not neutral), under `UI_STATE_KEYS`."""
    state: dict[str, Any] = {
        "theme": theme,
        "generation": {k: v for k, v in params.items() if k != "sampling"},
        "sampling": SamplingParams.model_validate(params.get("sampling") or {}).non_neutral(),
        "chat": dict(character),
    }
    if app.extensions is not None:
        app.extensions.store_settings()  # the enabled list and changed params, as last applied
        state["extensions"] = list(app.settings.extensions)
        state[PARAMS_KEY] = app.settings.extra.get(PARAMS_KEY) or {}
    return state


def save_ui_settings(app: App, params: dict[str, Any], character: dict[str, Any], theme: str) -> Path:
    """Write the UI state into the settings file, keeping the file's other keys (flags a person wrote
    there); raises ConfigError when the file exists but is not a readable mapping (it is then untouched)."""
    path = app.settings.settings_path
    state = ui_state(app, params, character, theme)
    doc = read_settings_file(path) if path.is_file() else {}
    doc.update(state)
    atomic_write_text(path, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    app.settings.extra.update({k: state[k] for k in ("theme", "generation", "sampling", "chat")})
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
            save = gr.Button("Save UI settings", variant="primary", elem_id="session-save")
            gr.Markdown(
                f"Saves the theme, generation and sampler values, chat options and the applied extensions to "
                f"`{app.settings.settings_path}`, read at the next start. Command-line flags are not saved: "
                "put flags for every start in `CMD_FLAGS.txt`.",
                elem_classes="hearth-keys",
            )
            saved = gr.Markdown(elem_id="session-saved")

    def save_all(params: dict[str, Any], character: dict[str, Any], chosen: str) -> str:
        try:
            path = save_ui_settings(app, params, character, chosen)
        except (ConfigError, OSError, ValueError) as exc:
            raise gr.Error(f"UI settings not saved: {exc}", print_exception=False) from None
        return f"Saved to `{path}`."

    theme.change(None, [theme], [theme], js=TOGGLE_JS)
    save.click(save_all, [ctx.params, ctx.character, theme], [saved])
