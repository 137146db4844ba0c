"""The Notebook tab: one box that is both prompt and output, so a text can be written with the model.

Generating appends to the box; Undo puts back the text from before the last generation and Regenerate
does that and generates again (a different sample unless the seed is fixed). Texts can be saved and loaded
as prompts (`webui.ui.saved_prompts`, shared with the Default tab). Clicking a token in the Probabilities view
opens the sampler debugger (`webui.ui.sampler_debugger`); a branch from it is undone by Undo, like a generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import gradio as gr

from webui.prompts.prompt_store import PromptStore
from webui.ui.context import UIContext
from webui.ui.default_tab import RECORD_INFO, TEXT_KEYS
from webui.ui.sampler_debugger import build_debugger_panel, wire_sampler_debugger
from webui.ui.saved_prompts import build_saved_prompts
from webui.ui.streaming import CancelBoard
from webui.ui.textviews import (
    build_model_notice,
    build_text_views,
    check_ready,
    stream_to_views,
    wire_prompt_box,
    wire_text_views,
)


def build_notebook_tab(ctx: UIContext) -> None:
    cancels = CancelBoard()
    before_last = gr.State(None)  # the text before the last generation, for Undo / Regenerate
    recorded = gr.State([])
    segments = gr.State([])  # what the recorded tokens were generated after, for the sampler debugger
    build_model_notice(ctx, "notebook")
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
            build_saved_prompts(PromptStore.for_user_data(ctx.app.settings.user_data_dir), "notebook", box)
        with gr.Column(scale=2):
            views = build_text_views("notebook", probabilities_panel=build_debugger_panel)
    wire_text_views(views, ctx, [box])
    streamed = [box, *views.rendered_outputs(), recorded, views.probabilities, segments]

    def run(
        text: str, params: dict[str, Any], record_on: bool, request: gr.Request
    ) -> Iterator[tuple[Any, ...]]:
        yield from stream_to_views(
            ctx, cancels, request, prompt=text, before=text, params=params, record=record_on
        )

    def can_undo(previous: str | None) -> None:
        if previous is None:
            raise gr.Error("Undo: nothing to undo, generate first", print_exception=False)

    def same(text: str | None) -> str | None:
        return text

    ready = partial(check_ready, ctx)
    # checks first, with no outputs: a refusal (no model, a bad setting) is one toast, the text stays as typed
    quiet = {"show_progress": "hidden"}
    generate.click(ready, ctx.params, None, **quiet).success(same, box, before_last).success(
        run, [box, ctx.params, record], streamed
    )
    regenerate.click(ready, ctx.params, None, **quiet).success(can_undo, before_last, None, **quiet).success(
        same, before_last, box
    ).success(run, [box, ctx.params, record], streamed)
    undo.click(can_undo, before_last, None, **quiet).success(same, before_last, box)
    stop.click(cancels.stop, None, None, queue=False)
    wire_sampler_debugger(ctx, views, cancels, box=box, recorded=recorded, segments=segments, undo=before_last)
    wire_prompt_box(ctx, box, token_count, "notebook")
