"""The OpenAI-compatible routes: /v1/completions, /v1/chat/completions, /v1/models.

They only translate: body -> GenerationRequest (convert.py), core events -> OpenAI shapes (render.py).
The `model` field routes (`webui.model_pool`): empty, null, the UI's model or an alias of it answer with the
UI's model as before; another model of /v1/models (or an alias) answers with that model, loaded first when
it is not (a stream answers at once and sends `: loading NAME` comments meanwhile); an unknown name is a 404
listing the models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from webui.api.auth import require_api_key
from webui.api.convert import (
    DEFAULT_CHAT_TOKENS,
    chat_plan,
    completion_prompts,
    completion_requests,
    generation_request,
    tool_use,
    with_chat_prompt,
)
from webui.api.deps import Chat, Hearth
from webui.api.errors import APIError
from webui.api.render import ChatRenderer, CompletionRenderer
from webui.api.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from webui.api.streaming import respond, while_loading
from webui.errors import HearthError
from webui.input_errors import check_token_ids
from webui.model_pool import ModelLoadFailed, NotEnoughMemory, PoolError, Slot
from webui.sampling.presets import PresetLibrary

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["OpenAI-compatible"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON, a field of the wrong type or out of range"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    503: {"model": ErrorResponse, "description": "No model is loaded"},
}
ROUTED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`model` names no model of /v1/models and no alias"},
    500: {"model": ErrorResponse, "description": "The model named could not be loaded (the message says why)"},
    503: {"model": ErrorResponse, "description": "No model is loaded; or the model named does not fit in the memory "
                                                 "budget and no idle model can be unloaded"},
}


#: Chunk models named only in SSE descriptions; create_api adds them to the OpenAPI components.
STREAMED_MODELS: list[type[BaseModel]] = []


def _streamed(chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """Document the SSE alternative of a 200 (with stream=true)."""
    STREAMED_MODELS.append(chunk)
    schema = {  # one server-sent event (as OpenAPI tools read an event-stream schema)
        "type": "object",
        "description": f"With stream=true: events whose `data` is a {chunk.__name__} JSON "
                       f"(schema #/components/schemas/{chunk.__name__}), then `data: [DONE]`.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
        "required": ["data"],
    }
    return {200: {"content": {"text/event-stream": {"schema": schema}}}, **ERRORS, **ROUTED}


@router.post("/v1/completions", response_model=CompletionResponse, responses=_streamed(CompletionResponse))
async def completions(body: CompletionRequest, request: Request, hearth: Hearth) -> Any:
    """Text completion: one choice per prompt (a list of prompts is a batch) and per sample (`n`), run one
    after another in order. Every sampler field is accepted by its text-generation-webui name."""

    async def run(slot: Slot) -> Any:
        model = slot.models.require()
        prompts = completion_prompts(body)
        for prompt in prompts:  # before echo decodes them
            check_token_ids(prompt.get("prompt_ids", ()), model.vocab_size, "prompt")
        generations = completion_requests(body, prompts, PresetLibrary.for_settings(hearth.settings).folders)
        echoes = await run_in_threadpool(_echoes, model, prompts) if body.echo else [""] * len(prompts)
        renderer = CompletionRenderer(slot.models.model_name or "", [e for e in echoes for _ in range(body.n)],
                                      body.logprobs, n=body.n)
        return await respond(request, lambda cancel, sink: slot.core.start_many(generations, cancel, sink), renderer,
                             body.stream, expected=len(generations))

    return await routed(hearth, body.model, body.stream, run)


async def routed(hearth: Hearth, name: str | None, streaming: bool, run: Callable[[Slot], Awaitable[Any]]) -> Any:
    """`run` the request on the model `name` routes to, loading it first when needed; the slot is leased
    (kept from eviction) until `run` returns, by which time its generation has started."""
    pool = hearth.pool
    target = pool.target(name)
    slot = pool.lease_ready(target)
    if slot is None and streaming:
        return while_loading(target, _acquire(hearth, target), run, pool.release)
    if slot is None:
        slot = await _acquire(hearth, target)
    try:
        return await run(slot)
    finally:
        pool.release(slot)


@contextmanager
def leased(hearth: Hearth, name: str | None) -> Iterator[Slot]:
    """`routed` for the synchronous routes (tokens, logits, chat prompts): the slot `name` routes to, loaded
    first when needed (this thread waits), kept from eviction while the block runs."""
    pool = hearth.pool
    try:
        slot = pool.acquire(pool.target(name))  # a loaded model is leased at once
    except PoolError as exc:
        raise pool_error(exc) from None
    try:
        yield slot
    finally:
        pool.release(slot)


async def _acquire(hearth: Hearth, target: str) -> Slot:
    try:
        return await run_in_threadpool(hearth.pool.acquire, target)
    except PoolError as exc:
        raise pool_error(exc) from None


def pool_error(exc: PoolError) -> APIError | HearthError:
    """Not enough room: 503 insufficient_memory; a failed load: 500 model_load_failed (the cause named)."""
    if isinstance(exc, NotEnoughMemory):
        return APIError(503, str(exc), param="model", code="insufficient_memory")
    if isinstance(exc, ModelLoadFailed):
        return APIError(500, str(exc), param="model", code="model_load_failed")
    return exc


def _echoes(model: Any, prompts: list[dict[str, Any]]) -> list[str]:
    """Each prompt as echoed: the text as sent, or token ids decoded (special tokens skipped)."""
    return [p["prompt"] if "prompt" in p else model.detokenize(p["prompt_ids"]) for p in prompts]


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=_streamed(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request, hearth: Hearth, chat: Chat) -> Any:
    """Chat completion. mode=instruct (default): the messages through the model's template, nothing added;
    chat modes use a character. A thinking model's reasoning comes apart as `reasoning_content`; with
    `tools` the model's calls come as `tool_calls` (finish_reason `tool_calls`)."""

    async def run(slot: Slot) -> Any:
        slot.models.require()
        served = chat.bound(slot.models, slot.core)  # that model's template and core
        top = (body.top_logprobs or 0) if body.logprobs else None
        probe = generation_request(body, PresetLibrary.for_settings(hearth.settings).folders, default_max=DEFAULT_CHAT_TOKENS,
                                   logprobs=0 if top is None else max(top, 1), prompt="")
        tools = tool_use(body)
        if tools.forced and probe.sampling.constrained:
            raise APIError(400, "tool_choice: a forced call is written by a grammar; it cannot be combined with "
                                "grammar_string, json_schema or response_format", param="tool_choice", code="invalid_value")
        plan = await run_in_threadpool(chat_plan, served, body, probe, tools)  # the Chat tab's extension hooks included
        generation = with_chat_prompt(probe, plan, tools)
        renderer = ChatRenderer(slot.models.model_name or "", top, plan=plan,  # the reply as generated: untrimmed
                                finish=lambda plan, text: served.finish_reply(plan, text, trim=False))
        return await respond(request, lambda cancel, sink: slot.core.start(generation, cancel, sink, is_chat=True),
                             renderer, body.stream)

    return await routed(hearth, body.model, body.stream, run)


def _cards(hearth: Hearth) -> list[ModelCard]:
    """The UI's model first, then the other loaded ones, then the rest of the models folder (and remotes)."""
    loaded = hearth.pool.loaded_names()
    names = [m.name for m in hearth.models.list_models()]
    ordered = loaded + [n for n in names if n not in loaded]
    return [ModelCard(id=name, loaded=name in loaded) for name in ordered]


@router.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
def list_models(hearth: Hearth) -> ModelList:
    """Every model: the UI's model first, then the others loaded, then the rest; `loaded` says which are in memory."""
    return ModelList(data=_cards(hearth))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={401: ERRORS[401], 404: {"model": ErrorResponse}})
def get_model(model_id: str, hearth: Hearth) -> ModelCard:
    for card in _cards(hearth):
        if card.id == model_id:
            return card
    raise APIError(404, f"no model named {model_id!r}", param="model", code="model_not_found")
