"""The output sub-tabs shared by the Default and Notebook tabs: Raw, Markdown, HTML, Logits, Tokens and
Probabilities.

The pure renderers (`probability_html`, `logits_rows`, `token_rows`, `text_html`) are separate from the
Gradio wiring so they can be unit-tested without a browser. The Probabilities view is Hearth's own: each
generated token is shaded from red (unlikely) to green (likely) and hovering or clicking it shows the
model's top alternatives at that position, which makes a surprising continuation easy to diagnose; clicking it
(or Enter on it) sends the view's `select` event with the token's index, which opens the sampler debugger
(`webui.ui.sampler_debugger`, built into the sub-tab by the owning tab). `Segment`s record the exact token ids
each run of recorded tokens was generated after, so a position can be traced and branched from.
Probabilities are written with `percent` (rare tokens keep their digits: 0.042%, 3.1e-05%, never "0.0%")
beside their log-probability.

Both tabs also say up front when no model is loaded (`build_model_notice`), check that before generating
(`check_ready`: one toast, nothing written to the outputs) and re-read what they show from disk or from
the model manager when the page loads and when their tab is selected (`refresh_when_shown`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.events import TokenLogprob
from webui.ui.context import enclosing_tabs, generation_request, sampling_params
from webui.ui.markup import literal_markdown
from webui.ui.streaming import CancelBoard, stream_text, throttle, toasts

if TYPE_CHECKING:
    from gradio.components import Component

    from webui.ui.context import UIContext

LOGITS_HEADERS = ["Rank", "Token", "Probability", "Logprob", "Id"]
TOKENS_HEADERS = ["#", "Id", "Piece"]
LOGITS_COUNT = 50
#: Top alternatives recorded per generated token for the Probabilities view.
LOGPROBS = 5
NO_MODEL = "No model is loaded: load one in the Model tab to generate."
NO_MODEL_NOTICE = (
    "**No model is loaded.** Load one in the **Model** tab to generate, see probabilities or count tokens; "
    "you can write and save prompts meanwhile."
)
EMPTY_PROBABILITIES = (
    "<p class='hearth-probs-empty'>Generate with <em>Record token probabilities</em> on to see how likely "
    "each generated token was.</p>"
)

#: Scoped to the Probabilities gr.HTML (css_template), so the tooltip needs nothing from the shell's CSS.
PROBABILITIES_CSS = """
.hearth-probs { white-space: pre-wrap; line-height: 1.9; font-family: var(--font-mono); font-size: 0.9em; }
.hearth-probs .summary { font-family: var(--font); margin-bottom: 0.6em; opacity: 0.8; white-space: normal; }
.hearth-tok { position: relative; color: #111; border-radius: 3px; padding: 1px 0; cursor: pointer;
  background: var(--tok-bg); }
