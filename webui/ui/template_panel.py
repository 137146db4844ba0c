"""The Instruction template sub-tab: pick a template (or the model's own), edit its Jinja text for the chat,
save it as a user template, and send a rendered example prompt to the Default or Notebook tab through
``ctx.prompt_transfer``.

Choosing a template sets ``ctx.character["instruction_template"]`` (None = detect from the loaded model).
Edits that compile go to ``ctx.character["instruction_template_text"]`` as they are typed, so the chat uses
them at once; a template that does not compile is one toast when the box is left, and the chat keeps the
last good one. Saved templates go to ``user_data/templates/`` (`TemplateLibrary`), never over a shipped one.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from webui.app import App
from webui.chat_service import ChatService
from webui.errors import HearthError
from webui.prompts.templates import MODEL_TEMPLATE_NAME, TemplateError, check_template, render
from webui.ui.context import UIContext, enclosing_tabs

AUTO = "Auto (detect from the model)"
EXAMPLE = [{"role": "user", "content": "Write a haiku about the sea."}]


def _service(app: App) -> Any:
    return ChatService(app)


def template_text(app: App, name: str | None) -> str:
    """The Jinja text of a named template, or of what auto-detection picks for the loaded model."""
    return _service(app).template(None if name in (None, AUTO) else name).text


def template_choices(app: App) -> list[str]:
    """The dropdown's choices, read from disk each time (shipped and user templates)."""
    return [AUTO, MODEL_TEMPLATE_NAME, *_service(app).templates.names()]


def _initial_text(app: App, name: str | None) -> str:
    try:
        return template_text(app, name)
    except HearthError as exc:  # e.g. "Model's own" saved while no model is loaded
        return f"{{# {exc} #}}"


def shown_text(app: App, state: dict[str, Any]) -> str:
    """What the Jinja box shows for a state: the edited text, else the chosen template's."""
    return state.get("instruction_template_text") or _initial_text(app, state.get("instruction_template"))


def edited_state(app: App, text: str, name: str | None, state: dict[str, Any]) -> dict[str, Any] | None:
    """The state after typing `text` in the Jinja box: the edit when it compiles (None again when it is the
    chosen template's own text); None (leave the state as it is) when it does not compile."""
    try:
        check_template(text, "edited template")
    except TemplateError:
        return None
    try:
        unchanged = text == template_text(app, name)
    except HearthError:
        unchanged = False
    return {**state, "instruction_template_text": None if unchanged or not text.strip() else text}


def example_prompt(text: str) -> str:
    """The template rendered for one user message, ready to continue (what gets sent to a prompt box)."""
    check_template(text)
    return render(text, EXAMPLE, add_generation_prompt=True)


def build_template_panel(ctx: UIContext) -> None:
    app = ctx.app

    def show(name: str | None, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            text = template_text(app, name)
        except HearthError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return text, {
            **state,
            "instruction_template": None if name == AUTO else name,
            "instruction_template_text": None,
        }

    def edit(text: str, name: str | None, state: dict[str, Any]) -> Any:
        new = edited_state(app, text, name, state)
        return gr.skip() if new is None or new == state else new

    def check(text: str) -> None:
        try:
            check_template(text, "edited template")
        except TemplateError as exc:
            raise gr.Error(
                f"Instruction template: {exc}; the chat keeps the last good one", print_exception=False
            ) from None

    def save(name: str, text: str, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        try:
            path, replaced = _service(app).templates.save(name, text)
        except HearthError as exc:
            raise gr.Error(f"Save as template: {exc}", print_exception=False) from None
        gr.Info(f"{'Replaced' if replaced else 'Saved'} template {path.stem!r} in {path.parent}")
        state = {**state, "instruction_template": path.stem, "instruction_template_text": None}
        return gr.Dropdown(choices=template_choices(app), value=path.stem), state

    def refresh_list(state: dict[str, Any]) -> Any:
        return gr.Dropdown(choices=template_choices(app), value=state.get("instruction_template") or AUTO)

    def on_show(state: dict[str, Any], text: str) -> tuple[Any, Any]:
        """On showing the tab: the list again, and the chosen template's text (the model may have changed)
        unless the box holds an edit (kept in the state) or a half-typed one that does not compile yet."""
        if state.get("instruction_template_text") is not None:
            return refresh_list(state), gr.skip()
        try:
            check_template(text, "edited template")
        except TemplateError:
            return refresh_list(state), gr.skip()
        return refresh_list(state), _initial_text(app, state.get("instruction_template"))

    current = ctx.character.value
    with gr.Row():
        select = gr.Dropdown(
            label="Instruction template",
            choices=template_choices(app),
            value=current.get("instruction_template") or AUTO,
            elem_id="template-dropdown",
            scale=3,
        )
        to_default = gr.Button("Send to Default", scale=1, elem_id="template-to-default")
        to_notebook = gr.Button("Send to Notebook", scale=1, elem_id="template-to-notebook")
    text = gr.Code(
        label="Jinja template",
        language="jinja2",
        value=lambda: shown_text(app, current),
        interactive=True,
        elem_id="template-text",
    )
    with gr.Row():
        name = gr.Textbox(
            label="Template name", placeholder="My template", scale=3, elem_id="template-save-name"
        )
        save_button = gr.Button("Save as template", scale=1, elem_id="template-save")
    gr.Markdown(
        "Edits here are used by the chat at once (one that does not compile is not: the chat keeps the last good "
        "template). *Save as template* keeps them in `user_data/templates/`."
    )
    select.input(show, [select, ctx.character], [text, ctx.character])
    # off the queue and always_last, as the chat options (see webui.ui.chat_options_panel)
    text.input(
        edit,
        [text, select, ctx.character],
        ctx.character,
        trigger_mode="always_last",
        queue=False,
        show_progress="hidden",
    )
    text.blur(check, [text], None, show_progress="hidden")
    save_button.click(save, [name, text, ctx.character], [select, ctx.character])
    to_default.click(lambda t: send(t, "default"), [text], ctx.prompt_transfer)
    to_notebook.click(lambda t: send(t, "notebook"), [text], ctx.prompt_transfer)
    # the list is read again on page load (a page starts from `current`) and whenever the tab is shown
    gr.on(None, lambda: refresh_list(current), None, [select], show_progress="hidden")
    for tab in enclosing_tabs(select):
        tab.select(on_show, [ctx.character, text], [select, text], show_progress="hidden")


def send(text: str, target: str) -> dict[str, Any]:
    """The ``ctx.prompt_transfer`` value sending the example prompt of `text` to the `target` tab."""
    try:
        prompt = example_prompt(text)
    except HearthError as exc:
        raise gr.Error(f"template: {exc}", print_exception=False) from None
    gr.Info(f"Sent to the {target.title()} tab")
    return {"target": target, "text": prompt, "nonce": time.monotonic_ns()}
