"""The shared output views (Probabilities colouring, Logits and Tokens tables, HTML view) and the
streaming helpers (Stop board, throttle), checked without a browser; the last tests drive the tiny model."""

from __future__ import annotations

import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from webui.events import TokenLogprob
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.ui.markup import literal_markdown
from webui.ui.streaming import CancelBoard, stream_text, throttle
from webui.ui.textviews import (
    EMPTY_PROBABILITIES,
    TextViews,
    logits_rows,
    percent,
    piece_label,
    probability_color,
    probability_html,
    text_html,
    token_rows,
)


def tok(token_id: int, text: str, p: float, top: list[tuple[int, str, float]] | None = None) -> TokenLogprob:
    return TokenLogprob(token_id, text, math.log(p), [(i, t, math.log(q)) for i, t, q in (top or [])])


def test_probability_colour_runs_red_to_green() -> None:
    assert probability_color(0.0) == "hsl(0, 75%, 78%)"
    assert probability_color(0.5) == "hsl(60, 75%, 78%)"
    assert probability_color(1.0) == "hsl(120, 75%, 78%)"
    assert probability_color(1.7) == probability_color(1.0)  # clamped


def test_probability_html_shades_each_token_and_lists_alternatives() -> None:
    tokens = [
        tok(5, "Hello", 0.9, [(5, "Hello", 0.9), (6, "Hi", 0.05)]),
        tok(7, " <b>", 0.25, [(8, " world", 0.5), (7, " <b>", 0.25)]),
        tok(9, "\n", 1.0),
    ]
    out = probability_html(tokens)
    spans = re.findall(r"<span class='hearth-tok'[^>]*data-p='([\d.]+)'[^>]*style='--tok-bg: ([^']+)'>", out)
    assert spans == [
        ("0.9", probability_color(0.9)),
        ("0.25", probability_color(0.25)),
        ("1", probability_color(1.0)),
    ]
    # model text is escaped, never markup; the chosen token leads its tooltip, the alternatives follow once
    assert " &lt;b&gt;" in out and " <b>" not in out
    assert "&#x27; &lt;b&gt;&#x27;  25.0%  logprob -1.386</span>\n&#x27; world&#x27;  50.0%  logprob -0.693" in out
    assert out.count("&#x27;Hello&#x27;  90.0%") == 1 and "&#x27;Hi&#x27;  5.0%  logprob -2.996" in out
    assert "↵\n" in out  # a newline token stays visible
    assert "3 tokens · mean probability 71.7% · least likely &#x27; &lt;b&gt;&#x27; (25.0%, logprob -1.386)" in out


def test_rare_tokens_keep_their_digits() -> None:
    """Issue 14: every rare token used to read "0.0%"; they differ by orders of magnitude."""
    assert [percent(p) for p in (1.0, 0.25, 0.05, 0.01, 0.0042, 0.00042, 0.000042, 3.14e-7, 0.0)] == [
        "100.0%", "25.0%", "5.0%", "1.0%", "0.42%", "0.042%", "0.0042%", "3.1e-05%", "0%",
    ]
    rare = [tok(3, "a", 0.9, [(3, "a", 0.9), (4, "b", 2e-4), (5, "c", 3e-9)]), tok(4, "b", 2e-4)]
    out = probability_html(rare)
    assert "&#x27;b&#x27;  0.02%  logprob -8.517" in out and "&#x27;c&#x27;  3.0e-07%  logprob -19.625" in out
    assert "least likely &#x27;b&#x27; (0.02%, logprob -8.517)" in out
    assert " 0.0%" not in out and "data-p='0.0002'" in out
    rows = logits_rows([tok(11, " the", 0.5), tok(12, "x", 1e-6), TokenLogprob(13, "y", -math.inf, [])])
    assert [r[2:4] for r in rows] == [["50.0%", "-0.693"], ["1.0e-04%", "-13.816"], ["0%", "-inf"]]


def test_probability_html_without_tokens_explains_how_to_get_them() -> None:
    assert probability_html([]) == EMPTY_PROBABILITIES


def test_logits_rows_rank_tokens_with_probabilities() -> None:
    rows = logits_rows([tok(11, " the", 0.5), tok(12, "\n", 0.125)])
    assert rows == [[1, "' the'", "50.0%", "-0.693", 11], [2, "'\\n'", "12.5%", "-2.079", 12]]


def test_token_rows_show_ids_and_unambiguous_pieces() -> None:
    assert token_rows([1, 450, 29871], ["", " The", "\t"]) == [
        [0, 1, "''"],
        [1, 450, "' The'"],
        [2, 29871, "'\\t'"],
    ]
    assert piece_label("a'b") == '"a\'b"'


