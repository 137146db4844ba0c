"""Concurrent streaming clients: Hearth one at a time, Hearth with --parallel N, llama.cpp's own llama-server.

Run: .venv/bin/python bench/bench_concurrency.py [--clients 1,2,4] [--repeats 3] [--max-tokens 256]
     [--systems hearth-p1,hearth-pN,llama-server] [--gguf PATH] [--llama-server PATH] [--skip-llama-server]
     [--no-repack] [--json OUT]
Build llama-server first (once, ~12 minutes on 2 cores): bench/build_llama_server.sh

For each client count N, N clients start at once, each streaming one POST /v1/completions of --max-tokens
tokens (EOS banned on both sides: Hearth's ban_eos_token, llama-server's ignore_eos; greedy: temperature 0,
top_k 1), and each system is measured once per repeat, the order of systems alternating between repeats:
  hearth-p1     Hearth with --parallel 1: requests are answered one at a time (Hearth before issue 17)
  hearth-pN     Hearth with --parallel N: N slots of one llama.cpp context, decoded in one batch per step
                (not run for N = 1, where it is hearth-p1; skipped with a message while Hearth has no --parallel)
  llama-server  llama-server -np N --no-kv-unified: N slots of --n-ctx tokens each
Every server runs as its own process on a free 127.0.0.1 port, with the same model, per-slot context, threads,
batch size, flash attention (off) and KV cache type (f16), memory-mapped. The clients run in this process
(asyncio + httpx), the same for every system. Each client's prompt starts with its own tag (client, repeat),
so no slot has any of it cached: every request reads its whole prompt.

Figures per run: aggregate tokens/s = all clients' generated tokens / (last client's end - first client's
start); time to first token = from a client's request to its first chunk with text, median over the clients.
Each client's token count is checked against --max-tokens (the usage of the last chunk, else the number of
text chunks). The table gives min / median / max over repeats, and the ratios to llama-server measured in the
same repeat. Goal (issue 17): at 4 clients, hearth-pN's aggregate tokens/s >= 0.9x llama-server's and its
median time to first token <= 1.1x.

--no-repack: load the weights in place on both sides (llama-server --no-repack; Hearth through
bench.interleave.without_extra_buffers), for CPUs whose AMX llama.cpp's kernels die on (SIGILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.interleave import spread  # noqa: E402
from tests.model_factory import build_bench_gguf  # noqa: E402
from tests.remote_servers import free_port, wait_ready  # noqa: E402

DEFAULT_LLAMA_SERVER = Path.home() / ".cache" / "hearth" / "llama-server" / "llama-server"
SYSTEMS = ("hearth-p1", "hearth-pN", "llama-server")
PROMPT = (
    "Once upon a time there was a little village by the sea, where fishermen told stories every night "
    "about the storms they had seen, the fish they had caught and the strange lights far out on the water."
)
SAMPLING = {"temperature": 0, "top_k": 1}
#: What makes each side ignore the end-of-sequence token.
NO_EOS = {"hearth": {"ban_eos_token": True}, "llama-server": {"ignore_eos": True}}
#: Launches Hearth with llama.cpp's extra weight buffers off (--no-repack), then runs `python -m webui`.
HEARTH_NO_REPACK = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from bench.interleave import without_extra_buffers; without_extra_buffers(); "
    "sys.argv[0] = 'webui'; runpy.run_module('webui', run_name='__main__', alter_sys=True)"
)


@dataclass
class Settings:
    gguf: Path
    n_ctx: int  # per slot
    threads: int
    threads_batch: int
    n_batch: int
    n_gpu_layers: int
    no_repack: bool
    llama_server: Path


@dataclass
class ClientResult:
    start: float
    end: float
    ttft: float  # seconds
    tokens: int  # from the final usage, else the text chunks
    chunks: int  # chunks with text
    text: str


@dataclass
class Run:
    system: str
    clients: int
    repeat: int
    tok_s: float
    ttft_median_ms: float
    results: list[ClientResult] = field(default_factory=list)


class ServerError(RuntimeError):
    pass


class Server:
    """One server process on a free port, its output in a log file."""

    def __init__(self, label: str, cmd: list[str], port: int, ready_path: str, log: Path):
        self.label, self.cmd, self.port, self.log = label, cmd, port, log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            wait_ready(self.url + ready_path, self.proc, log, limit_s=300)
        except RuntimeError as exc:
            note = self.exit_note()
            self.stop()
            raise ServerError(f"{label} did not start{note}: {exc}") from None

    def exit_note(self) -> str:
        """Why the process ended, when it has: its exit status, and what a SIGILL means here."""
        try:
            code = self.proc.wait(3)  # a process that just dropped its connections may still be dying
        except subprocess.TimeoutExpired:
            return ""
        if code in (-signal.SIGILL, 128 + signal.SIGILL):
            return (
                f" ({self.label} died of SIGILL, an illegal instruction: llama.cpp's AMX / repacked weight "
                "kernels on a CPU that advertises instructions it does not run; rerun with --no-repack)"
            )
        return f" ({self.label} exited with status {code}; its log: {self.log})"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def hearth_supports_parallel() -> bool:
    """Whether this checkout's `python -m webui` has --parallel (issue 17's llama.cpp slots)."""
    out = subprocess.run(
        [sys.executable, "-m", "webui", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return "--parallel" in out.stdout


def start_hearth(settings: Settings, parallel: int, with_flag: bool, workdir: Path) -> Server:
    port = free_port()
    args = [
        "--api",
        "--no-browser-ui",
        "--models-dir",
        str(settings.gguf.parent),
        "--model",
        settings.gguf.name,
        "--loader",
        "llama.cpp",
        "--n-ctx",
        str(settings.n_ctx),
        "--threads",
        str(settings.threads),
        "--threads-batch",
        str(settings.threads_batch),
        "--n-batch",
        str(settings.n_batch),
        "--n-gpu-layers",
        str(settings.n_gpu_layers),
        "--no-flash-attn",
        "--cache-type",
        "f16",
        "--api-port",
        str(port),
        "--user-data-dir",
        str(workdir / f"user_data-{port}"),
    ]
    if with_flag:
        args += ["--parallel", str(parallel)]
    if settings.no_repack:
        cmd = [sys.executable, "-c", HEARTH_NO_REPACK, str(ROOT), *args]
    else:
        cmd = [sys.executable, "-m", "webui", *args]
    label = f"hearth --parallel {parallel}"
    try:
        return Server(label, cmd, port, "/v1/models", workdir / f"hearth-p{parallel}-{port}.log")
    except ServerError as exc:
        if "unrecognized arguments: --parallel" in str(exc):
            raise ServerError("Hearth has no --parallel yet (exits with a CLI error)") from None
        raise


def start_llama_server(settings: Settings, parallel: int, workdir: Path) -> Server:
    port = free_port()
    cmd = [
        str(settings.llama_server),
        "-m",
        str(settings.gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # -c is the total over the slots; without a unified KV cache each slot gets -c / -np
        "-c",
        str(settings.n_ctx * parallel),
        "-np",
        str(parallel),
        "--no-kv-unified",
        "-t",
        str(settings.threads),
        "-tb",
        str(settings.threads_batch),
        "-b",
        str(settings.n_batch),
        "-ub",
        str(settings.n_batch),
        "-ngl",
        str(settings.n_gpu_layers),
        "-fa",
        "off",
        "-ctk",
        "f16",
        "-ctv",
        "f16",
        "--no-webui",
        "--no-warmup",
        "--cache-ram",  # no host-memory prompt cache (Hearth has none): idle slots are not copied out
        "0",
    ]
    if settings.no_repack:
        cmd.append("--no-repack")
    return Server(
        f"llama-server -np {parallel}",
        cmd,
        port,
        "/health",
        workdir / f"llama-server-np{parallel}-{port}.log",
    )


def request_body(kind: str, prompt: str, max_tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, **SAMPLING, **NO_EOS[kind]}
    if kind == "llama-server":
        body["stream_options"] = {"include_usage": True}
    return body


async def one_client(client: httpx.AsyncClient, url: str, body: dict) -> ClientResult:
    start = time.perf_counter()
    first, chunks, usage, parts = None, 0, None, []
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("error"):
                raise RuntimeError(f"{url}: {chunk['error']}")
            choices = chunk.get("choices") or []
            text = (choices[0].get("text") or "") if choices else ""
            if text:
                first = first or time.perf_counter()
                chunks += 1
                parts.append(text)
            if chunk.get("usage"):
                usage = chunk["usage"].get("completion_tokens")
            elif chunk.get("timings", {}).get("predicted_n") is not None:  # llama-server without usage
                usage = chunk["timings"]["predicted_n"]
    end = time.perf_counter()
    if first is None:
        raise RuntimeError(f"{url}: the stream had no text")
    return ClientResult(
        start, end, first - start, usage if usage is not None else chunks, chunks, "".join(parts)
    )


async def run_clients(url: str, bodies: list[dict]) -> list[ClientResult]:
    limits = httpx.Limits(max_connections=len(bodies) + 2, max_keepalive_connections=len(bodies) + 2)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        return list(await asyncio.gather(*(one_client(client, url, body) for body in bodies)))


def measure(system: str, server: Server, clients: int, repeat: int, max_tokens: int) -> Run:
    kind = "llama-server" if system == "llama-server" else "hearth"
    prompts = [f"[{clients}.{repeat}.{i}] {PROMPT}" for i in range(clients)]  # nothing of it cached anywhere
    try:
        results = asyncio.run(run_clients(server.url, [request_body(kind, p, max_tokens) for p in prompts]))
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{system} with {clients} clients: {exc!r}{server.exit_note()}") from None
    for r in results:
        if r.tokens != max_tokens:
            raise RuntimeError(
                f"{system}: a client got {r.tokens} tokens ({r.chunks} text chunks), "
                f"not {max_tokens}: the two sides would not do the same work"
            )
    wall = max(r.end for r in results) - min(r.start for r in results)
    tok_s = sum(r.tokens for r in results) / wall
    return Run(system, clients, repeat, tok_s, statistics.median(r.ttft for r in results) * 1000, results)


def warm_up(system: str, server: Server) -> None:
    kind = "llama-server" if system == "llama-server" else "hearth"
    asyncio.run(run_clients(server.url, [request_body(kind, "[warm-up] " + PROMPT, 8)]))


def settle() -> None:
    """A pause between runs so the previous server's compute threads (OpenMP spins a while) are asleep."""
    threading.Event().wait(0.5)


