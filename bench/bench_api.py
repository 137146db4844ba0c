"""What the `--api` server adds: time to first token and decode speed through HTTP+SSE vs the core called directly.

Run: .venv/bin/python bench/bench_api.py [--tokens 128] [--rounds 3] [--tiny] [--threads N]
Uses the ~0.25B random Q8_0 GGUF of bench_llamacpp.py (built once into bench/.cache/), or with --tiny the
test suite's tiny model (so fast that per-token overhead shows most). The direct and API runs are
interleaved, same prompt (its prefix cached for both), same seeded samplers, streamed; medians are
printed with the differences. The HTTP client runs in its own process, as a real client does (in this
process it would compete with the server for the GIL). Goals: <= 10 ms added to time to first token,
>= 0.97 of direct throughput.

On a small CPU box the server's work per token (a wake-up of the event loop, a JSON chunk, a socket
write) and the client process's parsing take CPU from llama.cpp's compute threads, so the throughput
ratio shows what a real client on the same machine costs; `--threads 1` leaves a core free for them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.model_factory import build_bench_gguf, build_pair  # noqa: E402
from tests.test_api_server import free_port  # noqa: E402
from webui.app import App  # noqa: E402
from webui.config import Settings  # noqa: E402
from webui.generation import GenerationRequest, TextChunk  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402
from webui.server import start_api  # noqa: E402

SAMPLERS = {"temperature": 0.7, "min_p": 0.05, "repetition_penalty": 1.1, "ban_eos_token": True, "seed": 7}
PROMPT = "Once upon a time there was a little village by the sea, where fishermen told stories every night."


def direct(app: App, tokens: int) -> tuple[float, float]:
    """(seconds to the first text, tokens/s after it) calling GenerationCore.stream in this thread."""
    request = GenerationRequest(prompt=PROMPT, max_new_tokens=tokens, sampling=SamplingParams(**SAMPLERS))
    start = time.perf_counter()
    first = None
    for event in app.core.stream(request):
        if first is None and isinstance(event, TextChunk) and event.text:
            first = time.perf_counter()
    assert first is not None
    return first - start, (tokens - 1) / (time.perf_counter() - first)


def through_api(client: httpx.Client, tokens: int) -> tuple[float, float]:
    """The same through POST /v1/completions with stream=true, parsing every SSE line as a client does."""
    body = {"prompt": PROMPT, "max_tokens": tokens, "stream": True, **SAMPLERS}
    start = time.perf_counter()
    first = None
    used = 0
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"][0]["text"]:
                first = time.perf_counter()
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    assert first is not None and used == tokens, used
    return first - start, (tokens - 1) / (time.perf_counter() - first)


def client_process(base: str) -> None:
    """--client mode: one streamed API run per line read from stdin, its figures printed as JSON."""
    with httpx.Client(base_url=base, timeout=600) as client:
        for line in sys.stdin:
            print(json.dumps(through_api(client, int(line))), flush=True)


class RemoteClient:
    def __init__(self, base: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--client", base], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, tokens: int) -> tuple[float, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{tokens}\n")
        self.proc.stdin.flush()
        first, rate = json.loads(self.proc.stdout.readline())
        return first, rate

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model instead of the 0.25B bench model")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp generation threads (0 = the loader's default)")
    args = parser.parse_args()
    if args.client:
        return client_process(args.client)
    if args.tiny:
        models_dir, name = Path(tempfile.mkdtemp()), "tiny-llama.gguf"
        build_pair(models_dir)
    else:
        path = build_bench_gguf(ROOT / "bench" / ".cache")
        models_dir, name = path.parent, path.name
    app = App.create(Settings(models_dir=models_dir, user_data_dir=Path(tempfile.mkdtemp()), api_port=free_port()))
    model = app.models.load(name, "llama.cpp", {"n_ctx": 2048, "threads": args.threads})
    server, thread = start_api(app)
    print(f"model: {name}, {(model.info.parameters or 0) / 1e6:.1f}M parameters; {args.tokens} tokens, {args.rounds} rounds")

    ttft: dict[str, list[float]] = {"direct": [], "api": []}
    speed: dict[str, list[float]] = {"direct": [], "api": []}
    client = RemoteClient(f"http://127.0.0.1:{app.settings.api_port}")
    direct(app, 8), client.run(8)  # warm-up: caches, first connection, imports
    for _ in range(args.rounds):  # interleaved so drift in machine load hits both alike
        for label, run in (("direct", lambda: direct(app, args.tokens)), ("api", lambda: client.run(args.tokens))):
            first, rate = run()
            ttft[label].append(first)
            speed[label].append(rate)
    client.close()
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)
    app.models.unload()

    t_direct, t_api = (statistics.median(ttft[k]) * 1000 for k in ("direct", "api"))
    s_direct, s_api = (statistics.median(speed[k]) for k in ("direct", "api"))
    print(f"time to first token: direct {t_direct:.2f} ms, API {t_api:.2f} ms, added {t_api - t_direct:+.2f} ms (goal <= 10 ms)")
    print(f"decode: direct {s_direct:.1f} tok/s, API {s_api:.1f} tok/s, ratio {s_api / s_direct:.3f} (goal >= 0.97)")


if __name__ == "__main__":
    main()