def test_text_html_escapes_and_keeps_paragraphs() -> None:
    assert (
        text_html("one\ntwo\n\n<script>x</script>")
        == "<p>one<br>two</p><p>&lt;script&gt;x&lt;/script&gt;</p>"
    )
    assert text_html("") == ""


def test_throttle_skips_intermediate_items_but_never_the_last() -> None:
    assert list(throttle(range(1000), interval=60)) == [0, 999]
    assert list(throttle([1, 2, 3], interval=0)) == [1, 2, 3]
    assert list(throttle([], interval=1)) == []


def test_cancel_board_stops_only_its_own_session() -> None:
    class Req:
        def __init__(self, session_hash: str) -> None:
            self.session_hash = session_hash

    board = CancelBoard()
    board.stop(Req("a"))  # nothing running: nothing to do
    with board.running(Req("a")) as a, board.running(Req("b")) as b:
        board.stop(Req("a"))
        assert a.is_set() and not b.is_set()
    assert b.is_set()  # a finished generation's event is set: a closed stream cannot keep running
    with board.running(Req("a")) as again:
        assert not again.is_set()  # a new generation gets a fresh event


@pytest.fixture
def core(manager: ModelManager) -> GenerationCore:
    manager.load("tiny-llama.gguf")
    return GenerationCore(manager)


def test_stream_text_collects_logprobs_and_stops_on_cancel(core: GenerationCore) -> None:
    request = GenerationRequest(prompt="Once upon", max_new_tokens=6, logprobs=3, sampling={"seed": 1})
    steps = list(stream_text(core, request, threading.Event()))
    last = steps[-1]
    assert last.finished is not None and all(s.finished is None for s in steps[:-1])
    assert len(last.tokens) == len(last.finished.token_ids) == 6
    assert all(len(t.top) == 3 and t.logprob <= 0 for t in last.tokens)
    assert last.text == last.finished.text

    long = GenerationRequest(prompt="Once upon", max_new_tokens=100_000, sampling={"ban_eos_token": True})
    cancel = threading.Event()
    started = time.monotonic()
    steps = []
    for step in stream_text(core, long, cancel):
        steps.append(step)
        if len(steps) == 3:
            cancel.set()
    assert steps[-1].finished is not None and steps[-1].finished.reason == "cancelled"
    assert len(steps) < 10
    assert time.monotonic() - started < 30


def test_stream_steps_on_any_thread_and_closing_it_cancels(core: GenerationCore) -> None:
    """Gradio steps a generator callback on whichever worker thread is free, and closes it when the page
    goes away: the core's stream must work from alternating threads and stop generating when closed."""
    request = GenerationRequest(prompt="Once upon", max_new_tokens=100_000, sampling={"ban_eos_token": True})
    cancel = threading.Event()
    steps = stream_text(core, request, cancel)
    with ThreadPoolExecutor(max_workers=1) as first, ThreadPoolExecutor(max_workers=1) as second:
        texts = [pool.submit(next, steps).result().text for pool in (first, second, first, second)]
        second.submit(steps.close).result()  # the page went away
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert cancel.is_set()
    deadline = time.monotonic() + 30
    while core.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not core.busy  # the model is free again: the next request runs at once
    done = core.generate(GenerationRequest(prompt="Once upon", max_new_tokens=2))
    assert done.usage.completion_tokens == 2


def test_markdown_view_shows_raw_html_literally_and_keeps_formatting() -> None:
    """The Markdown view's value: tags and entities escaped outside code, code left to the renderer."""
    markdown, rendered = TextViews.rendered(
        "<think>plan</think> **Answer**: a<b then b>a\n\n`std::vector<int>` and std::vector<int> v; &lt;\n\n"
        "```cpp\nstd::vector<int> v; // <b>\n```\n"
    )
    assert markdown == (
        "&lt;think>plan&lt;/think> **Answer**: a&lt;b then b>a\n\n"
        "`std::vector<int>` and std::vector&lt;int> v; &amp;lt;\n\n"
        "```cpp\nstd::vector<int> v; // <b>\n```\n"
    )
    assert "&lt;think&gt;plan&lt;/think&gt;" in rendered and "std::vector&lt;int&gt; v;" in rendered


def test_literal_markdown_leaves_indented_code_and_list_items_apart() -> None:
    assert literal_markdown("text\n\n    <kept> in code\n") == "text\n\n    <kept> in code\n"
    assert literal_markdown("- item\n\n    <i>more</i>\n") == "- item\n\n    &lt;i>more&lt;/i>\n"
    assert literal_markdown("AT&T > 2 < 3") == "AT&T > 2 < 3"  # nothing that could become markup
