"""The sampler debugger, under the Default and Notebook tabs' Probabilities view.

Clicking a generated token opens, for that position, the top candidates of the model's distribution and after
each step of the active sampler chain in order (`webui.sampling.trace`): a bar per probability, the tokens
each step removed marked, the entropy and the tokens left. It uses the Parameters tab's current settings over
the exact ids the generation read (the recorded `Segment`s). Choosing another candidate branches: the text
is cut at that token, the candidate put in its place, and generation goes on from it with the current
settings (Stop stops it; in the Notebook, Undo puts back the text from before the branch).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.events import TokenLogprob
from webui.generation import GenerationCore
from webui.sampling.trace import SamplerTrace, TraceStage, sampler_trace
from webui.textstream import IncrementalDecoder
from webui.ui.context import UIContext, sampling_params
from webui.ui.streaming import CancelBoard, toasts
from webui.ui.textviews import (
    LOGPROBS,
    Segment,
    TextViews,
    check_ready,
    percent,
    piece_label,
    segment_at,
    stream_to_views,
)

#: Candidates listed per stage.
DEBUG_TOP_K = 10
STALE = "Sampler debugger: the text changed since this token was opened; click the token again"
BUSY = "Sampler debugger: a generation is running in this tab; stop it or let it finish before branching"

DEBUGGER_CSS = """
.hearth-debug { font-size: 0.88em; margin-top: 0.8em; }
.hearth-debug .head { margin-bottom: 0.4em; }
.hearth-debug .scroll { overflow-x: auto; max-width: 100%; }
.hearth-debug table { border-collapse: collapse; font-family: var(--font-mono); }
.hearth-debug th, .hearth-debug td { padding: 2px 6px; text-align: right; white-space: pre;
  border-bottom: 1px solid var(--border-color-primary, #ddd); }
.hearth-debug th.tok, .hearth-debug td.tok { text-align: left; }
.hearth-debug td.p { position: relative; min-width: 4.5em; }
.hearth-debug .bar { position: absolute; left: 0; top: 20%; height: 60%; opacity: 0.35;
  background: var(--color-accent, #f97316); }
.hearth-debug .pct { position: relative; }
.hearth-debug td.removed { color: #b91c1c; background: rgba(220, 38, 38, 0.12); text-align: center; }
.hearth-debug td.gone { opacity: 0.35; text-align: center; }
.hearth-debug tr.picked td { font-weight: bold; background: rgba(59, 130, 246, 0.08); }
.hearth-debug tfoot td, .hearth-debug tfoot th { font-family: var(--font); opacity: 0.85; }
.hearth-debug .notes { margin: 0.4em 0 0 1.2em; padding: 0; }
.hearth-debug button.hearth-branch { font: inherit; font-size: 0.85em; padding: 0 6px; border-radius: 4px; cursor: pointer;
  border: 1px solid var(--border-color-primary, #ccc); background: var(--button-secondary-background-fill, #eee); }
"""
#: A Branch button sends `select` with the candidate's token id.
BRANCH_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button.hearth-branch');
  if (!button || !element.contains(button)) return;
  trigger('select', {index: Number(button.dataset.tokenId), value: button.dataset.tokenId, selected: true});
});
"""


@dataclass
class DebuggerPanel:
    column: gr.Column
    view: gr.HTML
    close: gr.Button


@dataclass(frozen=True)
class Opened:
    """The position shown: recorded token `index` (its id, to notice a text that changed since), its trace."""

    index: int
    token_id: int
    trace: SamplerTrace


def build_debugger_panel(name: str) -> DebuggerPanel:
    """The debugger's place under the Probabilities view (hidden until a token is clicked)."""
    with gr.Column(visible=False, elem_id=f"{name}-debugger") as column:
        view = gr.HTML("", css_template=DEBUGGER_CSS, js_on_load=BRANCH_JS, elem_id=f"{name}-debugger-view")
        close = gr.Button("Close the debugger", size="sm", elem_id=f"{name}-debugger-close")
    return DebuggerPanel(column, view, close)


# -- rendering -------------------------------------------------------------------------------------
def _cell(trace: SamplerTrace, stage: TraceStage, row: int) -> str:
    token_id = trace.candidates[row].token_id
    if token_id in stage.removed:
        by = html.escape(stage.name)
        return f"<td class='removed' title='removed by {by}' aria-label='removed by {by}'>✕</td>"
    p, logit = stage.probabilities[row], stage.logits[row]
    if logit == -math.inf:
        return "<td class='gone' title='removed earlier'>·</td>"
    return (
        f"<td class='p' title='logit {logit:.3f}'><span class='bar' style='width: {100 * p:.1f}%'></span>"
        f"<span class='pct'>{percent(p)}</span></td>"
    )


def debugger_html(trace: SamplerTrace, index: int, count: int) -> str:
    """The table: a row per candidate (the picked one first in bold when it leads), a column per stage."""
    picked = trace.actual.token_id if trace.actual else None
    label = html.escape(piece_label(trace.actual.text)) if trace.actual else "(end)"
    head = (
        f"<div class='head'><strong>Token {index + 1} of {count}</strong>: {label} · {trace.position} tokens "
        "of context · with the current settings</div>"
    )
    columns = "".join(f"<th>{html.escape(stage.name)}</th>" for stage in trace.stages)
    rows = []
    for row, candidate in enumerate(trace.candidates):
        text = html.escape(piece_label(candidate.text))
        cells = "".join(_cell(trace, stage, row) for stage in trace.stages)
        if candidate.token_id == picked:
            rows.append(
                f"<tr class='picked' data-token-id='{picked}'><td></td><td class='tok'>{text} (picked)</td>{cells}</tr>"
            )
            continue
        button = (
            f"<button class='hearth-branch' data-token-id='{candidate.token_id}' "
            f"aria-label='Branch from {text}'>Branch</button>"
        )
        rows.append(
            f"<tr data-token-id='{candidate.token_id}'><td>{button}</td><td class='tok'>{text}</td>{cells}</tr>"
        )
    entropy = "".join(f"<td>{stage.entropy:.2f} bits</td>" for stage in trace.stages)
    left = "".join(
        f"<td>{stage.survivors}" + (f" (−{stage.removed_total})" if stage.removed_total else "") + "</td>"
        for stage in trace.stages
    )
    notes = [f"{stage.name}: {stage.note}" for stage in trace.stages if stage.note] + list(trace.notes)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f"<div class='hearth-debug'>{head}<div class='scroll'><table>"
        f"<thead><tr><th></th><th class='tok'>Token</th>{columns}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f"<tfoot><tr><td></td><th class='tok'>entropy</th>{entropy}</tr>"
        f"<tr><td></td><th class='tok'>tokens left</th>{left}</tr></tfoot></table></div>"
        f"{f'<ul class=notes>{notes_html}</ul>' if notes else ''}</div>"
    )


# -- the position's ids, its trace, and a branch -----------------------------------------------------
def _segment(tokens: Sequence[TokenLogprob], segments: Sequence[Segment], index: int) -> Segment:
    segment = segment_at(segments, index) if 0 <= index < len(tokens) else None
    if segment is None:
        raise gr.Error(
            "Sampler debugger: that token is not in the last generation; generate again",
            print_exception=False,
        )
    return segment


def trace_at(
    core: GenerationCore,
    tokens: Sequence[TokenLogprob],
    segments: Sequence[Segment],
    index: int,
    params: dict[str, Any],
) -> Opened:
    """The trace of recorded token `index`, over the ids its generation read."""
    segment = _segment(tokens, segments, index)
    ids = [*segment.prompt_ids, *(t.token_id for t in tokens[segment.start : index + 1])]
    with toasts():
        trace = sampler_trace(
            core,
            ids,
            len(ids) - 1,
            sampling_params(params),
            DEBUG_TOP_K,
            prompt_length=len(segment.prompt_ids),
        )
    return Opened(index, tokens[index].token_id, trace)


def decoded(core: GenerationCore, prompt_ids: Sequence[int], ids: Sequence[int]) -> str:
    """The text `ids` add after `prompt_ids`, as the generation core decodes it."""
    decoder = IncrementalDecoder(core.detokenize, prompt_ids)
    for token in ids:
        decoder.push(token)
    decoder.flush()
    return decoder.text


def alternative_entry(trace: SamplerTrace, token_id: int) -> TokenLogprob:
    """The branched-in token as the Probabilities view records one: its raw log-probability, the top raw ones."""
    raw = trace.stages[0]
    by_id = {c.token_id: (c, p) for c, p in zip(trace.candidates, raw.probabilities, strict=True)}
    top = sorted(by_id.values(), key=lambda cp: -cp[1])[:LOGPROBS]

    def logprob(p: float) -> float:
        return math.log(p) if p > 0 else -math.inf

    candidate, p = by_id[token_id]
    return TokenLogprob(
        token_id, candidate.text, logprob(p), [(c.token_id, c.text, logprob(q)) for c, q in top]
    )


@dataclass(frozen=True)
class Branch:
    """What a branch generates from: exactly `prompt_ids`, showing `before`, recording after `keep`."""

    prompt_ids: list[int]
    before: str
    keep: list[TokenLogprob]
    segments: list[Segment]


def plan_branch(
    core: GenerationCore,
    opened: Opened,
    tokens: Sequence[TokenLogprob],
    segments: Sequence[Segment],
    token_id: int,
) -> Branch:
    """Cut the recorded text at `opened`'s token and put `token_id` in its place."""
    if opened.index >= len(tokens) or tokens[opened.index].token_id != opened.token_id:
        raise gr.Error(STALE, print_exception=False)
    if token_id not in {c.token_id for c in opened.trace.candidates}:
        raise gr.Error("Sampler debugger: pick one of the candidates listed", print_exception=False)
    segment = _segment(tokens, segments, opened.index)
    prefix = [t.token_id for t in tokens[segment.start : opened.index]]
    with toasts():
        before = segment.before + decoded(core, segment.prompt_ids, [*prefix, token_id])
    keep = [*tokens[: opened.index], alternative_entry(opened.trace, token_id)]
    kept = [s for s in segments if s.start <= opened.index]
    return Branch([*segment.prompt_ids, *prefix, token_id], before, keep, kept)


# -- wiring ----------------------------------------------------------------------------------------
def wire_sampler_debugger(
    ctx: UIContext,
    views: TextViews,
    cancels: CancelBoard,
    *,
    box: gr.Textbox,
    recorded: gr.State,
    segments: gr.State,
    undo: gr.State | None = None,
) -> None:
    """A click on a token of `views.probabilities` opens `views.panel`; a Branch there streams into `box` (and
    the views) like a generation; `undo`, when given, gets the text from before the branch."""
    panel: DebuggerPanel = views.panel
    core = ctx.app.core
    opened = gr.State(None)
    picked = gr.State(None)
    quiet = {"show_progress": "hidden"}

    def open_at(
        tokens: list[TokenLogprob], segs: list[Segment], params: dict[str, Any], evt: gr.SelectData
    ) -> tuple[Any, ...]:
        shown = trace_at(core, tokens or [], segs or [], int(evt.index), params)
        return shown, gr.update(visible=True), debugger_html(shown.trace, shown.index, len(tokens))

    def choose(
        shown: Opened | None, text: str, params: dict[str, Any], evt: gr.SelectData, request: gr.Request
    ) -> Any:
        check_ready(ctx, params)
        if cancels.busy(request):
            raise gr.Error(BUSY, print_exception=False)
        if shown is None:
            raise gr.Error(STALE, print_exception=False)
        return (int(evt.index), text) if undo is not None else int(evt.index)

    def run_branch(
        token_id: int,
        shown: Opened,
        tokens: list[TokenLogprob],
        segs: list[Segment],
        params: dict[str, Any],
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        branch = plan_branch(core, shown, tokens or [], segs or [], token_id)
        with toasts():
            ends = token_id in ctx.app.models.require().eos_token_ids
        if ends:  # the end of the text: nothing to continue
            params = {**params, "max_new_tokens": 0}
        yield from stream_to_views(
            ctx, cancels, request, prompt="", prompt_ids=branch.prompt_ids, before=branch.before,
            params=params, keep=branch.keep, segments=branch.segments,
        )  # fmt: skip

    def hide() -> tuple[Any, ...]:
        return None, gr.update(visible=False)

    views.probabilities.select(
        open_at, [recorded, segments, ctx.params], [opened, panel.column, panel.view], **quiet
    )
    choice_outputs = [picked, undo] if undo is not None else [picked]
    streamed = [box, *views.rendered_outputs(), recorded, views.probabilities, segments]
    panel.view.select(choose, [opened, box, ctx.params], choice_outputs, **quiet).success(
        run_branch, [picked, opened, recorded, segments, ctx.params], streamed
    )
    # a new text (a generation, a branch) makes the trace stale: close it
    for trigger in (views.probabilities.change, panel.close.click):
        trigger(hide, None, [opened, panel.column], **quiet)
