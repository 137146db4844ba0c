"""`parallel` slots on the llama.cpp loaders: concurrent requests decoded together, each as it would be alone.

The real tiny GGUF (tests/model_factory.py) through the real generation core; requests run on threads as
the UI and the API run them. "Together" is proven by the batcher's own counts (a decode that served four
lanes), "as alone" by comparing greedy tokens and logprobs with the same request run alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from webui.errors import LoaderError
from webui.events import Finished, TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.sampling import SamplingParams

PROMPTS = ["Once upon a time", "The quick brown fox", "In the beginning", "Hello world, this is"]
GREEDY = SamplingParams(temperature=0, ban_eos_token=True)


def request(prompt: str, n: int = 24, **fields) -> GenerationRequest:
    sampling = fields.pop("sampling", GREEDY)
    return GenerationRequest(prompt=prompt, max_new_tokens=n, sampling=sampling, **fields)


@pytest.fixture
def core(manager: ModelManager) -> Iterator[GenerationCore]:
    core = GenerationCore(manager)
    yield core
    core.close()


def together(core: GenerationCore, requests: list[GenerationRequest]) -> list[Finished]:
    """Run `requests` from one thread each, all started before any can finish."""
    results: list[Finished | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = core.generate(requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("loader", ["llama.cpp", "llamacpp_HF"])
def test_four_requests_together_give_what_each_gives_alone(manager: ModelManager, core: GenerationCore, loader: str):
    manager.load("tiny-llama.gguf", loader, {"parallel": 1})
    alone = [core.generate(request(p)).token_ids for p in PROMPTS]
    assert len({tuple(a) for a in alone}) == len(PROMPTS)
    manager.load("tiny-llama.gguf", loader, {"parallel": 4})
    batcher = manager.model.stepper
    results = together(core, [request(p) for p in PROMPTS])
    assert [r.token_ids for r in results] == alone
    assert batcher.widest == 4  # one decode held a token of each of the four requests
    generated = sum(len(a) for a in alone)
    assert batcher.steps < generated / 2  # batched: far fewer decodes than tokens generated


def test_logprobs_and_a_scored_prompt_in_a_lane_match_alone(manager: ModelManager, core: GenerationCore):
    """A scored prompt takes the context alone (logits of every token) while other lanes wait, then rejoins."""
    scored = request(PROMPTS[0], 8, logprobs=3, prompt_logprobs=2)
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 1})
    expected = list(core.stream(scored))
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 3})
    results: dict[int, list] = {}

    def run(i: int, req: GenerationRequest) -> None:
        results[i] = list(core.stream(req))

    threads = [threading.Thread(target=run, args=(0, scored)),
               *(threading.Thread(target=run, args=(i, request(p, 40))) for i, p in enumerate(PROMPTS[1:3], 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    def numbers(events: list) -> list:
        out = []
        for event in events:
            for lp in getattr(event, "logprobs", None) or getattr(event, "entries", None) or []:
                out.append((lp.token_id, lp.logprob))
        return out

    got, want = numbers(results[0]), numbers(expected)
    assert [t for t, _ in got] == [t for t, _ in want] and want
    # batches of other sizes take other kernel paths: the same numbers to float rounding
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want, strict=True)) < 1e-3
    assert results[0][-1].token_ids == expected[-1].token_ids


def test_cfg_in_lanes_matches_alone(manager: ModelManager, core: GenerationCore):
    """CFG's negative prompt runs on a second context per lane: two guided requests side by side."""
    guided = [request(p, 16, sampling=SamplingParams(temperature=0, ban_eos_token=True, guidance_scale=1.5,
                                                     negative_prompt="bad"))
              for p in PROMPTS[:2]]
    manager.load("tiny-llama.gguf", "llamacpp_HF", {"parallel": 1})
    alone = [core.generate(r).token_ids for r in guided]
    manager.load("tiny-llama.gguf", "llamacpp_HF", {"parallel": 2})
    assert [r.token_ids for r in together(core, guided)] == alone


