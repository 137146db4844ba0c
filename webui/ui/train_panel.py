"""LoRA training panel (being written)."""

from __future__ import annotations

import gradio as gr

from webui.ui.context import UIContext


def build_train_panel(ctx: UIContext) -> None:
    gr.Markdown("LoRA training")
