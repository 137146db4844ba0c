"""The Remote loader: a model served by another OpenAI-compatible server (vLLM, llama-server,
llama-cpp-python's server, text-generation-inference, another Hearth, any OpenAI-style API).

Hearth keeps the prompt side (templates, characters, histories, extensions, stop strings) and the server
generates: the core hands a remote model's requests to `webui.remote_generation`, which streams text from
`/v1/completions` (or, with ``remote_chat: server``, a chat reply's messages through the server's own chat
template at `/v1/chat/completions`). What a kind of server accepts is data (`loaders.remote_kinds`); exact logits never
cross the wire, so Hearth's own sampler pipeline, CFG and the Logits view are not available here.

Remote models are listed from ``user_data/remotes.yaml`` (`webui.remotes`) as ``remote:SERVER/MODEL``.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from loaders.remote_kinds import KINDS, RemoteKind
from webui.errors import GenerationError, HearthError, LoaderError, ModelRuntimeError
from webui.loader_api import Loader, LoaderParam, Model, ModelInfo
from webui.plugins import hookimpl
from webui.remotes import PREFIX, api_key_from_env

_DONE = object()
#: How chat replies are made: Hearth's template over /v1/completions, or the server's over chat completions.
CHAT_MODES = ("hearth", "server")


class RemoteServerError(ModelRuntimeError):
    """The remote server could not be reached or answered wrongly (not the request's fault)."""


class RemoteRequestError(GenerationError):
    """The remote server refused the request (HTTP 4xx other than a key problem)."""


def _body_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    error = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]


