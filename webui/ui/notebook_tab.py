"""The Notebook tab: one box that is both prompt and output, so a text can be written with the model.

Generating appends to the box; Undo puts back the text from before the last generation and Regenerate
does that and generates again (a different sample unless the seed is fixed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.ui.context import UIContext
from webui.ui.default_tab import RECORD_INFO, TEXT_KEYS
from webui.ui.streaming import CancelBoard
from webui.ui.textviews import (
    build_text_views,
    stream_to_views,
    wire_prompt_box,
    wire_text_views,
)


def build_notebook_tab(ctx: UIContext) -> None:
    cancels = CancelBoard()
    before_last = gr.State(None)  # the text before the last generation, for Undo / Regenerate
    recorded = gr.State([])
    with gr.Row():
        with gr.Column(scale=3):
            box = gr.Textbox(label="Notebook", lines=25, max_lines=50, elem_id="notebook-text")
            token_count = gr.Markdown(elem_id="notebook-token-count")
            gr.Markdown(TEXT_KEYS, elem_id="notebook-keys", elem_classes="hearth-keys")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="notebook-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="notebook-stop")
                undo = gr.Button("Undo", elem_id="notebook-undo")
                regenerate = gr.Button("Regenerate", elem_id="notebook-regenerate")
            record = gr.Checkbox(
                label="Record token probabilities", value=True, info=RECORD_INFO, elem_id="notebook-record"
            )
        with gr.Column(scale=2):
            views = build_text_views("notebook")
    wire_text_views(views, ctx, [box])
    streamed = [box, *views.rendered_outputs(), recorded, views.probabilities]

    def run(
        text: str, params: dict[str, Any], record_on: bool, request: gr.Request
    ) -> Iterator[tuple[Any, ...]]:
        yield from stream_to_views(
            ctx, cancels, request, prompt=text, before=text, params=params, record=record_on
        )

    def restore(previous: str | None) -> str:
        if previous is None:
            raise gr.Error("nothing to undo: generate first")
        return previous

    def remember(text: str) -> str:
        return text

    generate.click(remember, box, before_last).then(run, [box, ctx.params, record], streamed)
    regenerate.click(restore, before_last, box).success(run, [box, ctx.params, record], streamed)
    undo.click(restore, before_last, box)
    stop.click(cancels.stop, None, None, queue=False)
    wire_prompt_box(ctx, box, token_count, "notebook")
