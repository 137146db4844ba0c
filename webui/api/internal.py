"""text-generation-webui's /v1/internal routes: model management, tokens, logits, chat prompts, stop;
and Hearth's own /v1/internal/samplers (where each sampler setting runs on the loaded model).

SillyTavern connects with /v1/internal/model/info and counts tokens with /v1/internal/encode. Load and
unload are guarded by the admin key (the API key when no admin key is set) instead of the API key.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from webui.api.auth import require_admin_key, require_api_key
from webui.api.convert import DEFAULT_CHAT_TOKENS, chat_plan, generation_request, sampling_from, tool_use
from webui.api.deps import Chat, Hearth
from webui.api.openai import ERRORS, ROUTED, leased
from webui.api.schemas import (
    ChatFields,
    ChatPromptResponse,
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    LoadLorasRequest,
    LoadModelRequest,
    LogitsDetailedResponse,
    LogitsRequest,
    LogitsResponse,
    LoraListResponse,
    ModelInfoResponse,
    ModelNamesResponse,
    SamplerRoutingRequest,
    SamplerRoutingResponse,
    SamplersResponse,
    SettingRouteInfo,
    StopResponse,
    TokenCountResponse,
    TokenProbability,
    UnloadModelRequest,
)
from webui.api.trace_schemas import LogitsTraceRequest, LogitsTraceResponse
from webui.input_errors import check_token_ids
from webui.loras import discover_loras, resolve_choices
from webui.sampling import SamplingParams
from webui.sampling.presets import PresetLibrary
from webui.sampling.routing import route
from webui.sampling.routing_table import each_setting, processor_extensions, route_loaded
from webui.sampling.trace import sampler_trace

router = APIRouter(prefix="/v1/internal", dependencies=[Depends(require_api_key)], tags=["Internal"])
admin = APIRouter(prefix="/v1/internal", dependencies=[Depends(require_admin_key)], tags=["Internal (admin)"])
#: The routes that take `model` (the model whose tokenizer, logits or template answer), as completions do.
ROUTED_ERRORS = {**ERRORS, **ROUTED}


def _info(hearth: Hearth) -> ModelInfoResponse:
    models = hearth.models
    if models.model is None:
        return ModelInfoResponse(model_name="None")
    return ModelInfoResponse(model_name=models.model_name or "None", loader=models.loader_name,
                             lora_names=models.lora_names, info=models.model.info.as_dict())


@router.get("/model/info", response_model=ModelInfoResponse, responses={401: ERRORS[401]})
def model_info(hearth: Hearth) -> ModelInfoResponse:
    """The loaded model ('None' when none is, as text-generation-webui answers)."""
    return _info(hearth)


@router.get("/model/list", response_model=ModelNamesResponse, responses={401: ERRORS[401]})
def model_list(hearth: Hearth) -> ModelNamesResponse:
    return ModelNamesResponse(model_names=[m.name for m in hearth.models.list_models()])


@admin.post("/model/load", response_model=ModelInfoResponse, responses=ERRORS)
async def load_model(body: LoadModelRequest, hearth: Hearth) -> ModelInfoResponse:
    """Unload the UI's model and load another in its place; waits for the running generation to finish. A
    model the API already loaded by name with these settings is taken as it is (no second copy)."""
    args = dict(body.args)
    loader = body.loader or args.pop("loader", None)
    args.pop("loader", None)
    await run_in_threadpool(hearth.pool.load_ui, body.model_name, loader, args)
    return _info(hearth)


@admin.post("/model/unload", response_model=ModelInfoResponse, responses={401: ERRORS[401]})
async def unload_model(hearth: Hearth, body: UnloadModelRequest | None = None) -> ModelInfoResponse:
    """Unload the UI's model, or `model` (any loaded one), after its requests finish; with `cancel` they are
    stopped first. Answers with the UI's model as /model/info does."""
    body = body or UnloadModelRequest()
    await run_in_threadpool(hearth.pool.unload, body.model, body.cancel)
    return _info(hearth)


@admin.get("/lora/list", response_model=LoraListResponse, responses={401: ERRORS[401]})
def lora_list(hearth: Hearth) -> LoraListResponse:
    """The adapters in the LoRA folder (admin key, as text-generation-webui)."""
    return LoraListResponse(lora_names=[lora.name for lora in discover_loras(hearth.settings.loras_dir)])


@admin.post("/lora/load", response_model=ModelInfoResponse,
            responses={**ERRORS, 404: {"model": ErrorResponse, "description": "No LoRA of that name in the LoRA folder"}})
async def load_loras(body: LoadLorasRequest, hearth: Hearth) -> ModelInfoResponse:
    """Apply exactly these LoRAs to the loaded model (replacing those applied) without reloading it."""
    loras = resolve_choices(hearth.settings.loras_dir, body.lora_names, body.lora_weights)
    await run_in_threadpool(hearth.models.apply_loras, loras)
    return _info(hearth)


@admin.post("/lora/unload", response_model=ModelInfoResponse, responses=ERRORS)
async def unload_loras(hearth: Hearth) -> ModelInfoResponse:
    """Remove every applied LoRA (the base model's outputs come back exactly)."""
    if hearth.models.model is not None:
        await run_in_threadpool(hearth.models.apply_loras, [])
    return _info(hearth)


