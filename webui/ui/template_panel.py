"""The Instruction template sub-tab: pick a template (or the model's own), read/edit its Jinja text,
and send a rendered example prompt to the Default or Notebook tab through ``ctx.prompt_transfer``.

Choosing a template sets ``ctx.character["instruction_template"]`` (None = detect from the loaded model).
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from webui.app import App
from webui.loader_api import HearthError
from webui.prompts.templates import MODEL_TEMPLATE_NAME, check_template, list_templates, render
from webui.ui.context import UIContext

AUTO = "Auto (detect from the model)"
EXAMPLE = [{"role": "user", "content": "Write a haiku about the sea."}]


def template_text(app: App, name: str | None) -> str:
    """The Jinja text of a named template, or of what auto-detection picks for the loaded model."""
    from webui.session import ChatService

    return ChatService(app).template(None if name in (None, AUTO) else name).text


def _initial_text(app: App, name: str | None) -> str:
    try:
        return template_text(app, name)
    except HearthError as exc:  # e.g. "Model's own" saved while no model is loaded
        return f"{{# {exc} #}}"


def example_prompt(text: str) -> str:
    """The template rendered for one user message, ready to continue (what gets sent to a prompt box)."""
    check_template(text)
    return render(text, EXAMPLE, add_generation_prompt=True)


def build_template_tab(ctx: UIContext) -> None:
    app = ctx.app
    choices = [AUTO, MODEL_TEMPLATE_NAME, *list_templates(app.settings.templates_dir)]

    def show(name: str | None, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            text = template_text(app, name)
        except HearthError as exc:
            raise gr.Error(str(exc)) from None
        return text, {**state, "instruction_template": None if name == AUTO else name}

    def send(text: str, target: str) -> dict[str, Any]:
        try:
            prompt = example_prompt(text)
        except HearthError as exc:
            raise gr.Error(f"template: {exc}") from None
        gr.Info(f"Sent to the {target.title()} tab")
        return {"target": target, "text": prompt, "nonce": time.monotonic_ns()}

    current = ctx.character.value.get("instruction_template") or AUTO
    with gr.Row():
        select = gr.Dropdown(
            label="Instruction template", choices=choices, value=current, elem_id="template-dropdown", scale=3
        )
        to_default = gr.Button("Send to Default", scale=1, elem_id="template-to-default")
        to_notebook = gr.Button("Send to Notebook", scale=1, elem_id="template-to-notebook")
    text = gr.Code(
        label="Jinja template",
        language="jinja2",
        value=lambda: _initial_text(app, current),
        interactive=True,
        elem_id="template-text",
    )
    gr.Markdown("Edits here are used by *Send to*; save them as `templates/<name>.jinja` to keep them.")
    select.input(show, [select, ctx.character], [text, ctx.character])
    to_default.click(lambda t: send(t, "default"), [text], ctx.prompt_transfer)
    to_notebook.click(lambda t: send(t, "notebook"), [text], ctx.prompt_transfer)
