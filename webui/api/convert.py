"""API request bodies -> the core's typed `GenerationRequest`.

Where OpenAI and text-generation-webui name the same thing twice (max_tokens / max_new_tokens,
stop / stopping_strings) both are accepted: the OpenAI name wins for counts, stop lists are merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from webui.api.errors import APIError, from_validation
from webui.api.schemas import (
    MAX_CHOICES,
    SAMPLER_FIELD_NAMES,
    ChatFields,
    CompletionRequest,
    GenerationFields,
)
from webui.api.tool_schemas import NamedToolChoice
from webui.chat_service import ChatOptions, ChatService, ReplyPlan
from webui.generation import GenerationRequest
from webui.media_urls import image_resolver
from webui.prompts.tool_calls import ToolCallFormat, call_frame, call_schema
from webui.sampling import SamplingParams, load_preset
from webui.sampling.constraints import ANY_JSON_OBJECT, framed_json_grammar
from webui.sampling.presets import PresetFolders

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ToolUse:
    """What a chat request lets the model call: the tools it is shown, the functions a call is forced to
    (empty: the model decides), and whether one reply may hold several calls."""

    tools: tuple[dict[str, Any], ...] = ()
    forced: tuple[str, ...] = ()
    parallel: bool = True

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_CHAT_TOKENS = 512


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data`; a problem becomes a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def sampling_from(body: BaseModel, presets_dir: PresetFolders) -> SamplingParams:
    """The preset (or neutral defaults) overridden by the sampler fields the client gave."""
    given = {name: value for name in SAMPLER_FIELD_NAMES if (value := getattr(body, name)) is not None}
    given.update(response_format_fields(body, given))
    preset = getattr(body, "preset", None)
    if not preset:
        return validated(SamplingParams, given)
    return validated(SamplingParams, {**load_preset(presets_dir, preset).model_dump(), **given})


def response_format_fields(body: BaseModel, given: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's response_format as the sampler field that carries it out (`json_schema`)."""
    fmt = getattr(body, "response_format", None)
    if fmt is None or fmt.type == "text":
        return {}
    taken = [name for name in ("json_schema", "grammar_string") if given.get(name)]
    if taken:
        raise APIError(400, f"response_format cannot be combined with {' and '.join(taken)}: give one constraint",
                       param="response_format", code="invalid_value")
    if fmt.type == "json_object":
        return {"json_schema": dict(ANY_JSON_OBJECT)}
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else {}
    return {"json_schema": schema or dict(ANY_JSON_OBJECT)}


def max_new_tokens(body: GenerationFields, default: int) -> int:
    if body.max_tokens is not None:
        return body.max_tokens
    return body.max_new_tokens if body.max_new_tokens is not None else default


def _strings(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(s for s in items if s))


def generation_request(body: GenerationFields, presets_dir: PresetFolders, *, default_max: int, logprobs: int = 0,
                       prompt_logprobs: int | None = None, extra_stop: Iterable[str] = (), **prompt: Any) -> GenerationRequest:
    """`prompt` is prompt=text or prompt_ids=[...]."""
    data = {
        **prompt,
        "prompt_logprobs": prompt_logprobs,
        "max_new_tokens": max_new_tokens(body, default_max),
        "stop": _unique([*_strings(body.stop), *_strings(body.stopping_strings), *extra_stop]),
        "add_bos_token": body.add_bos_token,
        "truncation_length": body.truncation_length or 0,
        "logprobs": logprobs,
        "sampling": sampling_from(body, presets_dir),
    }
    return validated(GenerationRequest, data)