@router.post("/encode", response_model=EncodeResponse, responses=ROUTED_ERRORS)
def encode(body: EncodeRequest, hearth: Hearth) -> EncodeResponse:
    with leased(hearth, body.model) as slot:
        tokens = slot.core.tokenize(body.text, body.add_bos_token)
    return EncodeResponse(tokens=tokens, length=len(tokens))


@router.post("/decode", response_model=DecodeResponse, responses=ROUTED_ERRORS)
def decode(body: DecodeRequest, hearth: Hearth) -> DecodeResponse:
    with leased(hearth, body.model) as slot:
        check_token_ids(body.tokens, slot.models.require().vocab_size, "tokens")
        return DecodeResponse(text=slot.core.detokenize(body.tokens))


@router.post("/token-count", response_model=TokenCountResponse, responses=ROUTED_ERRORS)
def token_count(body: EncodeRequest, hearth: Hearth) -> TokenCountResponse:
    with leased(hearth, body.model) as slot:
        return TokenCountResponse(length=len(slot.core.tokenize(body.text, body.add_bos_token)))


@router.post("/logits", response_model=LogitsResponse | LogitsDetailedResponse, responses=ROUTED_ERRORS)
def logits(body: LogitsRequest, hearth: Hearth) -> LogitsResponse | LogitsDetailedResponse:
    """The most likely next tokens after `prompt`, raw or after the samplers (waits its turn in the queue):
    text-generation-webui's flat {token: probability}, or with `detailed` also ids and log-probabilities."""
    sampling = sampling_from(body, PresetLibrary.for_settings(hearth.settings).folders)
    with leased(hearth, body.model) as slot:
        top = slot.core.top_tokens(body.prompt, body.top_logits, body.use_samplers, sampling, body.add_bos_token)
    items = [TokenProbability(token_id=t.token_id, token=t.text, prob=math.exp(t.logprob), logprob=t.logprob) for t in top]
    flat: dict[str, float] = {}
    for item in items:
        flat.setdefault(item.token, item.prob)
    return LogitsDetailedResponse(logits=flat, top_logits=items) if body.detailed else LogitsResponse(flat)


@router.post("/chat-prompt", response_model=ChatPromptResponse, responses=ROUTED_ERRORS)
def chat_prompt_route(body: ChatFields, hearth: Hearth, chat: Chat) -> ChatPromptResponse:
    """The prompt text (and stop strings) a /v1/chat/completions request with this body would use."""
    probe = generation_request(body, PresetLibrary.for_settings(hearth.settings).folders, default_max=DEFAULT_CHAT_TOKENS, prompt="")
    with leased(hearth, body.model) as slot:
        prompt = chat_plan(chat.bound(slot.models, slot.core), body, probe, tool_use(body)).prompt
        length = len(slot.core.tokenize(prompt.text, body.add_bos_token))
    return ChatPromptResponse(prompt=prompt.text, stop_strings=list(prompt.stop_strings),
                              dropped_turns=prompt.dropped_turns, length=length)


@router.post("/stop-generation", response_model=StopResponse, responses={401: ERRORS[401]})
def stop_generation(hearth: Hearth) -> StopResponse:
    """Stop the running generations and every queued one, on every loaded model."""
    return StopResponse(stopped=hearth.pool.stop_all())


@router.get("/samplers", response_model=SamplersResponse, responses=ERRORS)
def samplers(hearth: Hearth) -> SamplersResponse:
    """Every sampler setting on its own (a typical value): native, pipeline or unavailable on the loaded model."""
    model = hearth.models.require()
    base = route(model, SamplingParams())
    table = each_setting(model, processors=bool(hearth.core.extra_processors))
    return SamplersResponse(
        model_name=hearth.models.model_name or "",
        loader=base.loader,
        native_sampler=base.native_sampler,
        settings={name: SettingRouteInfo(**vars(one)) for name, one in table.items()},
        extension_processors=processor_extensions(hearth),
    )


@router.post("/samplers", response_model=SamplerRoutingResponse, responses=ERRORS)
def samplers_for(body: SamplerRoutingRequest, hearth: Hearth) -> SamplerRoutingResponse:
    """Where a completion request with these sampler fields (and logprobs) would run."""
    logprobs = 0 if body.logprobs is None or body.logprobs is False else max(int(body.logprobs), 1)
    routing = route_loaded(hearth, sampling_from(body, PresetLibrary.for_settings(hearth.settings).folders), logprobs=logprobs)
    return SamplerRoutingResponse(**routing.as_dict(), extension_processors=processor_extensions(hearth))


@router.post("/logits/trace", response_model=LogitsTraceResponse, responses=ROUTED_ERRORS)
def logits_trace(body: LogitsTraceRequest, hearth: Hearth) -> LogitsTraceResponse:
    """What each sampler did at one position of `prompt` (waits its turn in the queue): the top tokens of the
    model's distribution, then after each step of the active chain in order (logit_bias first, the picker
    last), with the tokens each step removed and the entropy. The last stage is /v1/internal/logits's answer
    with `use_samplers`."""
    sampling = sampling_from(body, PresetLibrary.for_settings(hearth.settings).folders)
    with leased(hearth, body.model) as slot:
        trace = sampler_trace(slot.core, body.prompt, body.position, sampling, body.top_logits,
                              add_bos=body.add_bos_token)
    return LogitsTraceResponse.of(trace)
