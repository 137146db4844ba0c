"""Queueing through the API: concurrent streams without cross-talk, and a disconnect that frees the model.

The tiny GGUF is loaded with a 4096-token context so a long generation takes seconds (about 1k tokens/s
here): long enough to tell "stopped at once" from "ran to the end".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.test_api_server import API_KEY, Served, serve_api

PROMPTS = [
    "Once upon a time", "The quick brown fox", "Hello, world!", "A journey of a thousand miles",
    "Numbers: 0 1 2", "User: Tell me a story", "The model reads tokens", "Привет, как дела?",
]
GREEDY = {"temperature": 0, "ban_eos_token": True}
LONG = 4000


def run_async(coro):
    """asyncio.run on a fresh thread: Playwright's sync API may hold a running loop on the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), params={"n_ctx": 4096}, api_key=API_KEY) as s:
        yield s


def async_client(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0)


async def stream_text(client: openai.AsyncOpenAI, prompt: str) -> str:
    stream = await client.completions.create(model="", prompt=prompt, max_tokens=24, stream=True, extra_body=GREEDY)
    return "".join([chunk.choices[0].text async for chunk in stream])


def test_eight_concurrent_streams_get_their_own_text(served: Served):
    async def alone() -> list[str]:
        client = async_client(served)
        return [await stream_text(client, p) for p in PROMPTS]

    async def together() -> list[str]:
        client = async_client(served)
        return list(await asyncio.gather(*(stream_text(client, p) for p in PROMPTS)))

    expected = run_async(alone())
    assert len(set(expected)) == len(PROMPTS)
    assert run_async(together()) == expected


def wait_idle(served: Served, timeout: float = 10) -> float:
    """Seconds until no generation is running or queued."""
    start = time.perf_counter()
    while served.app.core.busy and time.perf_counter() - start < timeout:
        time.sleep(0.01)
    return time.perf_counter() - start


def test_disconnect_cancels_generation_and_frees_the_queue(served: Served):
    model = served.app.models.require()
    body = {"prompt": PROMPTS[0], "max_tokens": LONG, "stream": True, **GREEDY}
    before = model.evaluated_tokens
    with served.client() as c, c.stream("POST", "/v1/completions", json=body) as response:
        lines = response.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert sum(line.startswith("data: {") for line in got) >= 3
    assert wait_idle(served) < 2, "the generation kept running after the client left"
    spent = model.evaluated_tokens - before
    assert spent < LONG / 4, f"{spent} tokens evaluated: the generation did not stop at the disconnect"
    start = time.perf_counter()
    with served.client() as c:
        assert c.post("/v1/completions", json={"prompt": PROMPTS[1], "max_tokens": 8, **GREEDY}).status_code == 200
    assert time.perf_counter() - start < 2


def test_disconnect_while_queued_leaves_the_queue(served: Served):
    """A client that gives up while waiting behind another request never runs."""
    with served.client() as first, first.stream("POST", "/v1/completions",
                                                json={"prompt": PROMPTS[0], "max_tokens": LONG, "stream": True, **GREEDY}) as running:
        lines = running.iter_lines()  # keep the iterator: dropping it closes the response
        next(lines)
        with served.client(timeout=0.5) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/completions", json={"prompt": PROMPTS[2], "max_tokens": 8, **GREEDY})
        deadline = time.perf_counter() + 2
        while served.app.core.live_requests > 1 and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert served.app.core.live_requests == 1, "the abandoned request is still queued"
        assert served.app.core.busy, "the first generation should still be running"
    assert wait_idle(served) < 2


def test_stop_generation_endpoint_ends_a_stream(served: Served):
    with served.client() as c, c.stream("POST", "/v1/completions",
                                        json={"prompt": PROMPTS[0], "max_tokens": LONG, "stream": True, **GREEDY}) as response:
        lines = response.iter_lines()
        next(lines)
        with served.client() as other:
            assert other.post("/v1/internal/stop-generation").json()["stopped"] == 1
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and '"finish_reason":"stop"' in rest[-2]