def completion_prompts(body: CompletionRequest) -> list[dict[str, Any]]:
    """[{'prompt': text} or {'prompt_ids': ids}, ...] from OpenAI's four prompt forms: one text, one list of
    token ids, or a list of either (a batch: one choice each, in order)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [{"prompt": prompt}]
    if not prompt:
        raise APIError(400, "prompt: give a text, a list of token ids, or a list of those (got an empty list)",
                       param="prompt", code="invalid_value")
    if all(isinstance(t, int) for t in prompt):
        return [{"prompt_ids": list(prompt)}]
    if len(prompt) * body.n > MAX_CHOICES:
        raise APIError(400, f"n: {len(prompt)} prompts x n={body.n} is more than {MAX_CHOICES} choices in one request",
                       param="n", code="invalid_value")
    return [{"prompt": one} if isinstance(one, str) else {"prompt_ids": list(one)} for one in prompt]


def completion_requests(body: CompletionRequest, prompts: list[dict[str, Any]], presets_dir: PresetFolders) -> list[GenerationRequest]:
    """One request per choice: each prompt `n` times (choice index = prompt * n + sample, as OpenAI's).
    A fixed seed gives sample j the seed + j, so sample 0 is what n=1 gives and the others differ."""
    logprobs = body.logprobs
    scored = max(logprobs, 1) if body.echo and logprobs is not None else None
    requests = []
    for prompt in prompts:
        base = generation_request(body, presets_dir, default_max=DEFAULT_COMPLETION_TOKENS,
                                  logprobs=0 if logprobs is None else max(logprobs, 1), prompt_logprobs=scored, **prompt)
        requests += [base if j == 0 or base.sampling.seed < 0 else
                     base.model_copy(update={"sampling": base.sampling.model_copy(update={"seed": (base.sampling.seed + j) % 2**63})})
                     for j in range(body.n)]
    return requests


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="invalid_value")


def tool_use(body: ChatFields) -> ToolUse:
    """The request's tools and tool_choice, checked: a forced function must be one of the tools."""
    tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
    names = [t["function"]["name"] for t in tools]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _invalid("tools", f"function names must be unique; repeated: {', '.join(repeated)}")
    if tools and body.mode != "instruct":
        raise _invalid("tools", f"tools need mode 'instruct' (the model's own template), not {body.mode!r}")
    choice = body.tool_choice or ("auto" if tools else "none")
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise _invalid("tool_choice", f"names the function {choice.function.name!r}, which is not in tools "
                                          f"({', '.join(names) or 'none given'})")
        return ToolUse(tuple(tools), (choice.function.name,), body.parallel_tool_calls)
    if choice == "required":
        if not tools:
            raise _invalid("tool_choice", "'required' needs tools to call")
        return ToolUse(tuple(tools), tuple(names), body.parallel_tool_calls)
    return ToolUse(tuple(tools) if choice == "auto" else (), (), body.parallel_tool_calls)


def _check_tool_history(body: ChatFields) -> None:
    """Every tool message answers a call made earlier in the conversation."""
    called: set[str] = set()
    for index, message in enumerate(body.messages):
        for call in message.tool_calls or ():
            called.add(call.id)
        if message.role == "tool" and message.tool_call_id not in called:
            raise _invalid(f"messages.{index}.tool_call_id", f"{message.tool_call_id!r} answers no earlier "
                                                             "assistant tool call (tool_calls[].id)")


def _template_kwargs(body: ChatFields) -> tuple[dict[str, Any], bool | None]:
    """(extra template variables, the thinking switch): enable_thinking may come either way."""
    kwargs = dict(body.chat_template_kwargs or {})
    if body.reasoning_effort is not None:
        kwargs["reasoning_effort"] = body.reasoning_effort
    thinking = kwargs.pop("enable_thinking", None)
    if body.enable_thinking is not None:
        thinking = body.enable_thinking
    return kwargs, None if thinking is None else bool(thinking)


def chat_plan(service: ChatService, body: ChatFields, probe: GenerationRequest, tools: ToolUse) -> ReplyPlan:
    """The reply a chat request asks for, planned by the same service and extension hooks as the Chat tab.
    `probe` is the request's settings (`generation_request` without a prompt yet). A forced tool call is
    written without a reasoning block, as any constrained reply is (`ChatService.plan_reply`): its grammar
    is only added after planning, so it is said here."""
    if body.continue_ and body.messages[-1].role != "assistant":
        raise APIError(400, "continue_: the last message must be the assistant's (the reply to continue), got "
                            f"{body.messages[-1].role!r}", param="continue_", code="invalid_value")
    _check_tool_history(body)
    kwargs, thinking = _template_kwargs(body)
    defaults = ChatOptions()
    options = ChatOptions(
        mode=body.mode,
        character=body.character,
        user_name=body.user_name or defaults.user_name,
        instruction_template=body.instruction_template,
        chat_instruct_command=body.chat_instruct_command or defaults.chat_instruct_command,
        tools=tools.tools,
        template_kwargs=tuple(kwargs.items()),
        enable_thinking=False if tools.forced else thinking,
        thinking_budget=body.thinking_budget or 0,
    )
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    return service.plan_reply_to_messages(messages, options, probe, continue_last=body.continue_,
                                          image_url=image_resolver(service.app.settings.allow_image_urls))


def with_chat_prompt(probe: GenerationRequest, plan: ReplyPlan, tools: ToolUse | None = None) -> GenerationRequest:
    """The request that generates the planned reply: its prompt, the template's stop strings added, the
    thinking budget, and for a forced tool call the grammar that makes the reply one (or several) calls."""
    stop = _unique([*probe.stop, *plan.prompt.stop_strings])
    update: dict[str, Any] = {"prompt": plan.prompt.text, "stop": stop, "thinking_budget": plan.budget,
                              "special_tokens": plan.shape.reads_markers, "images": list(plan.prompt.images),
                              **plan.chat_fields()}
    if tools is not None and tools.forced:
        update["sampling"] = probe.sampling.model_copy(update={"grammar_string": forced_call_grammar(plan, tools)})
    return probe.model_copy(update=update)


def forced_call_grammar(plan: ReplyPlan, tools: ToolUse) -> str:
    """The grammar (llguidance Lark) for a reply that is only calls of the allowed functions, in the model's own call format (or the
    Hermes format, which every format's reader also takes, where the model's is not JSON-framed)."""
    fmt = plan.shape.tool_format or ToolCallFormat.HERMES
    frame = call_frame(fmt)
    if frame is None:
        fmt, frame = ToolCallFormat.HERMES, call_frame(ToolCallFormat.HERMES)
    assert frame is not None
    prefix, suffix, separator = frame
    schema = call_schema(fmt, list(tools.tools), list(tools.forced))
    if tools.parallel:
        return framed_json_grammar(schema, prefix, suffix + separator, repeat=True)
    return framed_json_grammar(schema, prefix, suffix)
