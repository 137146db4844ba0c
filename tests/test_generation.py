"""The generation core on real tiny models: both engines, stop strings, truncation, cancel, cache reuse."""

from __future__ import annotations

import threading
import time

import pytest

from webui.generation import Finished, GenerationCore, GenerationRequest, TextChunk, fit_context
from webui.models import ModelManager
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False)
PROMPT = "Once upon a time there was a little village"


def run(core: GenerationCore, **kwargs) -> tuple[list[TextChunk], Finished]:
    request = GenerationRequest(**({"sampling": GREEDY} | kwargs))
    events = list(core.stream(request))
    return [e for e in events if isinstance(e, TextChunk)], events[-1]


@pytest.fixture
def core(manager: ModelManager) -> GenerationCore:
    return GenerationCore(manager)


def test_same_weights_same_greedy_tokens_on_both_engines(manager: ModelManager, core: GenerationCore):
    """The HF folder and the F32 GGUF hold identical weights and tokenizer: greedy output must agree."""
    outputs = {}
    for name in ("tiny-llama", "tiny-llama.gguf"):
        manager.load(name)
        ids = manager.require().tokenize(PROMPT)
        _, done = run(core, prompt_ids=ids, max_new_tokens=24, sampling=SamplingParams(do_sample=False, ban_eos_token=True))
        text_done = run(core, prompt=PROMPT, max_new_tokens=24, sampling=SamplingParams(do_sample=False, ban_eos_token=True))[1]
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
def test_stop_string_split_across_tokens_never_leaks(manager: ModelManager, core: GenerationCore, model_name: str):
    manager.load(model_name)
    model = manager.require()
    full = run(core, prompt=PROMPT, max_new_tokens=30, sampling=SamplingParams(do_sample=False, ban_eos_token=True))[1]
    # Pick a stop string that straddles a token boundary: the end of token 4 and the start of token 5.
    pieces = [model.detokenize(full.token_ids[:i]) for i in range(1, len(full.token_ids) + 1)]
    boundary = len(pieces[4])
    stop = full.text[boundary - 2 : boundary + 2]
    assert len(stop) == 4
    chunks, done = run(core, prompt=PROMPT, max_new_tokens=30, stop=[stop], sampling=SamplingParams(do_sample=False, ban_eos_token=True))
    streamed = "".join(c.text for c in chunks)
    expected = full.text[: full.text.index(stop)]
    assert done.reason == "stop" and done.stop_string == stop
    assert streamed == done.text == expected
    assert stop not in streamed


