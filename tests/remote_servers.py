"""Servers for the remote-loader tests: real ones (llama-cpp-python's OpenAI server, a second Hearth with
--api) started as subprocesses and waited for by polling, and a small fake for the failures real servers
cannot be made to produce on demand (a stall, garbage bodies, a broken event stream)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, proc: subprocess.Popen, log: Path, headers: dict | None = None, limit_s: float = 180
) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        threading.Event().wait(0.1)  # poll interval, not a wait for readiness
    raise RuntimeError(f"{url} not ready after {limit_s}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _process(cmd: list[str], ready: str, log: Path, headers: dict | None = None) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        wait_ready(ready, proc, log, headers)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def llama_cpp_server(gguf: Path, log: Path, n_ctx: int = 512) -> Iterator[str]:
    """llama-cpp-python's own server (python -m llama_cpp.server) on `gguf`; yields its root URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
    ]
    with _process(cmd, f"{url}/v1/models", log):
        yield url


@contextmanager
def hearth_server(
    models_dir: Path, model: str, user_data: Path, log: Path, api_key: str, n_ctx: int = 4096,
    launcher: tuple[str, ...] = (),
) -> Iterator[str]:
    """A second Hearth with --api (no browser UI) serving `model` with llama.cpp; yields its root URL.
    `launcher` prefixes the command (a bench pins the server to its own cores with ``taskset -c 0``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        *launcher,
        sys.executable,
        "-m",
        "webui",
        "--api",
        "--no-browser-ui",
        "--models-dir",
        str(models_dir),
        "--model",
        model,
        "--loader",
        "llama.cpp",
        "--n-ctx",
        str(n_ctx),
        "--api-port",
        str(port),
        "--user-data-dir",
        str(user_data),
        "--api-key",
        api_key,
    ]
    with _process(cmd, f"{url}/v1/models", log, {"Authorization": f"Bearer {api_key}"}):
        yield url


class FakeServer:
    """An OpenAI-looking server whose answers the test sets: `mode` is 'ok' (a model list and a short
    stream), 'stall_models', 'stall_stream' (headers, one token, then silence), 'garbage' (HTML for every
    route) or 'bad_sse' (a stream event that is not JSON). `released` ends every stall."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.released = threading.Event()
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if fake.mode == "stall_models":
                    fake.released.wait(60)
                    return
                if fake.mode == "garbage":
                    self._send(200, b"<html>gateway says hi</html>", "text/html")
                    return
                self._send(200, b'{"object": "list", "data": [{"id": "fake-model", "object": "model"}]}')

            def do_POST(self) -> None:
                fake.requests.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if fake.mode == "garbage":
                    self._send(200, b"<html>gateway says hi</html>", "text/html")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(b'data: {"choices": [{"text": "Hello", "finish_reason": null}]}\n\n')
                self.wfile.flush()
                if fake.mode == "stall_stream":
                    fake.released.wait(60)
                elif fake.mode == "bad_sse":
                    self.wfile.write(b"data: {this is not json\n\n")
                else:
                    self.wfile.write(
                        b'data: {"choices": [{"text": " there", "finish_reason": "length"}]}\n\n'
                        b"data: [DONE]\n\n"
                    )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
