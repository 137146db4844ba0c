"""The generation core. Its own rules (stop strings, banned strings, EOS, truncation, cancel, the FIFO queue)
run on the scripted fake model (tests/scripted_loader.py, loaded through the real loader hook), fast and
exact, on both token sources: Hearth's sampler pipeline and a backend's native generate. Engine parity
(both engines agree, prefix-cache reuse, llama.cpp's context rounding, a cancelled native loop) runs on
the real tiny models."""

from __future__ import annotations

import threading
import time

import pytest

from tests.scripted_loader import EOS
from webui.errors import GenerationError
from webui.events import Finished, TextChunk
from webui.generation import GenerationCore, GenerationRequest, fit_context
from webui.models import ModelManager
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False)
ENDLESS = SamplingParams(do_sample=False, ban_eos_token=True)
PROMPT = "Once upon a time there was a little village"
HELLO = ["Hel", "lo", " wor", "ld", "!"]  # "Hello world!", token by token


def run(core: GenerationCore, **kwargs) -> tuple[list[TextChunk], Finished]:
    request = GenerationRequest(**({"sampling": GREEDY} | kwargs))
    events = list(core.stream(request))
    return [e for e in events if isinstance(e, TextChunk)], events[-1]


def streamed(chunks: list[TextChunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.fixture
def core(manager: ModelManager) -> GenerationCore:
    return GenerationCore(manager)


@pytest.fixture
def fake(scripted_manager: ModelManager) -> GenerationCore:
    """The core over the scripted model (load one with `say`)."""
    return GenerationCore(scripted_manager)


#: Both token sources: Hearth's pipeline, and the model's native generate (taken for plain greedy requests).
SOURCES = pytest.mark.parametrize("native", [False, True], ids=["pipeline", "native"])


# -- stop strings -----------------------------------------------------------------------------------
@SOURCES
def test_stop_string_split_across_tokens_never_leaks(say, fake: GenerationCore, native: bool):
    model = say(HELLO, native_greedy=native)
    chunks, done = run(fake, prompt="Say it:", max_new_tokens=10, stop=["o wo"])  # "lo" | " wor"
    assert done.reason == "stop" and done.stop_string == "o wo"
    assert streamed(chunks) == done.text == "Hell"
    assert all("o" not in c.text for c in chunks)  # the "o" of "lo" was held back, never sent
    assert model.native_runs == int(native)


@SOURCES
def test_earliest_stop_string_wins_and_an_unfinished_one_is_released(say, fake: GenerationCore, native: bool):
    say(HELLO, native_greedy=native)
    _, done = run(fake, prompt="Say it:", max_new_tokens=10, stop=["ld", "wor"])
    assert (done.text, done.stop_string) == ("Hello ", "wor")
    chunks, done = run(fake, prompt="Say it:", max_new_tokens=10, stop=["lo!", "!?"])  # held "lo", then "!"
    assert streamed(chunks) == done.text == "Hello world!" and done.reason == "stop" and done.stop_string is None


# -- banned strings ---------------------------------------------------------------------------------
def test_banned_string_across_tokens_rolls_back_to_where_it_began(say, fake: GenerationCore):
    model = say(["The", " cat", " sat", "."], ["The", " dog", " sat", "."])
    chunks, done = run(fake, prompt="Go:", max_new_tokens=10, sampling=SamplingParams(do_sample=False, banned_strings=["at s"]))
    assert streamed(chunks) == done.text == "The dog sat."  # " cat" banned where it began, then the next best
    assert all("cat" not in c.text for c in chunks) and done.reason == "stop"
    prompt = model.tokenize("Go:")
    after_the = [ids for ids in model.calls if ids == [*prompt, *model.tokenize("The", add_bos=False)]]
    assert len(after_the) == 2  # "The" -> " cat" ... rolled back -> "The" -> " dog"


# -- EOS --------------------------------------------------------------------------------------------
@SOURCES
def test_eos_ends_generation_unless_banned(say, fake: GenerationCore, native: bool):
    say(["Hi"], native_greedy=native)
    chunks, done = run(fake, prompt="Greet:", max_new_tokens=10)
    assert (done.reason, done.text, done.token_ids[-1], done.usage.completion_tokens) == ("stop", "Hi", EOS, 2)
    assert chunks[-1].token_ids == [EOS] and chunks[-1].text == ""
    _, done = run(fake, prompt="Greet:", max_new_tokens=6, sampling=ENDLESS)
    assert (done.reason, done.text) == ("length", "Hi Hi Hi ") and EOS not in done.token_ids


# -- fitting the context ----------------------------------------------------------------------------
def test_prompt_longer_than_context_is_truncated_from_the_left(say, fake: GenerationCore):
    model = say(["ok"], n_ctx=32)
    prompt = "abcdefghij" * 5  # 50 byte tokens + BOS
    _, done = run(fake, prompt=prompt, max_new_tokens=8, sampling=ENDLESS)
    assert done.reason == "length" and done.usage.completion_tokens == 8
    assert (done.usage.prompt_tokens, done.usage.truncated_tokens) == (24, 51 - 24)
    assert model.calls[0] == model.tokenize(prompt)[:1] + model.tokenize(prompt)[-23:]  # BOS kept, oldest dropped


def test_truncation_length_budget(say, fake: GenerationCore):
    model = say(["ok"], n_ctx=256)
    _, done = run(fake, prompt="hello world " * 10, max_new_tokens=8, truncation_length=64)
    assert done.usage.prompt_tokens == 64 - 8 and len(model.calls[0]) == 56


def test_a_huge_reply_budget_keeps_half_the_context_and_ends_where_it_does(say, fake: GenerationCore):
    say(["ok"], n_ctx=32)
    _, done = run(fake, prompt="x" * 40, max_new_tokens=100_000, sampling=ENDLESS)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.reason) == (16, 16, "length")


def test_fit_context_keeps_bos():
    ids = [1] + list(range(10, 30))
    kept, dropped = fit_context(ids, n_ctx=16, truncation_length=0, max_new_tokens=6, bos=1)
    assert kept == [1] + list(range(21, 30)) and dropped == 11
    assert fit_context([5, 6], 16, 0, 4, 1) == ([5, 6], 0)
    # a reply budget past half the context keeps the prompt (or its newest half) instead of nearly nothing
    assert fit_context([1, 7, 8], 16, 0, 5000, 1) == ([1, 7, 8], 0)
    kept, dropped = fit_context(ids, n_ctx=16, truncation_length=0, max_new_tokens=100, bos=1)
    assert kept == [1] + list(range(23, 30)) and dropped == 13  # 8 tokens: half of 16


# -- cancel and the queue ---------------------------------------------------------------------------
class Gate:
    """Holds the model's evaluating thread at the step where `ids` reaches `length` tokens until opened."""

    def __init__(self, length: int):
        self.length, self.reached, self.open = length, threading.Event(), threading.Event()

    def __call__(self, ids: list[int]) -> None:
        if len(ids) == self.length:
            self.reached.set()
            assert self.open.wait(30)


def collect(core: GenerationCore, request: GenerationRequest, cancel: threading.Event | None = None):
    """Consume a stream on its own thread; returns (thread, events list)."""
    events: list = []
    thread = threading.Thread(target=lambda: events.extend(core.stream(request, cancel)))
    thread.start()
    return thread, events


@SOURCES
def test_cancel_from_another_thread(say, fake: GenerationCore, native: bool):
    model = say(["Hel", "lo", " world"], native_greedy=native)
    prompt = model.tokenize("Say it:")
    model.on_logits = gate = Gate(len(prompt) + 5)  # while the sixth token is being computed
    cancel = threading.Event()
    thread, events = collect(fake, GenerationRequest(prompt="Say it:", max_new_tokens=100_000, sampling=ENDLESS), cancel)
    assert gate.reached.wait(30)
    cancel.set()
    gate.open.set()
    thread.join(30)
    done = events[-1]
    assert (done.reason, done.usage.completion_tokens, done.text) == ("cancelled", 5, "Hello world Hel")


def test_stop_all_cancels_the_running_generation_and_the_queued_ones(say, fake: GenerationCore):
    model = say(["Hel", "lo", " world"])
    prompt = model.tokenize("Say it:")
    model.on_logits = gate = Gate(len(prompt) + 3)
    request = GenerationRequest(prompt="Say it:", max_new_tokens=100_000, sampling=ENDLESS)
    running, first = collect(fake, request)
    assert gate.reached.wait(30)
    queued, second = collect(fake, request)
    while fake.pending < 2:  # the second request is queued behind the first
        time.sleep(0.01)
    assert fake.stop_all() == 2
    gate.open.set()
    running.join(30)
    queued.join(30)
    assert (first[-1].reason, first[-1].usage.completion_tokens, first[-1].text) == ("cancelled", 3, "Hello world")
    assert (second[-1].reason, second[-1].usage.completion_tokens) == ("cancelled", 0)
    assert len(model.calls) == 4  # the queued request never reached the model


def test_requests_run_one_at_a_time_in_arrival_order(say, scripted_manager: ModelManager, fake: GenerationCore):
    model = say(["ok"])
    threads = []
    scripted_manager.lock.acquire()  # hold the model so every request lines up behind it
    try:
        for i in range(4):
            request = GenerationRequest(prompt=f"request {i}:", max_new_tokens=3, sampling=ENDLESS)
            threads.append(collect(fake, request)[0])
            while fake.pending < i + 1:
                time.sleep(0.01)
    finally:
        scripted_manager.lock.release()
    for thread in threads:
        thread.join(30)
    runs = [model.detokenize(ids)[: len("request 0")] for ids in model.calls]
    assert runs == [f"request {i}" for i in range(4) for _ in range(3)]  # each whole, in arrival order


# -- validation -------------------------------------------------------------------------------------
def test_request_validation():
    with pytest.raises(ValueError, match="exactly one of prompt or prompt_ids"):
        GenerationRequest()
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationRequest(prompt="x", max_new_tokens=-1)
    assert GenerationRequest(prompt="x", max_new_tokens=0).max_new_tokens == 0  # read (and score) the prompt only


def test_out_of_vocab_ids_are_a_clear_error(say, fake: GenerationCore):
    say(["ok"])
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        list(fake.stream(GenerationRequest(prompt_ids=[0, 10_000_000])))


# -- engine parity on the real tiny models ----------------------------------------------------------
def test_same_weights_same_greedy_tokens_on_both_engines(manager: ModelManager, core: GenerationCore):
    """The HF folder and the F32 GGUF hold identical weights and tokenizer: greedy output must agree."""
    outputs = {}
    for name in ("tiny-llama", "tiny-llama.gguf"):
        manager.load(name)
        ids = manager.require().tokenize(PROMPT)
        _, done = run(core, prompt_ids=ids, max_new_tokens=24, sampling=ENDLESS)
        text_done = run(core, prompt=PROMPT, max_new_tokens=24, sampling=ENDLESS)[1]
        outputs[name] = (ids, done.token_ids, text_done.text)
    assert outputs["tiny-llama"] == outputs["tiny-llama.gguf"]
    assert len(outputs["tiny-llama"][1]) == 24


def test_native_and_hf_paths_agree_on_greedy(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    native = run(core, prompt=PROMPT, max_new_tokens=20)[1]
    manager.load("tiny-llama.gguf", loader="llamacpp_HF")
    hf = run(core, prompt=PROMPT, max_new_tokens=20)[1]
    assert native.token_ids == hf.token_ids and native.text == hf.text


@pytest.mark.parametrize("model_name", ["tiny-llama.gguf", "tiny-llama"])
def test_second_turn_only_evaluates_new_tokens(manager: ModelManager, core: GenerationCore, model_name: str):
    model = manager.load(model_name)
    history = "User: Tell me a story about a dragon. " * 8 + "\nAssistant:"
    first = run(core, prompt=history, max_new_tokens=10, sampling=ENDLESS)[1]
    before = model.evaluated_tokens
    turn2 = history + first.text + "\nUser: And then?\nAssistant:"
    second = run(core, prompt=turn2, max_new_tokens=10, sampling=ENDLESS)[1]
    evaluated = model.evaluated_tokens - before
    # The reply's text may re-tokenize differently from the sampled ids (random weights write odd bytes),
    # so the cache is only promised up to the first turn's prompt: everything after it, not the history.
    after_history = second.usage.prompt_tokens - first.usage.prompt_tokens
    assert first.usage.prompt_tokens > 60
    assert evaluated <= after_history + 1 + second.usage.completion_tokens


def test_llamacpp_rounded_context_is_the_truncation_budget(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf", params={"n_ctx": 128})
    n_ctx = model.n_ctx  # llama.cpp rounds the context up (to 256 here)
    long_prompt = " ".join(["the quick brown fox"] * 200)
    n_prompt = len(model.tokenize(long_prompt))
    assert n_prompt > n_ctx
    _, done = run(core, prompt=long_prompt, max_new_tokens=16, sampling=ENDLESS)
    assert done.reason == "length" and done.usage.completion_tokens == 16
    assert done.usage.prompt_tokens == n_ctx - 16
    assert done.usage.truncated_tokens == n_prompt - (n_ctx - 16)


def test_a_cancelled_native_generation_leaves_llamacpp_ready(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    whole = run(core, prompt=PROMPT, max_new_tokens=12, sampling=ENDLESS)[1]
    stream = core.stream(GenerationRequest(prompt=PROMPT, max_new_tokens=100_000, sampling=ENDLESS))
    for _, event in zip(range(3), stream, strict=False):
        assert isinstance(event, TextChunk)
    stream.close()  # the consumer goes away mid-generation: the native loop is cancelled and closed
    again = run(core, prompt=PROMPT, max_new_tokens=12, sampling=ENDLESS)[1]
    assert again.token_ids == whole.token_ids and again.text == whole.text


def test_eos_ends_a_native_llamacpp_generation_unless_banned(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf")
    eos = next(iter(model.eos_token_ids))
    bias = SamplingParams(do_sample=False, logit_bias={eos: 100.0})
    _, done = run(core, prompt=PROMPT, max_new_tokens=10, sampling=bias)
    assert done.reason == "stop" and done.usage.completion_tokens == 1 and done.text == ""
    banned = bias.model_copy(update={"ban_eos_token": True})
    _, done = run(core, prompt=PROMPT, max_new_tokens=10, sampling=banned)
    assert done.reason == "length" and eos not in done.token_ids