.hearth-tok:hover, .hearth-tok:focus { outline: 2px solid #333; outline-offset: 0; z-index: 5; }
.hearth-alts { display: none; position: absolute; left: 0; top: 1.7em; z-index: 10; min-width: 12em;
  background: var(--background-fill-primary, #fff); color: var(--body-text-color, #111);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; padding: 4px 8px;
  box-shadow: 0 4px 12px rgba(0, 0, 0, 0.2); white-space: pre; line-height: 1.4; }
.hearth-tok:hover > .hearth-alts, .hearth-tok:focus > .hearth-alts { display: block; }
.hearth-alts .chosen { font-weight: bold; }
"""
#: A click (or Enter) on a token sends `select` with its index (delegated: the spans are re-rendered).
PROBABILITIES_JS = """
const pick = (event) => {
  const tok = event.target.closest('.hearth-tok');
  if (!tok || !element.contains(tok)) return;
  event.preventDefault();
  if (event.type === 'click') tok.blur();  // a mouse click opens the debugger, not the tooltip too
  trigger('select', {index: Number(tok.dataset.i), value: tok.dataset.i, selected: true});
};
element.addEventListener('click', pick);
element.addEventListener('keydown', (event) => { if (event.key === 'Enter') pick(event); });
"""


def piece_label(text: str) -> str:
    """A token's text made unambiguous in a table: quoted, with whitespace and control characters escaped."""
    return repr(text)


def probability_color(probability: float) -> str:
    """Red (0) through yellow to green (1), light enough for dark text in either theme."""
    p = min(max(probability, 0.0), 1.0)
    return f"hsl({120 * p:.0f}, 75%, 78%)"


def _probability(logprob: float) -> float:
    return math.exp(logprob) if logprob > -math.inf else 0.0


def percent(probability: float) -> str:
    """A probability as a percentage that stays readable when small: 25.0%, 1.5%, 0.42%, 0.0042%, 3.1e-05%
    (two significant digits below 1%), so rare tokens do not all read 0.0%; 0% only for exactly zero."""
    pct = 100 * probability
    if pct >= 0.995 or pct == 0:
        return f"{pct:.1f}%" if pct else "0%"
    if pct >= 1e-3:
        return f"{pct:.2g}%"
    return f"{pct:.1e}%"


def logprob_label(logprob: float) -> str:
    """A log-probability with three decimals ("-inf" for a token the samplers removed)."""
    return f"{logprob:.3f}" if logprob > -math.inf else "-inf"


def _chance(logprob: float, sep: str = "  ") -> str:
    return f"{percent(_probability(logprob))}{sep}logprob {logprob_label(logprob)}"


def _visible(text: str) -> str:
    """Escape for HTML and mark newlines (a token that is only a newline would be invisible)."""
    return html.escape(text).replace("\n", "↵\n")


def _alternatives(token: TokenLogprob) -> str:
    rows = [f"<span class='chosen'>{html.escape(piece_label(token.text))}  {_chance(token.logprob)}</span>"]
    for token_id, text, logprob in token.top:
        if token_id == token.token_id:
            continue
        rows.append(f"{html.escape(piece_label(text))}  {_chance(logprob)}")
    return "\n".join(rows)


def probability_html(tokens: Sequence[TokenLogprob]) -> str:
    """The generated tokens shaded by probability, each with its top alternatives as a hover/click tooltip."""
    if not tokens:
        return EMPTY_PROBABILITIES
    probabilities = [_probability(t.logprob) for t in tokens]
    lowest = min(range(len(tokens)), key=probabilities.__getitem__)
    summary = (
        f"<div class='summary'>{len(tokens)} tokens · mean probability "
        f"{percent(sum(probabilities) / len(probabilities))} · least likely "
        f"{html.escape(piece_label(tokens[lowest].text))} ({_chance(tokens[lowest].logprob, ', ')}) · click a "
        "token to see what each sampler did there</div>"
    )
    spans = []
    for index, (token, p) in enumerate(zip(tokens, probabilities, strict=True)):
        spans.append(
            f"<span class='hearth-tok' tabindex='0' data-i='{index}' data-id='{token.token_id}' data-p='{p:.6g}' "
            f"data-logprob='{logprob_label(token.logprob)}' "
            f"style='--tok-bg: {probability_color(p)}'>"
            f"{_visible(token.text)}<span class='hearth-alts' role='tooltip'>{_alternatives(token)}</span></span>"
        )
    return f"<div class='hearth-probs'>{summary}{''.join(spans)}</div>"


def logits_rows(top: Sequence[TokenLogprob]) -> list[list[Any]]:
    """Rows for the Logits table, most likely first (probability as `percent`, and the logprob)."""
    return [
        [rank, piece_label(t.text), percent(_probability(t.logprob)), logprob_label(t.logprob), t.token_id]
        for rank, t in enumerate(top, start=1)
    ]


def token_rows(ids: Sequence[int], pieces: Sequence[str]) -> list[list[Any]]:
    """Rows for the Tokens table: position, id and the piece of text each id stands for."""
    return [
        [index, token_id, piece_label(piece)]
        for index, (token_id, piece) in enumerate(zip(ids, pieces, strict=True))
    ]


def text_html(text: str) -> str:
    """The HTML view: the text as escaped paragraphs (never interpreted as markup from the model)."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


@dataclass(frozen=True)
class Segment:
    """Where the recorded tokens from index `start` on were generated: after `prompt_ids` (the exact ids the
    model read), with `before` the output box's text ahead of them. A Continue or a branch starts a new one."""

    start: int
    prompt_ids: tuple[int, ...]
    before: str


def segment_at(segments: Sequence[Segment], index: int) -> Segment | None:
    """The segment recorded token `index` belongs to (None when nothing was recorded)."""
    return next((s for s in reversed(segments) if s.start <= index), None)


@dataclass
class TextViews:
    """The sub-tab components; the owning tab streams into `raw`, `markdown` and `html`. `panel` is what
    the owning tab built beside the Probabilities view (the sampler debugger), if anything."""

    raw: gr.Textbox | None
    markdown: gr.Markdown
    html: gr.HTML
    probabilities: gr.HTML
    logits_tab: gr.Tab
    use_samplers: gr.Checkbox
    logits_button: gr.Button
    logits_table: gr.Dataframe
    tokens_tab: gr.Tab
    tokens_button: gr.Button
    tokens_table: gr.Dataframe
    panel: Any = None

    @staticmethod
    def rendered(text: str) -> tuple[str, str]:
        """Values for (markdown, html) showing `text` (raw HTML in it shown as text in both)."""
        return literal_markdown(text), text_html(text)

    def rendered_outputs(self) -> list[Component]:
        return [self.markdown, self.html]


def build_text_views(
    name: str, raw_label: str | None = None, probabilities_panel: Callable[[str], Any] | None = None
) -> TextViews:
    """Lay out the sub-tabs (with a Raw output box first when `raw_label` is given); `probabilities_panel(name)`
    builds more inside the Probabilities sub-tab, under the view (its result is `TextViews.panel`)."""
    raw = None
    with gr.Tabs(elem_id=f"{name}-views"):
        if raw_label:
            with gr.Tab("Raw", elem_id=f"{name}-tab-raw"):
                raw = gr.Textbox(label=raw_label, lines=20, max_lines=40, elem_id=f"{name}-output")
        with gr.Tab("Markdown", elem_id=f"{name}-tab-markdown"):
            markdown = gr.Markdown(elem_id=f"{name}-markdown")
        with gr.Tab("HTML", elem_id=f"{name}-tab-html"):
            rendered_html = gr.HTML(elem_id=f"{name}-html")
        with gr.Tab("Logits", elem_id=f"{name}-tab-logits") as logits_tab:
            with gr.Row():
                use_samplers = gr.Checkbox(label="Use samplers", value=True, elem_id=f"{name}-use-samplers")
                logits_button = gr.Button("Get next-token probabilities", elem_id=f"{name}-logits-button")
            logits_table = gr.Dataframe(headers=LOGITS_HEADERS, interactive=False, elem_id=f"{name}-logits")
        with gr.Tab("Tokens", elem_id=f"{name}-tab-tokens") as tokens_tab:
            tokens_button = gr.Button("Tokenize", elem_id=f"{name}-tokens-button")
            tokens_table = gr.Dataframe(headers=TOKENS_HEADERS, interactive=False, elem_id=f"{name}-tokens")
        with gr.Tab("Probabilities", elem_id=f"{name}-tab-probabilities"):
            probabilities = gr.HTML(
                EMPTY_PROBABILITIES,
                css_template=PROBABILITIES_CSS,
                js_on_load=PROBABILITIES_JS,
                elem_id=f"{name}-probabilities",
            )
            panel = probabilities_panel(name) if probabilities_panel else None
    return TextViews(
        raw,
        markdown,
        rendered_html,
        probabilities,
        logits_tab,
        use_samplers,
        logits_button,
        logits_table,
        tokens_tab,
        tokens_button,
        tokens_table,
        panel,
    )


def wire_text_views(views: TextViews, ctx: UIContext, text_inputs: Sequence[Component]) -> None:
    """Logits and Tokens read the concatenation of `text_inputs` (e.g. prompt + output)."""
    core = ctx.app.core
    n_texts = len(text_inputs)

    def logits(*values: Any) -> list[list[Any]]:
        texts, use_samplers, params = values[:n_texts], values[n_texts], values[n_texts + 1]
        with toasts():
            top = core.top_tokens(
                "".join(t or "" for t in texts),
                LOGITS_COUNT,
                bool(use_samplers),
                sampling_params(params),
                add_bos=bool(params.get("add_bos_token", True)),
            )
        if top and all(t.token_id < 0 for t in top):
            gr.Info("A remote model: these are the server's top logprobs (its own numbers, token ids unknown), "
                    "not exact logits.")
        return logits_rows(top)

    def tokens(*values: Any) -> list[list[Any]]:
        texts, params = values[:n_texts], values[n_texts]
        with toasts():
            ids = core.tokenize("".join(t or "" for t in texts), bool(params.get("add_bos_token", True)))
            return token_rows(ids, [core.detokenize([i]) for i in ids])

    logits_inputs = [*text_inputs, views.use_samplers, ctx.params]
    for trigger in (views.logits_button.click, views.logits_tab.select):
        trigger(logits, logits_inputs, views.logits_table)
    for trigger in (views.tokens_button.click, views.tokens_tab.select):
        trigger(tokens, [*text_inputs, ctx.params], views.tokens_table)


def stream_to_views(
    ctx: UIContext,
    cancels: CancelBoard,
    request: gr.Request | None,
    *,
    prompt: str,
    before: str,
    params: dict[str, Any],
    keep: Sequence[TokenLogprob] = (),
    record: bool = True,
    segments: Sequence[Segment] = (),
    prompt_ids: Sequence[int] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Generate from `prompt` (or from exactly `prompt_ids`), showing ``before + generated``; yields values
    for (text box, markdown, html, recorded-tokens state, probabilities view, segments state). The
    probabilities (appended to `keep` and `segments`, for Continue and branches) are rendered once, at the end."""
    core = ctx.app.core
    with toasts(), cancels.running(request) as cancel:
        gen_request = generation_request(params, prompt, logprobs=LOGPROBS if record else 0)
        if prompt_ids is not None:
            gen_request = gen_request.model_copy(update={"prompt": None, "prompt_ids": list(prompt_ids)})
        read = prompt_ids if prompt_ids is not None else core.tokenize(prompt, gen_request.add_bos_token)
        segment = Segment(len(keep), tuple(read), before)
        for step in throttle(stream_text(core, gen_request, cancel)):
            text = before + step.text
            if step.finished is None:
                yield text, *TextViews.rendered(text), gr.skip(), gr.skip(), gr.skip()
            else:
                tokens = [*keep, *step.tokens]
                yield text, *TextViews.rendered(text), tokens, probability_html(tokens), [*segments, segment]


def token_count_label(ctx: UIContext, text: str) -> str:
    """The live count under a prompt box (nothing to count with while no model is loaded)."""
    if ctx.app.models.model is None:
        return "*no model loaded*"
    with toasts():
        return f"{len(ctx.app.core.tokenize(text or '', add_bos=False))} tokens"


def receive_transfer(target: str) -> Any:
    """A ``ctx.prompt_transfer.change`` handler copying the sent text when it is meant for `target`."""

    def receive(transfer: dict[str, Any] | None) -> Any:
        if transfer and transfer.get("target") == target:
            return str(transfer.get("text") or "")
        return gr.skip()

    return receive


def wire_prompt_box(ctx: UIContext, box: gr.Textbox, token_count: gr.Markdown, target: str) -> None:
    """A prompt box's live token count, and the texts the Parameters tab sends to `target` landing in it."""
    box.change(
        lambda text: token_count_label(ctx, text),
        box,
        token_count,
        trigger_mode="always_last",
        show_progress="hidden",
    )
    ctx.prompt_transfer.change(receive_transfer(target), ctx.prompt_transfer, box)


def refresh_when_shown(
    block: Component, fn: Callable[..., Any], outputs: Sequence[Component], inputs: Sequence[Component] = ()
) -> None:
    """Run `fn` when the page loads and each time a tab holding `block` is selected, so what `outputs` show
    is read then, not when the server started. On page load `fn` gets None for each input (a fresh page
    holds only start values); a tab selection passes the inputs' current values."""
    gr.on(None, lambda: fn(*[None] * len(inputs)), None, list(outputs), show_progress="hidden")
    selects = [tab.select for tab in enclosing_tabs(block)]
    if selects:
        gr.on(selects, fn, list(inputs), list(outputs), show_progress="hidden")


def build_model_notice(ctx: UIContext, name: str) -> gr.Markdown:
    """A notice shown while no model is loaded (checked on page load and when the tab is selected)."""
    notice = gr.Markdown(
        NO_MODEL_NOTICE, visible=ctx.app.models.model is None, elem_id=f"{name}-no-model", elem_classes="hearth-notice"
    )
    refresh_when_shown(notice, lambda: gr.update(visible=ctx.app.models.model is None), [notice])
    return notice


def check_ready(ctx: UIContext, params: dict[str, Any]) -> None:
    """Before a generation (an event with no outputs, so a refusal is one toast and every box keeps its
    text): a model is loaded and the settings make a valid request."""
    if ctx.app.models.model is None:
        raise gr.Error(NO_MODEL, print_exception=False)
    generation_request(params, "")