def test_a_new_request_takes_the_slot_holding_its_prefix(manager: ModelManager, core: GenerationCore):
    """As llama-server: of the free slots, the one whose cached tokens share the longest prefix, so a chat's
    next turn reads only its new tokens whichever slot it had."""
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 2})
    model = manager.model
    prompts = [model.tokenize(p) for p in PROMPTS[:2]]
    for turn in range(2):  # the second turn of each chat, in the other order: each finds its own slot
        order = prompts if turn == 0 else prompts[::-1]
        first = together(core, [GenerationRequest(prompt_ids=ids, max_new_tokens=8, sampling=GREEDY) for ids in order])
        extra = model.tokenize(" and then", add_bos=False)
        before = model.evaluated_tokens
        follow = [*order[0], *first[0].token_ids, *extra]
        assert core.generate(GenerationRequest(prompt_ids=follow, max_new_tokens=1, sampling=GREEDY)).reason == "length"
        assert model.evaluated_tokens - before <= len(extra) + 1  # the reply's last token and what follows


def test_a_cancelled_request_frees_its_slot_for_the_next_at_once(manager: ModelManager, core: GenerationCore):
    """parallel 2: two long requests fill the slots and a third waits; cancelling one lets the third start
    within a decode step or two, while the other long one still runs."""
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 2, "n_ctx": 4096})
    batcher = manager.model.stepper
    cancels = {name: threading.Event() for name in "abc"}
    flowing = {name: threading.Event() for name in "abc"}
    done = {name: threading.Event() for name in "abc"}
    finals: dict[str, Finished] = {}
    first_step: dict[str, int] = {}

    def sink_for(name: str) -> Callable:
        def sink(event: object) -> None:  # on the model worker thread, as each event is made
            if isinstance(event, TextChunk) and name not in first_step:
                first_step[name] = batcher.steps
                flowing[name].set()
            if isinstance(event, (Finished, BaseException)):
                finals[name] = event  # type: ignore[assignment]
                done[name].set()
        return sink

    for name in "ab":
        core.start(request(name.upper(), 3000), cancels[name], sink_for(name))
    assert flowing["a"].wait(30) and flowing["b"].wait(30)
    core.start(request("C", 4), cancels["c"], sink_for("c"))
    assert core.live_requests == 3 and "c" not in first_step  # c waits: both slots are taken
    cancel_step = batcher.steps
    cancels["a"].set()
    assert done["c"].wait(60)
    assert not done["b"].is_set()  # b was still generating when c had finished
    cancels["b"].set()
    assert done["a"].wait(30) and done["b"].wait(30)
    assert finals["a"].reason == "cancelled" and finals["b"].reason == "cancelled"
    assert finals["c"].reason == "length"
    assert first_step["c"] - cancel_step <= 3  # c's prompt and first token right after the cancel


def test_inspections_run_beside_a_long_generation(manager: ModelManager, core: GenerationCore):
    """The Notebook's next-token probabilities, /v1/internal/logits and the sampler debugger take a free slot
    at once instead of waiting for the generations in progress to end, and read what they read alone."""
    from webui.sampling.trace import sampler_trace

    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 2, "n_ctx": 4096})
    alone = core.top_tokens(PROMPTS[1], 5)
    traced_alone = sampler_trace(core, PROMPTS[2], sampling=SamplingParams(top_k=5))
    batcher = manager.model.stepper
    cancel, flowing, done = threading.Event(), threading.Event(), threading.Event()

    def sink(event: object) -> None:
        if isinstance(event, TextChunk):
            flowing.set()
        if isinstance(event, (Finished, BaseException)):
            done.set()

    core.start(request("A", 3000), cancel, sink)
    try:
        assert flowing.wait(30)
        before = batcher.steps
        beside = core.top_tokens(PROMPTS[1], 5)
        traced = sampler_trace(core, PROMPTS[2], sampling=SamplingParams(top_k=5))
        assert not done.is_set(), "the inspections waited for the generation to end"
        assert batcher.steps - before < 200 and batcher.widest == 2  # shared a decode with the generation
    finally:
        cancel.set()
    assert done.wait(30)
    assert [t.token_id for t in beside] == [t.token_id for t in alone]
    assert all(abs(a.logprob - b.logprob) < 1e-3 for a, b in zip(beside, alone, strict=True))
    assert [c.token_id for c in traced.candidates] == [c.token_id for c in traced_alone.candidates]

