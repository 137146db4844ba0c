"""The Default tab: a raw prompt box, an output box and the shared output views.

No chat formatting happens here: the prompt goes to the generation core as typed, which makes this tab the
place to try instruction templates by hand (the Parameters tab can send a template's text here). Prompts
can be saved and loaded (`webui.ui.saved_prompts`, shared with the Notebook tab). Clicking a token in the
Probabilities view opens the sampler debugger (`webui.ui.sampler_debugger`), which can branch the output.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import gradio as gr

from webui.events import TokenLogprob
from webui.prompts.prompt_store import PromptStore
from webui.ui.context import UIContext
from webui.ui.sampler_debugger import build_debugger_panel, wire_sampler_debugger
from webui.ui.saved_prompts import build_saved_prompts
from webui.ui.streaming import CancelBoard
from webui.ui.textviews import (
    Segment,
    build_model_notice,
    build_text_views,
    check_ready,
    stream_to_views,
    wire_prompt_box,
    wire_text_views,
)

#: The shortcuts (see `webui.ui.KEYS_JS`); Enter and Shift+Enter only write, as in text-generation-webui.
TEXT_KEYS = "Ctrl+Enter: generate · Esc: stop"
RECORD_INFO = "Feeds the Probabilities view; uses Hearth's sampler path, slower than llama.cpp's native one"


def build_default_tab(ctx: UIContext) -> None:
    cancels = CancelBoard()
    recorded = gr.State([])  # the TokenLogprobs of the current output, for Continue
    segments = gr.State([])  # what they were generated after (`Segment`), for the sampler debugger
    build_model_notice(ctx, "default")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=20, max_lines=40, elem_id="default-prompt")
            token_count = gr.Markdown(elem_id="default-token-count")
            gr.Markdown(TEXT_KEYS, elem_id="default-keys", elem_classes="hearth-keys")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="default-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="default-stop")
                continue_ = gr.Button("Continue", elem_id="default-continue")
            record = gr.Checkbox(
                label="Record token probabilities", value=True, info=RECORD_INFO, elem_id="default-record"
            )
            build_saved_prompts(PromptStore.for_user_data(ctx.app.settings.user_data_dir), "default", prompt)
        with gr.Column(scale=1):
            views = build_text_views("default", raw_label="Output", probabilities_panel=build_debugger_panel)
    assert views.raw is not None
    output = views.raw
    wire_text_views(views, ctx, [prompt, output])
    streamed = [output, *views.rendered_outputs(), recorded, views.probabilities, segments]

    def run(
        text: str, params: dict[str, Any], record_on: bool, request: gr.Request
    ) -> Iterator[tuple[Any, ...]]:
        yield from stream_to_views(
            ctx, cancels, request, prompt=text, before="", params=params, record=record_on
        )

    def run_continue(
        text: str,
        before: str,
        params: dict[str, Any],
        record_on: bool,
        keep: list[TokenLogprob],
        kept_segments: list[Segment],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        yield from stream_to_views(
            ctx,
            cancels,
            request,
            prompt=text + before,
            before=before,
            params=params,
            keep=keep,
            record=record_on,
            segments=kept_segments,
        )

    ready = partial(check_ready, ctx)
    # the check has no outputs: a refusal (no model, a bad setting) is one toast, the boxes keep their text
    generate.click(ready, ctx.params, None, show_progress="hidden").success(
        run, [prompt, ctx.params, record], streamed
    )
    continue_.click(ready, ctx.params, None, show_progress="hidden").success(
        run_continue, [prompt, output, ctx.params, record, recorded, segments], streamed
    )
    stop.click(cancels.stop, None, None, queue=False)
    wire_sampler_debugger(ctx, views, cancels, box=output, recorded=recorded, segments=segments)
    wire_prompt_box(ctx, prompt, token_count, "default")