def table(runs: list[Run], clients: list[int], systems: list[str]) -> str:
    lines = [
        "| clients | system | aggregate tok/s (min / median / max) | median TTFT ms (min / median / max) "
        "| tok/s vs llama-server | TTFT vs llama-server |",
        "|---:|---|---|---|---|---|",
    ]
    for n in clients:
        base = {r.repeat: r for r in runs if r.clients == n and r.system == "llama-server"}
        for system in systems:
            rows = [r for r in runs if r.clients == n and r.system == system]
            if not rows:
                continue
            name = f"hearth-p{n}" if system == "hearth-pN" else system
            if system == "llama-server":
                name = f"llama-server -np {n}"
            paired = [(r, base[r.repeat]) for r in rows if r.repeat in base and system != "llama-server"]
            tok_ratio = spread([a.tok_s / b.tok_s for a, b in paired], 3) if paired else ""
            ttft_ratio = spread([a.ttft_median_ms / b.ttft_median_ms for a, b in paired], 3) if paired else ""
            lines.append(
                f"| {n} | {name} | {spread([r.tok_s for r in rows], 1)} | "
                f"{spread([r.ttft_median_ms for r in rows], 0)} | {tok_ratio} | {ttft_ratio} |"
            )
    return "\n".join(lines)


def llama_server_version(path: Path) -> str:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"unknown ({exc})"
    return " ".join(
        line.strip()
        for line in (out.stdout + out.stderr).splitlines()
        if line.startswith(("version", "built"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,2,4", help="client counts, comma-separated (default 1,2,4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"some of {', '.join(SYSTEMS)}")
    parser.add_argument("--gguf", type=Path, help="model (default: bench/.cache/bench-Q8_0.gguf, built once)")
    parser.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER)
    parser.add_argument("--skip-llama-server", action="store_true")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context per slot on both sides")
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, cores // 2 if cores > 2 else cores),
        help="generation threads on both sides (default: Hearth's loader default)",
    )
    parser.add_argument("--threads-batch", type=int, default=cores)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--no-repack", action="store_true", help="weights in place on both sides (see above)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()

    clients = [int(n) for n in args.clients.split(",") if n.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown or not clients or min(clients) < 1 or args.repeats < 1 or args.max_tokens < 1:
        parser.error(
            f"--systems: one or more of {', '.join(SYSTEMS)}; --clients, --repeats, --max-tokens >= 1"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
        )
    if args.skip_llama_server and "llama-server" in systems:
        systems.remove("llama-server")
    if "llama-server" in systems and not args.llama_server.exists():
        sys.exit(
            f"no llama-server at {args.llama_server}: build it with bench/build_llama_server.sh "
            "(or pass --llama-server PATH, or --skip-llama-server)"
        )
    has_parallel = hearth_supports_parallel()
    if "hearth-pN" in systems and not has_parallel:
        print(
            "hearth-pN skipped: this Hearth has no --parallel yet (python -m webui --help does not list it)"
        )
        systems.remove("hearth-pN")
    if not systems:
        sys.exit("nothing to measure")

    gguf = args.gguf or build_bench_gguf(ROOT / "bench" / ".cache")
    settings = Settings(
        gguf.resolve(),
        args.n_ctx,
        args.threads,
        args.threads_batch,
        args.n_batch,
        args.n_gpu_layers,
        args.no_repack,
        args.llama_server,
    )
    import llama_cpp

    print(
        f"model: {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB); {args.max_tokens} tokens per client, "
        f"{args.repeats} repeats; per-slot n_ctx {args.n_ctx}, threads {args.threads}/{args.threads_batch}, "
        f"n_batch {args.n_batch}, n_gpu_layers {args.n_gpu_layers}, flash attention off, KV f16"
        f"{', no repack' if args.no_repack else ''}"
    )
    print(
        f"Hearth: llama-cpp-python {llama_cpp.__version__}; "
        + (f"llama-server: {llama_server_version(args.llama_server)}" if "llama-server" in systems else "")
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, load {os.getloadavg()[0]:.2f}"
    )

    workdir = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    runs: list[Run] = []
    servers: dict[tuple[str, int], Server] = {}
    try:
        for n in clients:
            wanted = {
                "hearth-p1": ("hearth", 1),
                "hearth-pN": ("hearth", n),
                "llama-server": ("llama-server", n),
            }
            active = [s for s in systems if not (s == "hearth-pN" and n == 1)]
            keys = {s: wanted[s] for s in active}
            for key in [k for k in servers if k not in keys.values()]:
                servers.pop(key).stop()
            for system, key in list(keys.items()):
                if key in servers:
                    continue
                server = None
                try:
                    if key[0] == "hearth":
                        server = start_hearth(settings, key[1], has_parallel, workdir)
                    else:
                        server = start_llama_server(settings, key[1], workdir)
                    warm_up(system, server)
                    servers[key] = server
                except (ServerError, RuntimeError, httpx.HTTPError) as exc:
                    note = server.exit_note() if server else ""
                    if server:
                        server.stop()
                    print(f"{system} with {n} clients skipped: {exc}{note}")
                    active.remove(system)
                    keys.pop(system)
            for repeat in range(args.repeats):
                for system in active if repeat % 2 == 0 else active[::-1]:
                    settle()
                    run = measure(system, servers[keys[system]], n, repeat, args.max_tokens)
                    runs.append(run)
                    print(
                        f"  {n} clients, repeat {repeat + 1}, {system}: {run.tok_s:.1f} tok/s, "
                        f"median TTFT {run.ttft_median_ms:.0f} ms",
                        flush=True,
                    )
            same = _same_text(runs, n)
            if same:
                print(f"  {n} clients: {same}")
    finally:
        for server in servers.values():
            server.stop()

    print()
    print(
        f"## Concurrency: {gguf.name}, {args.max_tokens} tokens per client, {args.repeats} repeats"
        f" (load at the end {os.getloadavg()[0]:.2f})\n"
    )
    print(table(runs, clients, systems))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {
                        **asdict(settings),
                        "gguf": str(settings.gguf),
                        "llama_server": str(settings.llama_server),
                        "max_tokens": args.max_tokens,
                        "repeats": args.repeats,
                    },
                    "runs": [
                        {
                            **asdict(r),
                            "results": [
                                {k: v for k, v in asdict(c).items() if k != "text"} for c in r.results
                            ],
                        }
                        for r in runs
                    ],
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")


def _same_text(runs: list[Run], n: int) -> str:
    """How many clients got the same greedy text from Hearth as from llama-server (same prompt, same repeat)."""
    base = {
        (r.repeat, i): c.text
        for r in runs
        if r.clients == n and r.system == "llama-server"
        for i, c in enumerate(r.results)
    }
    out = []
    for system in ("hearth-p1", "hearth-pN"):
        pairs = [
            (c.text, base[r.repeat, i])
            for r in runs
            if r.clients == n and r.system == system
            for i, c in enumerate(r.results)
            if (r.repeat, i) in base
        ]
        if pairs:
            out.append(
                f"{system} text = llama-server's for {sum(a == b for a, b in pairs)}/{len(pairs)} clients"
            )
    return "; ".join(out)


if __name__ == "__main__":
    main()