def test_sixteen_requests_on_four_slots_all_complete_none_crossed(manager: ModelManager, core: GenerationCore):
    prompts = [f"{p} {i}" for i in range(4) for p in PROMPTS]
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 1})
    alone = [core.generate(request(p, 12)).token_ids for p in prompts]
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 4})
    results = together(core, [request(p, 12) for p in prompts])
    assert [r.token_ids for r in results] == alone
    assert all(r.reason == "length" for r in results)


def test_a_load_waits_for_the_running_lanes_then_the_queue_goes_on(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 2})
    running = threading.Event()
    finals: list[Finished] = []

    def long_one() -> None:
        for event in core.stream(request("A", 200)):
            running.set()
            if isinstance(event, Finished):
                finals.append(event)

    thread = threading.Thread(target=long_one)
    thread.start()
    running.wait(30)
    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 1})  # waits for the lane to end
    thread.join(30)
    assert finals and finals[0].reason == "length" and len(finals[0].token_ids) == 200
    assert manager.model.parallel == 1
    assert core.generate(request("B", 4)).reason == "length"


@pytest.mark.parametrize("value", [0, -1, 65])
def test_parallel_out_of_range_is_refused_and_keeps_the_model(manager: ModelManager, value: int):
    manager.load("tiny-llama.gguf", "llama.cpp")
    with pytest.raises(LoaderError, match="parallel"):
        manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": value})
    assert manager.model is not None


def test_each_slot_has_the_whole_context(manager: ModelManager, core: GenerationCore):
    from tests.test_loader_contract import assert_follows_the_model_contract

    manager.load("tiny-llama.gguf", "llama.cpp", {"parallel": 3, "n_ctx": 512})
    assert manager.model.n_ctx == 512
    assert_follows_the_model_contract(manager.model)  # outside a lane: the first slot, as with parallel 1
    long = " ".join(["word"] * 400)
    results = together(core, [request(long, 8), request(long + " more", 8), request("short", 8)])
    assert all(r.reason == "length" for r in results)


def test_memory_estimate_counts_every_slot(models_dir: Path):
    from webui.memory_estimate import estimate

    one = estimate(models_dir / "tiny-llama.gguf", "llama.cpp", {"n_ctx": 1024})
    four = estimate(models_dir / "tiny-llama.gguf", "llama.cpp", {"n_ctx": 1024, "parallel": 4})
    assert four.kv_cache == 4 * one.kv_cache > 0


def test_sixteen_streaming_api_clients_on_four_slots(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Through the API as frontends call it: 16 streams at once on `--parallel 4`, each its own full reply."""
    from tests.test_api_concurrency import run_async
    from tests.test_api_server import serve_api

    prompts = [f"{p} {i}" for i in range(4) for p in PROMPTS]

    async def stream(client: httpx.AsyncClient, prompt: str) -> tuple[str, int]:
        body = {"prompt": prompt, "max_tokens": 16, "stream": True, "temperature": 0, "ban_eos_token": True}
        text, chunks = "", 0
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    text += choice["text"]
                    chunks += choice.get("finish_reason") == "length"
        return text, chunks

    async def run(base: str, concurrent: bool) -> list[tuple[str, int]]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            if concurrent:
                return list(await asyncio.gather(*(stream(client, p) for p in prompts)))
            return [await stream(client, p) for p in prompts]

    user_data = tmp_path_factory.mktemp("user_data")
    with serve_api(models_dir, user_data, params={"parallel": 1}) as served:
        alone = run_async(run(served.base, False))
    with serve_api(models_dir, user_data, params={"parallel": 4}) as served:
        both = run_async(run(served.base, True))
        assert served.app.models.model.stepper.widest == 4
    assert len({text for text, _ in alone}) == len(prompts)
    assert both == alone and all(finished == 1 for _, finished in both)
