"""The Training tab: train a LoRA on the loaded Transformers model, and evaluate models (perplexity, KL
divergence against a reference). Each part is its own panel module; this file only lays them out."""

from __future__ import annotations

import gradio as gr

from webui.ui.context import UIContext
from webui.ui.evaluation_panel import build_evaluation_panel
from webui.ui.train_panel import build_train_panel


def build_training_tab(ctx: UIContext) -> None:
    with gr.Tabs():
        with gr.Tab("Train LoRA", id="train-lora", elem_id="tab-train-lora"):
            build_train_panel(ctx)
        with gr.Tab("Perplexity evaluation", id="evaluate", elem_id="tab-evaluate"):
            build_evaluation_panel(ctx)
