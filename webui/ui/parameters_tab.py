"""The Parameters tab: Generation, Character, Instruction template and Chat history sub-tabs.

Each sub-tab has its own module; this one only lays them out. They write the shared states
(``ctx.params``, ``ctx.character``, ``ctx.history``, ``ctx.prompt_transfer``) that the Chat, Default and
Notebook tabs read.
"""

from __future__ import annotations

import gradio as gr

from webui.ui.character_panel import build_character_panel
from webui.ui.context import UIContext
from webui.ui.generation_panel import build_generation_panel
from webui.ui.history_panel import build_history_panel
from webui.ui.template_panel import build_template_panel


def build_parameters_tab(ctx: UIContext) -> None:
    with gr.Tabs():
        with gr.Tab("Generation", elem_id="params-generation"):
            build_generation_panel(ctx)
        with gr.Tab("Character", elem_id="params-character"):
            build_character_panel(ctx)
        with gr.Tab("Instruction template", elem_id="params-template"):
            build_template_panel(ctx)
        with gr.Tab("Chat history", elem_id="params-history"):
            build_history_panel(ctx)