class RemoteClient:
    """HTTP to one server, every failure a HearthError naming it. JSON calls are synchronous (the model
    worker thread makes them); a completion stream runs on a private asyncio loop, so that cancelling
    it closes the connection at once, even while the server is silent."""

    def __init__(self, url: str, kind: str, api_key: str, timeout: float, name: str):
        if kind not in KINDS:
            raise LoaderError(f"remote_kind {kind!r} is not one of {', '.join(KINDS)}")
        self.url = url.rstrip("/").removesuffix("/v1")
        self.kind: RemoteKind = KINDS[kind]
        self.name = name
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: httpx.AsyncClient | None = None

    def _where(self) -> str:
        return f"the remote server {self.name} ({self.url})"

    def _check(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise RemoteServerError(
                f"{self._where()} refused the API key (HTTP {response.status_code}): "
                f"{_body_message(response)}. Set the key in the Model tab or its environment variable"
            )
        if response.status_code >= 500:
            raise RemoteServerError(
                f"{self._where()} failed (HTTP {response.status_code}): {_body_message(response)}"
            )
        if response.status_code >= 400:
            raise RemoteRequestError(
                f"{self._where()} refused the request (HTTP {response.status_code}): "
                f"{_body_message(response)}"
            )

    def _failure(self, exc: Exception) -> RemoteServerError:
        if isinstance(exc, httpx.TimeoutException):
            return RemoteServerError(f"{self._where()} did not answer within {self.timeout.read:g} s")
        if isinstance(exc, httpx.ConnectError):
            return RemoteServerError(f"cannot reach {self._where()}: {exc or 'connection refused'}")
        return RemoteServerError(f"{self._where()}: {type(exc).__name__}: {exc}")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A JSON call; its answer parsed."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._failure(exc) from None
        self._check(response)
        try:
            return response.json()
        except ValueError:
            raise RemoteServerError(
                f"{self._where()} answered {path} with something that is not JSON: {response.text[:80]!r}"
            ) from None

    def models(self) -> list[dict[str, Any]]:
        data = self.request("GET", "/v1/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m for m in models):
            raise RemoteServerError(
                f"{self._where()}: /v1/models is not an OpenAI model list: {str(data)[:80]!r}"
            )
        return models

    # -- streaming --------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name=f"remote-{self.name}", daemon=True).start()
            self._loop = loop
        return self._loop

    async def _pump(self, path: str, body: dict[str, Any], out: queue.SimpleQueue) -> None:
        try:
            if self._async is None:
                self._async = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=self.timeout)
            async with self._async.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._check(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        out.put(json.loads(payload))
                    except ValueError:
                        raise RemoteServerError(
                            f"{self._where()} sent a stream event that is not JSON: {payload[:80]!r}"
                        ) from None
            out.put(_DONE)
        except asyncio.CancelledError:
            out.put(_DONE)
            raise
        except HearthError as exc:
            out.put(exc)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a message
            out.put(self._failure(exc))

    def stream(self, path: str, body: dict[str, Any], cancel: threading.Event) -> Iterator[dict[str, Any]]:
        """The JSON events of a server-sent-event stream. Setting `cancel` (or closing the iterator)
        closes the connection: the server sees the client go and stops generating."""
        out: queue.SimpleQueue = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._pump(path, body, out), self._ensure_loop())
        try:
            while True:
                try:
                    item = out.get(timeout=0.05)
                except queue.Empty:
                    if cancel.is_set():
                        return
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if cancel.is_set():
                    return
        finally:
            future.cancel()

    def close(self) -> None:
        self._http.close()
        loop, self._loop = self._loop, None
        if loop is not None:
            if self._async is not None:
                asyncio.run_coroutine_threadsafe(self._async.aclose(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)


class RemoteModel(Model):
    """A model on another server. Tokenizes through the server's tokenizer endpoint when it has one;
    generation goes through `remote_stream` (the core never asks it for logits)."""

    def __init__(
        self, client: RemoteClient, model: str, info: ModelInfo, bos: int | None, chat: str = "hearth"
    ):
        self.client = client
        #: Chat replies: "hearth" (Hearth's template, /v1/completions) or "server" (the server's own chat
        #: template, /v1/chat/completions, for requests that carry their messages).
        self.chat = chat
        self.remote_model = model
        self.info = info
        self._bos = bos
        #: Marks this Model as generating remotely (`webui.loader_api.Model.remote`).
        self.remote = client.kind

    @property
    def n_ctx(self) -> int:
        return self.info.context_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset()

    @property
    def bos_token_id(self) -> int | None:
        return self._bos

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size or 1 << 31

    def _tokenizer(self):
        tok = self.client.kind.tokenizer
        if tok is None:
            raise GenerationError(
                f"{self.client.kind.label} has no tokenizer endpoint: token counts, prompt "
                "truncation and token ids are not available with this remote model"
            )
        return tok

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        tok = self._tokenizer()
        body: dict[str, Any] = {tok.text_field: text}
        if tok.add_special_field:
            body[tok.add_special_field] = add_bos
        if tok.sends_model:
            body["model"] = self.remote_model
        ids = self.client.request("POST", tok.encode, body).get(tok.tokens_field)
        if not isinstance(ids, list):
            raise RemoteServerError(f"{self.client._where()}: {tok.encode} gave no token list")
        if not tok.add_special_field and not add_bos and ids and ids[0] == self._bos:
            ids = ids[1:]  # a tokenizer that always adds BOS (llama-cpp-python's)
        return [int(t) for t in ids]

    def detokenize(self, ids: Sequence[int]) -> str:
        tok = self._tokenizer()
        body: dict[str, Any] = {tok.tokens_field: [int(t) for t in ids]}
        if tok.sends_model:
            body["model"] = self.remote_model
        return str(self.client.request("POST", tok.decode, body).get(tok.decoded_field, ""))

    def logits(self, ids: Sequence[int], slot: int = 0):
        raise GenerationError(
            "exact logits are not available on a remote model (the server sends at most its "
            "top logprobs): the Logits view, CFG and Hearth's sampler pipeline need a local model"
        )

    def unload(self) -> None:
        self.client.close()


def _probe(client: RemoteClient, model: str) -> tuple[str, dict[str, Any]]:
    """Check the server and read what it tells: (model id, facts)."""
    models = client.models()
    ids = [m["id"] for m in models]
    if model and model not in ids:
        raise LoaderError(f"{client._where()} has no model {model!r}; it serves: {', '.join(ids) or 'none'}")
    if not model:
        if not ids:
            raise LoaderError(f"{client._where()} serves no model")
        model = ids[0]
    card = next(m for m in models if m["id"] == model)
    facts: dict[str, Any] = {}
    if card.get("max_model_len"):  # vLLM
        facts["n_ctx"] = int(card["max_model_len"])
    try:
        if client.kind.name == "llama-server":
            props = client.request("GET", "/props")
            facts["n_ctx"] = int(
                props.get("default_generation_settings", {}).get("n_ctx") or props.get("n_ctx") or 0
            )
            facts["chat_template"] = props.get("chat_template") or None
        elif client.kind.name == "hearth":
            info = client.request("GET", "/v1/internal/model/info").get("info") or {}
            facts["n_ctx"] = int(info.get("context_length") or 0)
            facts["vocab_size"] = int(info.get("vocab_size") or 0)
    except HearthError:
        pass  # optional facts; the model list answered, so the server works
    return model, facts


class RemoteLoader(Loader):
    name = "Remote"
    description = "a model on an OpenAI-compatible server (user_data/remotes.yaml)"
    params = (
        LoaderParam(
            "remote_url", "str", "", "Root URL of the OpenAI-compatible server, e.g. http://gpu-box:8000."
        ),
        LoaderParam(
            "remote_kind",
            "choice",
            "openai",
            "The server software: decides which sampler settings it takes.",
            choices=tuple(KINDS),
        ),
        LoaderParam("remote_model", "str", "", "The server's model name (empty = its first model)."),
        LoaderParam("remote_api_key_env", "str", "", "Environment variable holding the server's API key."),
        LoaderParam(
            "remote_api_key",
            "str",
            "",
            "The API key itself, for this session (overrides the variable; never saved to a settings file).",
            secret=True,
        ),
        LoaderParam(
            "remote_timeout",
            "float",
            60.0,
            "Seconds to wait for the server (connect, and each read).",
            1,
            3600,
        ),
        LoaderParam(
            "remote_chat",
            "choice",
            "hearth",
            "Chat replies: hearth = Hearth's instruction template, sent to /v1/completions; server = the "
            "server's own chat template, the messages sent to /v1/chat/completions (instruct mode).",
            choices=CHAT_MODES,
        ),
        LoaderParam(
            "remote_n_ctx",
            "int",
            0,
            "Context length when the server does not tell it (0 = 4096).",
            0,
            1 << 22,
        ),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        return 1000 if str(path).startswith(PREFIX) else 0

    @classmethod
    def validate(cls, path: Path, params: dict[str, Any]) -> None:
        if not params["remote_url"].startswith(("http://", "https://")):
            raise LoaderError(f"remote_url must be an http:// or https:// URL, not {params['remote_url']!r}")

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        key = params["remote_api_key"] or api_key_from_env(params["remote_api_key_env"])
        server = (
            str(path)[len(PREFIX) :].split("/", 1)[0]
            if str(path).startswith(PREFIX)
            else params["remote_url"]
        )
        client = RemoteClient(
            params["remote_url"], params["remote_kind"], key, params["remote_timeout"], server
        )
        try:
            model, facts = _probe(client, params["remote_model"])
            bos = None
            if client.kind.tokenizer is not None:
                probe = RemoteModel(client, model, ModelInfo(model, self.name, str(path)), None)
                empty = probe.tokenize("", add_bos=True)
                bos = empty[0] if len(empty) == 1 else None
        except HearthError as exc:
            client.close()
            raise LoaderError(str(exc)) from None
        info = ModelInfo(
            name=model,
            loader=self.name,
            path=str(path),
            architecture=f"remote {client.kind.name}",
            context_length=facts.get("n_ctx") or params["remote_n_ctx"] or 4096,
            vocab_size=facts.get("vocab_size", 0),
            chat_template=facts.get("chat_template"),
            extra={
                "remote_url": client.url,
                "remote_kind": client.kind.name,
                "remote_model": model,
                "remote_chat": params["remote_chat"],
                "tokenizer": client.kind.tokenizer is not None,
            },
        )
        return RemoteModel(client, model, info, bos, params["remote_chat"])


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [RemoteLoader]
