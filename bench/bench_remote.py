"""What the Remote loader adds on top of the server it fronts: time to first token and tokens/s through
Hearth (`GenerationCore.stream` on a ``remote:`` model) vs the same request sent straight to the same server
with httpx streaming, in the same run, alternating which side goes first each round.

The server is a second Hearth (--api, llama.cpp loader) on the tests' tiny F32 GGUF (`tests.model_factory`;
on this machine the Q8_0 benchmark GGUF of bench/.cache/ dies of an invalid opcode in libggml-cpu inside a
server process). Not llama-cpp-python's server: it sends a fast model's stream in one burst at the end
(its TTFT is the whole generation). The tiny model makes each token cheap, so the per-token cost of the
remote path shows at its largest. Goals: added TTFT <= 10 ms (median), throughput ratio >= 0.97 (median).

    .venv/bin/python bench/bench_remote.py [--rounds 8] [--tokens 128] [--size tiny|bench] [--pin]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import spread  # noqa: E402
from tests.model_factory import BENCH_CONFIG, build_pair, build_tokenizer, random_weights, write_gguf  # noqa: E402
from tests.remote_servers import hearth_server  # noqa: E402
from webui.events import Finished, TextChunk  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.remotes import RemoteRegistry  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
PROMPT = "hello world, the quick brown fox"  # the tiny model answers it with text at once (not bytes)


def direct(client: httpx.Client, model: str, tokens: int) -> tuple[float, float]:
    """(TTFT s, tokens/s) of one streamed request sent straight to the server (a kept-alive client, as
    the Remote loader's)."""
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, count = None, 0
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            count = (event.get("usage") or {}).get("completion_tokens", count)
            choice = (event.get("choices") or [{}])[0]
            if first is None and choice.get("text"):
                first = time.perf_counter() - start
    return first or 0.0, count / (time.perf_counter() - start)


def through_hearth(core: GenerationCore, tokens: int) -> tuple[float, float]:
    request = GenerationRequest(prompt=PROMPT, max_new_tokens=tokens, sampling=SamplingParams(temperature=0))
    start = time.perf_counter()
    first, final = None, None
    for event in core.stream(request):
        if first is None and isinstance(event, TextChunk) and event.text:
            first = time.perf_counter() - start
        if isinstance(event, Finished):
            final = event
    assert final is not None
    return first or 0.0, final.usage.completion_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--size", choices=("tiny", "bench"), default="tiny",
                        help="tiny: the tests' model (per-token overhead at its largest); bench: the realistic-size "
                        "0.25B benchmark shape with a 32k vocabulary, as F32 (decode speed of a real model here)")
    parser.add_argument("--pin", action="store_true",
                        help="run the server on CPU 0 and this process on the others, as a server on its own "
                        "machine: on a small machine the client's per-token work otherwise takes cores the "
                        "server computes on (both sides alike)")
    args = parser.parse_args()
    launcher: tuple[str, ...] = ()
    if args.pin:
        launcher = ("taskset", "-c", "0")
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    with tempfile.TemporaryDirectory() as tmp:
        if args.size == "tiny":
            gguf = build_pair(Path(tmp))[1]
        else:
            weights = random_weights(BENCH_CONFIG, 32000)
            gguf = write_gguf(Path(tmp) / "bench-F32.gguf", BENCH_CONFIG, build_tokenizer(BENCH_CONFIG.vocab), weights,
                              name="bench", vocab=32000)
        with hearth_server(
            gguf.parent, gguf.name, Path(tmp) / "user_data", Path(tmp) / "server.log", KEY, 1024, launcher
        ) as url:
            run(url, gguf, Path(tmp), args.rounds, args.tokens)


def run(url: str, gguf: Path, tmp: Path, rounds: int, tokens: int) -> None:
    remotes = tmp / "remotes.yaml"
    remotes.write_text(
        yaml.safe_dump({"remotes": {"bench": {"url": url, "kind": "hearth", "model": gguf.name}}})
    )
    manager = ModelManager(tmp, collect_loaders(make_plugin_manager()), remotes=RemoteRegistry(remotes))
    manager.load(f"remote:bench/{gguf.name}", params={"remote_api_key": KEY})
    core = GenerationCore(manager)
    client = httpx.Client(base_url=url, headers=HEADERS, timeout=120)
    through_hearth(core, tokens), direct(client, gguf.name, tokens)  # warm both paths (connections, caches)
    sides = {
        "direct": lambda: direct(client, gguf.name, tokens),
        "hearth": lambda: through_hearth(core, tokens),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for name in sides if round_ % 2 == 0 else list(sides)[::-1]:
            runs[name].append(sides[name]())
    manager.unload()
    client.close()
    ttft = {name: [r[0] * 1000 for r in values] for name, values in runs.items()}
    speed = {name: [r[1] for r in values] for name, values in runs.items()}
    added = [h - d for h, d in zip(ttft["hearth"], ttft["direct"], strict=True)]
    ratio = [h / d for h, d in zip(speed["hearth"], speed["direct"], strict=True)]
    print(
        f"a second Hearth (--api, llama.cpp loader), {gguf.name}, {tokens} tokens, {rounds} rounds (min / median / max)"
    )
    print(f"  TTFT direct: {spread(ttft['direct'], 1)} ms   through Hearth: {spread(ttft['hearth'], 1)} ms")
    print(
        f"  added TTFT per round: {spread(added, 1)} ms  (goal: median <= 10 ms) "
        f"{'OK' if statistics.median(added) <= 10 else 'MISSED'}"
    )
    print(f"  tok/s direct: {spread(speed['direct'])}   through Hearth: {spread(speed['hearth'])}")
    print(
        f"  throughput ratio per round: {spread(ratio, 3)}  (goal: median >= 0.97) "
        f"{'OK' if statistics.median(ratio) >= 0.97 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
