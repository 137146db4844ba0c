"""Extensions in the UI: each enabled extension's own blocks, the enable / settings panel, and the toasts
that report a failing extension.

The Session tab calls `build_extensions_settings(ctx)` (checkboxes to enable, one control per declared
param built by the shared `widget_for` with its description as the tooltip, Apply and Save) and
`build_extension_blocks(ctx)` (every enabled extension's ``ui`` hook, each in its own accordion, plus the
notice watcher). Hooks and settings take effect on Apply, and the settings panel is re-drawn
(`gr.render`) for the extensions then on; an extension's own blocks are built with the page, so one
enabled later shows them after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from webui.extensions import ExtensionManager
from webui.param_specs import ParamSpec
from webui.ui.context import UIContext
from webui.ui.param_widgets import widget_for

NOTICE_SECONDS = 2.0
#: Kinds of setting the panel shows a widget for.
EDITABLE = ("bool", "int", "float", "str", "choice")


def apply_settings(manager: ExtensionManager, names: Sequence[str], params: dict[str, dict[str, Any]]) -> str:
    """Enable exactly `names` and apply the given params; a Markdown line saying what happened.
    Raises ValueError (naming the setting) when a value does not fit its type."""
    enabled = manager.set_enabled(list(names))
    for name, values in params.items():
        if name in enabled and values:
            manager.set_params(name, values)
    manager.store_settings()
    failed = [n for n in names if n not in enabled]
    text = f"Enabled: {', '.join(enabled) or 'none'}."
    if failed:
        text += f" Could not enable {', '.join(failed)} (see the notices)."
    return text


def _control(name: str, spec: ParamSpec, value: Any) -> gr.components.Component | None:
    """The shared widget for one setting; lists, maps and other values are kept in settings.yaml but not
    editable here."""
    if spec.kind not in EDITABLE:
        return None
    lines = 3 if isinstance(value, str) and ("\n" in value or len(value) > 80) else 1
    return widget_for(spec, value, f"extension-{name}-", label=spec.name.replace("_", " "), lines=lines)


def build_extensions_settings(ctx: UIContext) -> None:
    manager = ctx.app.extensions
    if manager is None:
        return
    chosen = gr.CheckboxGroup(choices=manager.available(), value=manager.enabled, label="Extensions", interactive=True,
                              info="Applied at once, settings included; an extension's own blocks (its ui hook) "
                                   "appear after a restart.", elem_id="extensions-enabled")
    shown = gr.State(manager.enabled)  # the extensions whose settings are on the page
    status = gr.Markdown(elem_id="extensions-status")

    @gr.render(inputs=[shown])  # re-drawn when Apply changes which extensions are on
    def settings_panel(names: list[str]) -> None:
        controls = _settings_controls(manager, names)
        with gr.Row():
            apply = gr.Button("Apply extensions", elem_id="extensions-apply")
            save = gr.Button("Apply and save extensions", variant="primary", elem_id="extensions-save")

        def collect(values: Sequence[Any]) -> dict[str, dict[str, Any]]:
            params: dict[str, dict[str, Any]] = {}
            for (name, key, _), value in zip(controls, values, strict=True):
                params.setdefault(name, {})[key] = value
            return params

        def on_apply(names: list[str], *values: Any) -> tuple[str, list[str]]:
            try:
                return apply_settings(manager, names, collect(values)), manager.enabled
            except (TypeError, ValueError) as exc:
                raise gr.Error(f"extension settings not applied: {exc}", print_exception=False) from None

        def on_save(names: list[str], *values: Any) -> tuple[str, list[str]]:
            text, enabled = on_apply(names, *values)
            try:
                path = manager.save_settings_file()
            except (OSError, ValueError) as exc:
                raise gr.Error(f"settings not saved: {exc}", print_exception=False) from None
            return f"{text} Saved to `{path}`.", enabled

        inputs = [chosen, *(control for _, _, control in controls)]
        # raw values: a range error is ours, naming the setting, not Gradio's
        apply.click(on_apply, inputs, [status, shown], preprocess=False)
        save.click(on_save, inputs, [status, shown], preprocess=False)


def _settings_controls(manager: ExtensionManager, names: Sequence[str]) -> list[tuple[str, str, Any]]:
    """One accordion of controls per extension in `names` that declares settings: (name, key, control)."""
    controls: list[tuple[str, str, Any]] = []
    for name in names:
        values, specs = manager.params(name), manager.specs(name)
        if not values:
            continue
        with gr.Accordion(f"{name} settings", open=False, elem_id=f"extension-settings-{name}"):
            for key, value in values.items():
                control = _control(name, specs[key], value)
                if control is not None:
                    controls.append((name, key, control))
    return controls


def build_extension_blocks(ctx: UIContext) -> None:
    """Every enabled extension's ``ui`` hook in its own accordion (a raising one becomes a notice)."""
    manager = ctx.app.extensions
    if manager is None:
        return
    watch_notices(manager)
    for name in manager.enabled:
        if manager.has_hook(name, "ui"):
            with gr.Accordion(name, open=True, elem_id=f"extension-{name}"):
                manager.render_ui(name, ctx)


def watch_notices(manager: ExtensionManager) -> gr.Timer:
    """Show extension notices (failures, disabled extensions) as warning toasts, polled every few seconds."""
    timer = gr.Timer(NOTICE_SECONDS)

    def show() -> None:
        for notice in manager.drain_notices():
            gr.Warning(notice.message)

    timer.tick(show, None, None, show_progress="hidden")
    return timer
