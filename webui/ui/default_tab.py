"""The Default tab: a raw prompt box, an output box and the shared output views.

No chat formatting happens here: the prompt goes to the generation core as typed, which makes this tab the
place to try instruction templates by hand (the Parameters tab can send a template's text here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.generation import TokenLogprob
from webui.prompts_store import PromptStore
from webui.ui.context import UIContext
from webui.ui.streaming import CancelBoard, toasts
from webui.ui.textviews import (
    build_text_views,
    stream_to_views,
    wire_prompt_box,
    wire_text_views,
)

#: The shortcuts (see `webui.ui.KEYS_JS`); Enter and Shift+Enter only write, as in text-generation-webui.
TEXT_KEYS = "Ctrl+Enter: generate · Esc: stop"
RECORD_INFO = "Feeds the Probabilities view; uses Hearth's sampler path, slower than llama.cpp's native one"


def build_default_tab(ctx: UIContext) -> None:
    store = PromptStore.for_user_data(ctx.app.settings.user_data_dir)
    cancels = CancelBoard()
    recorded = gr.State([])  # the TokenLogprobs of the current output, for Continue
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
            with gr.Accordion("Saved prompts", open=False):
                with gr.Row():
                    saved = gr.Dropdown(
                        store.names(), label="Saved prompt", value=None, elem_id="default-saved"
                    )
                    refresh = gr.Button("↻", scale=0, min_width=40)
                with gr.Row():
                    name = gr.Textbox(
                        label="Save as", placeholder="name", scale=3, elem_id="default-save-name"
                    )
                    save = gr.Button("Save", scale=1, elem_id="default-save")
                    delete = gr.Button("Delete", variant="stop", scale=1)
        with gr.Column(scale=1):
            views = build_text_views("default", raw_label="Output")
    assert views.raw is not None
    output = views.raw
    wire_text_views(views, ctx, [prompt, output])
    streamed = [output, *views.rendered_outputs(), recorded, views.probabilities]

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
        )

    generate.click(run, [prompt, ctx.params, record], streamed)
    continue_.click(run_continue, [prompt, output, ctx.params, record, recorded], streamed)
    stop.click(cancels.stop, None, None, queue=False)
    wire_prompt_box(ctx, prompt, token_count, "default")
    _wire_saved_prompts(store, prompt, saved, refresh, name, save, delete)


def _wire_saved_prompts(
    store: PromptStore,
    prompt: gr.Textbox,
    saved: gr.Dropdown,
    refresh: gr.Button,
    name: gr.Textbox,
    save: gr.Button,
    delete: gr.Button,
) -> None:
    def choices(value: str | None = None) -> Any:
        return gr.Dropdown(choices=store.names(), value=value)

    def load(chosen: str | None) -> Any:
        if not chosen:
            return gr.skip(), gr.skip()
        with toasts():
            return store.load(chosen), chosen

    def save_prompt(label: str, text: str) -> Any:
        with toasts():
            saved_as = store.save(label, text)
        gr.Info(f"Saved prompt {saved_as!r}")
        return choices(saved_as)

    def delete_prompt(chosen: str | None) -> Any:
        if not chosen:
            raise gr.Error("choose a saved prompt to delete")
        with toasts():
            store.delete(chosen)
        gr.Info(f"Deleted prompt {chosen!r}")
        return choices(None)

    saved.input(load, saved, [prompt, name])
    refresh.click(lambda: choices(None), None, saved)
    save.click(save_prompt, [name, prompt], saved)
    delete.click(delete_prompt, saved, saved)
