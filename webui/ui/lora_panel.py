"""The Model tab's LoRA selector: one or several adapters from the LoRA folder, each with a scale, applied to
the loaded model (or all removed) without reloading it.

Names resolve through `webui.loras` and the change is `ModelManager.apply_loras`; this only renders. A refused
set (another base model's adapter, a loader that cannot) is one toast, and the applied set stays as it was.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.app import App
from webui.errors import HearthError
from webui.loras import discover_loras, resolve_choices

#: Scale sliders shown: one per selected LoRA, up to this many LoRAs at once.
MAX_LORAS = 4


def lora_status(app: App) -> str:
    models = app.models
    if models.model is None:
        return "No model loaded: load one to apply LoRAs."
    if not models.loras:
        return f"No LoRA applied to {html.escape(models.model_name or '')}."
    applied = ", ".join(f"**{html.escape(x.name)}** ×{x.scale:g}" for x in models.loras)
    return f"Applied to {html.escape(models.model_name or '')}: {applied}"


@dataclass
class LoraPanel:
    app: App
    status: Any = None
    names: Any = None

    def choices(self) -> list[str]:
        return [lora.name for lora in discover_loras(self.app.settings.loras_dir)]

    def refresh(self, selected: list[str] | None) -> Any:
        names = self.choices()
        return gr.update(choices=names, value=[n for n in selected or [] if n in names])

    def scales(self, selected: list[str] | None) -> list[Any]:
        """One slider per selected LoRA, labelled with its name."""
        selected = list(selected or [])
        return [
            gr.update(
                visible=i < len(selected), label=f"Scale of {selected[i]}" if i < len(selected) else "Scale"
            )
            for i in range(MAX_LORAS)
        ]

    def apply(self, selected: list[str] | None, *scales: float) -> str:
        selected = list(selected or [])
        if self.app.models.model is None:
            raise gr.Error("LoRA not applied: no model is loaded; load one first", print_exception=False)
        try:
            loras = resolve_choices(self.app.settings.loras_dir, selected, scales[: len(selected)])
            self.app.models.apply_loras(loras)
        except HearthError as exc:
            raise gr.Error(f"LoRA not applied: {exc}", print_exception=False) from None
        return lora_status(self.app)

    def remove(self) -> tuple[str, Any]:
        if self.app.models.model is not None:
            try:
                self.app.models.apply_loras([])
            except HearthError as exc:
                raise gr.Error(f"LoRAs not removed: {exc}", print_exception=False) from None
        return lora_status(self.app), gr.update(value=[])

    def follow(self, selected: list[str] | None) -> tuple[str, Any]:
        """The status and the list after a load or unload made on this page, or when the tab is selected."""
        return lora_status(self.app), self.refresh(selected)


def build_lora_panel(app: App) -> LoraPanel:
    """The accordion; `LoraPanel.follow` (inputs: `names`, outputs: `status`, `names`) refreshes it."""
    panel = LoraPanel(app)
    with gr.Accordion("LoRA adapters", open=False, elem_id="lora-box"):
        with gr.Row():
            panel.names = gr.Dropdown(
                label="LoRAs",
                choices=panel.choices(),
                value=[],
                multiselect=True,
                max_choices=MAX_LORAS,
                elem_id="lora-dropdown",
                scale=4,
                info=f"From {app.settings.loras_dir.name}/: PEFT folders or GGUF adapters.",
            )
            refresh = gr.Button(
                "Refresh",
                size="sm",
                scale=0,
                min_width=80,
                elem_id="lora-refresh",
                elem_classes="hearth-refresh",
            )
        sliders = [
            gr.Slider(
                -2.0, 2.0, value=1.0, step=0.05, label="Scale", visible=False, elem_id=f"lora-scale-{i}"
            )
            for i in range(MAX_LORAS)
        ]
        with gr.Row():
            apply = gr.Button("Apply LoRAs", variant="primary", elem_id="lora-apply")
            remove = gr.Button("Remove all", elem_id="lora-remove")
        panel.status = gr.Markdown(lambda: lora_status(app), elem_id="lora-status")
    panel.names.change(panel.scales, [panel.names], sliders, show_progress="hidden")
    refresh.click(panel.refresh, [panel.names], [panel.names])
    apply.click(panel.apply, [panel.names, *sliders], [panel.status], concurrency_limit=1)
    remove.click(panel.remove, None, [panel.status, panel.names])
    return panel
