"""The OpenAI-compatible routes: /v1/completions, /v1/chat/completions, /v1/models.

They only translate: body -> GenerationRequest (convert.py), core events -> OpenAI shapes (render.py).
The `model` field of a request is ignored: the loaded model answers (load another with
/v1/internal/model/load), as text-generation-webui does.
"""

from __future__ import annotations

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
from webui.api.streaming import respond
from webui.input_errors import check_token_ids
from webui.sampling.presets import PresetLibrary

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["OpenAI-compatible"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON, a field of the wrong type or out of range"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    503: {"model": ErrorResponse, "description": "No model is loaded"},
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
    return {200: {"content": {"text/event-stream": {"schema": schema}}}, **ERRORS}


@router.post("/v1/completions", response_model=CompletionResponse, responses=_streamed(CompletionResponse))
async def completions(body: CompletionRequest, request: Request, hearth: Hearth) -> Any:
    """Text completion: one choice per prompt (a list of prompts is a batch) and per sample (`n`), run one
    after another in order. Every sampler field is accepted by its text-generation-webui name."""
    model = hearth.models.require()
    prompts = completion_prompts(body)
    for prompt in prompts:  # before echo decodes them
        check_token_ids(prompt.get("prompt_ids", ()), model.vocab_size, "prompt")
    generations = completion_requests(body, prompts, PresetLibrary.for_settings(hearth.settings).folders)
    echoes = await run_in_threadpool(_echoes, model, prompts) if body.echo else [""] * len(prompts)
    renderer = CompletionRenderer(hearth.models.model_name or "", [e for e in echoes for _ in range(body.n)],
                                  body.logprobs, n=body.n)
    return await respond(request, lambda cancel, sink: hearth.core.start_many(generations, cancel, sink), renderer,
                         body.stream, expected=len(generations))


def _echoes(model: Any, prompts: list[dict[str, Any]]) -> list[str]:
    """Each prompt as echoed: the text as sent, or token ids decoded (special tokens skipped)."""
    return [p["prompt"] if "prompt" in p else model.detokenize(p["prompt_ids"]) for p in prompts]


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=_streamed(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request, hearth: Hearth, chat: Chat) -> Any:
    """Chat completion. mode=instruct (default): the messages through the model's template, nothing added;
    chat modes use a character. A thinking model's reasoning comes apart as `reasoning_content`; with
    `tools` the model's calls come as `tool_calls` (finish_reason `tool_calls`)."""
    hearth.models.require()
    top = (body.top_logprobs or 0) if body.logprobs else None
    probe = generation_request(body, PresetLibrary.for_settings(hearth.settings).folders, default_max=DEFAULT_CHAT_TOKENS,
                               logprobs=0 if top is None else max(top, 1), prompt="")
    tools = tool_use(body)
    if tools.forced and probe.sampling.constrained:
        raise APIError(400, "tool_choice: a forced call is written by a grammar; it cannot be combined with "
                            "grammar_string, json_schema or response_format", param="tool_choice", code="invalid_value")
    plan = await run_in_threadpool(chat_plan, chat, body, probe, tools)  # the Chat tab's extension hooks included
    generation = with_chat_prompt(probe, plan, tools)
    renderer = ChatRenderer(hearth.models.model_name or "", top, plan=plan,  # the reply as generated: untrimmed
                            finish=lambda plan, text: chat.finish_reply(plan, text, trim=False))
    return await respond(request, lambda cancel, sink: hearth.core.start(generation, cancel, sink, is_chat=True),
                         renderer, body.stream)


def _cards(hearth: Hearth) -> list[ModelCard]:
    loaded = hearth.models.model_name
    names = [m.name for m in hearth.models.list_models()]
    ordered = ([loaded] if loaded else []) + [n for n in names if n != loaded]
    return [ModelCard(id=name) for name in ordered]


@router.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
def list_models(hearth: Hearth) -> ModelList:
    """The loaded model first, then the other models in the models folder."""
    return ModelList(data=_cards(hearth))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={401: ERRORS[401], 404: {"model": ErrorResponse}})
def get_model(model_id: str, hearth: Hearth) -> ModelCard:
    for card in _cards(hearth):
        if card.id == model_id:
            return card
    raise APIError(404, f"no model named {model_id!r}", param="model", code="model_not_found")