def test_prompt_longer_than_context_is_truncated_from_the_left(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf", params={"n_ctx": 128})
    n_ctx = model.n_ctx  # llama.cpp rounds the context up (to 256 here)
    long_prompt = " ".join(["the quick brown fox"] * 200)
    n_prompt = len(model.tokenize(long_prompt))
    assert n_prompt > n_ctx
    chunks, done = run(core, prompt=long_prompt, max_new_tokens=16, sampling=SamplingParams(do_sample=False, ban_eos_token=True))
    assert done.reason == "length" and done.usage.completion_tokens == 16
    assert done.usage.prompt_tokens == n_ctx - 16
    assert done.usage.truncated_tokens == n_prompt - (n_ctx - 16)


def test_fit_context_keeps_bos():
    ids = [1] + list(range(10, 30))
    kept, dropped = fit_context(ids, n_ctx=16, truncation_length=0, max_new_tokens=6, bos=1)
    assert kept == [1] + list(range(21, 30)) and dropped == 11
    assert fit_context([5, 6], 16, 0, 4, 1) == ([5, 6], 0)
    # a reply budget past half the context keeps the prompt (or its newest half) instead of nearly nothing
    assert fit_context([1, 7, 8], 16, 0, 5000, 1) == ([1, 7, 8], 0)
    kept, dropped = fit_context(ids, n_ctx=16, truncation_length=0, max_new_tokens=100, bos=1)
    assert kept == [1] + list(range(23, 30)) and dropped == 13  # 8 tokens: half of 16


def test_truncation_length_budget(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf", params={"n_ctx": 512})
    _, done = run(core, prompt=" ".join(["hello world"] * 60), max_new_tokens=8, truncation_length=64)
    assert done.usage.prompt_tokens == 64 - 8


def test_cancel_from_another_thread(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    cancel = threading.Event()
    request = GenerationRequest(prompt=PROMPT, max_new_tokens=100_000, sampling=SamplingParams(ban_eos_token=True, seed=1))
    seen = []
    for event in core.stream(request, cancel):
        if isinstance(event, TextChunk):
            seen.append(event)
            if len(seen) == 5:
                threading.Timer(0.01, cancel.set).start()
        else:
            done = event
    assert done.reason == "cancelled"
    assert 5 <= done.usage.completion_tokens < 1000


def test_stop_all_cancels_running_generation(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    result = {}

    def worker():
        request = GenerationRequest(prompt=PROMPT, max_new_tokens=100_000, sampling=SamplingParams(ban_eos_token=True))
        result["done"] = core.generate(request)

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.3)
    assert core.stop_all() >= 1
    thread.join(10)
    assert result["done"].reason == "cancelled"


@pytest.mark.parametrize("model_name", ["tiny-llama.gguf", "tiny-llama"])
def test_second_turn_only_evaluates_new_tokens(manager: ModelManager, core: GenerationCore, model_name: str):
    model = manager.load(model_name)
    history = "User: Tell me a story about a dragon. " * 8 + "\nAssistant:"
    first = run(core, prompt=history, max_new_tokens=10, sampling=SamplingParams(do_sample=False, ban_eos_token=True))[1]
    before = model.evaluated_tokens
    turn2 = history + first.text + "\nUser: And then?\nAssistant:"
    second = run(core, prompt=turn2, max_new_tokens=10, sampling=SamplingParams(do_sample=False, ban_eos_token=True))[1]
    evaluated = model.evaluated_tokens - before
    # The reply's text may re-tokenize differently from the sampled ids (random weights write odd bytes),
    # so the cache is only promised up to the first turn's prompt: everything after it, not the history.
    after_history = second.usage.prompt_tokens - first.usage.prompt_tokens
    assert first.usage.prompt_tokens > 60
    assert evaluated <= after_history + 1 + second.usage.completion_tokens


def test_requests_run_one_at_a_time_in_arrival_order(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf")
    order: list[str] = []
    tokenize = model.tokenize

    def recording_tokenize(text: str, add_bos: bool = True) -> list[int]:  # runs on the worker, in run order
        if text.startswith(PROMPT):
            order.append(text[len(PROMPT):].strip())
        return tokenize(text, add_bos)

    model.tokenize = recording_tokenize  # type: ignore[method-assign]

    def worker(i: int):
        request = GenerationRequest(prompt=f"{PROMPT} {i}", max_new_tokens=8, sampling=SamplingParams(do_sample=False, ban_eos_token=True))
        core.generate(request)

    threads = []
    manager.lock.acquire()  # hold the model so every request lines up behind it
    try:
        for i in range(4):
            thread = threading.Thread(target=worker, args=(i,))
            thread.start()
            threads.append(thread)
            while core.pending < i + 1:
                time.sleep(0.01)
    finally:
        manager.lock.release()
    for thread in threads:
        thread.join(30)
    assert order == ["0", "1", "2", "3"]


def test_eos_ends_generation_unless_banned(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf")
    eos = next(iter(model.eos_token_ids))
    bias = SamplingParams(do_sample=False, logit_bias={eos: 100.0})
    _, done = run(core, prompt=PROMPT, max_new_tokens=10, sampling=bias)
    assert done.reason == "stop" and done.usage.completion_tokens == 1 and done.text == ""
    banned = bias.model_copy(update={"ban_eos_token": True})
    _, done = run(core, prompt=PROMPT, max_new_tokens=10, sampling=banned)
    assert done.reason == "length" and eos not in done.token_ids


def test_request_validation():
    with pytest.raises(ValueError, match="exactly one of prompt or prompt_ids"):
        GenerationRequest()
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationRequest(prompt="x", max_new_tokens=-1)
    assert GenerationRequest(prompt="x", max_new_tokens=0).max_new_tokens == 0  # read (and score) the prompt only


def test_out_of_vocab_ids_are_a_clear_error(manager: ModelManager, core: GenerationCore):
    from webui.generation import GenerationError

    manager.load("tiny-llama.gguf")
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        list(core.stream(GenerationRequest(prompt_ids=[1, 10_000_000])))
