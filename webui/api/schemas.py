"""Request and response models of the API: the OpenAPI document is generated from these.

Requests ignore fields they do not know (SillyTavern forwards its whole settings body, with fields for
other backends), but a known field of the wrong type or out of range is an error naming it. The sampler
fields are derived from `SamplingParams`, so every sampler is accepted under its text-generation-webui
name with the same bounds, and a new sampler needs no change here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from webui.api.tool_schemas import (
    HistoryToolCall,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from webui.prompts.chat import ChatMode
from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingParams

#: Sampler fields that SillyTavern (and text-generation-webui) may also send as one string.
_STRING_FORMS = {"dry_sequence_breakers", "custom_token_bans", "banned_strings", "sampler_priority"}
MAX_NEW_TOKENS = 1 << 20


def _priority_schema() -> dict[str, Any]:
    """What the server accepts for sampler_priority: a list of sampler names, or the names in one string
    separated by commas or newlines (SillyTavern / text-generation-webui's UI)."""
    names = "|".join(re.escape(n) for n in DEFAULT_SAMPLER_PRIORITY)
    return {"anyOf": [
        {"type": "array", "items": {"type": "string", "enum": list(DEFAULT_SAMPLER_PRIORITY)}},
        {"type": "string", "pattern": rf"^[\s,]*(?:(?:{names})[ \t]*(?:[,\n][\s,]*|$))*$"},
        {"type": "null"},
    ]}


#: The documented (OpenAPI) form of string-form fields whose accepted strings are narrower than "any".
_SCHEMAS: dict[str, dict[str, Any]] = {
    "sampler_priority": _priority_schema(),
    "custom_token_bans": {"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    {"type": "string", "pattern": "^[0-9 ,]*$"}, {"type": "null"}]},
}


def _with_default(info: Any) -> str:
    """A sampler field's sentence plus its neutral default (absent = that default)."""
    default = f"Default: {info.get_default(call_default_factory=True)!r}."
    return f"{info.description} {default}" if info.description else default


def _optional(name: str, info: FieldInfo) -> tuple[Any, Any]:
    annotation: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    if name in _STRING_FORMS:
        annotation = annotation | str
    annotation = annotation | None
    if name in _SCHEMAS:  # validated as before (SamplingParams names the bad value); documented exactly
        annotation = Annotated[annotation, WithJsonSchema(_SCHEMAS[name])]
    return annotation, Field(None, description=_with_default(info))


#: Every sampler setting, optional: None (or absent) keeps the preset's / neutral value.
SamplerFields = create_model(  # type: ignore[call-overload]
    "SamplerFields",
    __config__=ConfigDict(extra="ignore"),
    __doc__="Sampler settings by their text-generation-webui names; absent = the preset's or neutral value.",
    **{name: _optional(name, info) for name, info in SamplingParams.model_fields.items()},
    preset=(str | None, Field(None, description="A preset from presets/ or user_data/presets/ as the base; given fields override it.")),
)
SAMPLER_FIELD_NAMES: tuple[str, ...] = tuple(SamplingParams.model_fields)


def routed_model_field() -> Any:
    """`model` as every routed request takes it (webui.model_pool)."""
    return Field(None, description="The model to answer: a name of /v1/models or an alias of "
                 "user_data/model_aliases.yaml, loaded first when it is not (docs/api.md, routing). "
                 "Empty, null or the UI's model: the UI's model answers.")


class GenerationFields(SamplerFields):  # type: ignore[misc, valid-type]
    """Fields shared by completions and chat completions (OpenAI names plus text-generation-webui's)."""

    model: str | None = routed_model_field()
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate (wins over max_new_tokens).")
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="text-generation-webui's name for max_tokens.")
    stop: str | list[str] | None = Field(None, description="Stop strings (merged with stopping_strings).")
    stopping_strings: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    add_bos_token: bool = True
    skip_special_tokens: bool = Field(True, description="Accepted for compatibility; special tokens are always skipped.")
    truncation_length: int | None = Field(
        None, ge=0, description="Context budget (prompt + reply); longer prompts lose their oldest tokens. 0/absent = the model's context."
    )
    response_format: ResponseFormat | None = Field(
        None, description="json_object: the reply is a JSON object; json_schema: JSON that follows the schema (constrained decoding, every loader)."
    )


#: Most choices one completion request may ask for (prompts x n).
MAX_CHOICES = 256


class CompletionRequest(GenerationFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text, or token ids, or a list of several of either (one choice each, in order)."
    )
    echo: bool = Field(False, description="Prefix the reply with the prompt (with logprobs: one entry per prompt token sent).")
    logprobs: int | None = Field(None, ge=0, le=50, description="Report the top-N alternatives of each token (legacy shape).")
    max_tokens: int | None = Field(
        None, ge=0, le=MAX_NEW_TOKENS, description="Tokens to generate; default 16 (OpenAI). 0 with echo scores the prompt only."
    )
    max_new_tokens: int | None = Field(None, ge=0, le=MAX_NEW_TOKENS, description="text-generation-webui's name for max_tokens.")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Choices per prompt (choice index = prompt * n + sample).")


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(description="A data: URL (data:image/png;base64,...); an http(s) URL only when the server "
                                 "was started with --allow-image-urls.")
    detail: str | None = Field(None, description="Accepted for compatibility (auto, low, high); the model's "
                                                  "own processor decides the resolution.")


class ContentPart(BaseModel):
    """One part of a message's content (OpenAI's): text and image_url parts are read, other kinds ignored."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | str | None = Field(None, description="The image of a part of type image_url: "
                                                               "{url, detail}, or the URL as a string.")

    @model_validator(mode="after")
    def _text_part_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a part of type 'text' needs a 'text' string")
        return self  # an image_url part is checked with its image (webui.chat_messages), naming the part


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[HistoryToolCall] | None = Field(None, description="An assistant's calls (assistant messages).")
    tool_call_id: str | None = Field(None, description="The call a tool message answers (required on tool messages).")
    reasoning_content: str | None = Field(None, description="An earlier reply's reasoning, for templates that keep it.")

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id: the id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong to assistant messages, not {self.role}")
        return self


class ChatFields(GenerationFields):
    """A chat: the messages and how they become a prompt (text-generation-webui's chat fields)."""

    messages: list[ChatMessage] = Field(min_length=1)
    mode: ChatMode = Field("instruct", description="instruct: the instruction template; chat / chat-instruct: a character transcript.")
    character: str | None = Field(None, description="A character from user_data/characters (chat modes); default: Assistant.")
    instruction_template: str | None = Field(None, description="A template from templates/ or user_data/templates/; default: the model's own / detected.")
    user_name: str | None = Field(None, validation_alias=AliasChoices("user_name", "name1"), description="Your name in chat modes (alias name1).")
    chat_instruct_command: str | None = None
    continue_: bool = Field(False, description="Continue the last assistant message instead of answering.")
    tools: list[Tool] | None = Field(None, description="Functions the model may call (instruct mode), given to the model's own chat template.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="auto (default with tools): the model decides; none: no call; required or a named function: "
                          "a call is forced (by a grammar, so it always parses).")
    parallel_tool_calls: bool = Field(True, description="Whether one reply may hold several calls.")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="Extra variables for the chat template, e.g. {\"enable_thinking\": false}.")
    enable_thinking: bool | None = Field(None, description="Turn a thinking model's reasoning on or off (its template's enable_thinking).")
    reasoning_effort: str | None = Field(None, description="low / medium / high, for templates that read it (gpt-oss).")
    thinking_budget: int | None = Field(None, ge=0, le=MAX_NEW_TOKENS, description="Most reasoning tokens; then the reasoning "
                                        "block is closed and the answer starts. 0/absent: no limit.")


class ChatCompletionRequest(ChatFields):
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


# -- responses --------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """The legacy completions shape, as SillyTavern reads it (`top_logprobs`: one {token: logprob} per token)."""

    tokens: list[str] = Field(default_factory=list)
    #: None for an echoed prompt's first token when nothing precedes it (no BOS), as OpenAI's.
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    #: Choice order: prompt * n + sample.
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    """A completion; streamed chunks have the same shape (usage only in the last one)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] = Field(default_factory=list)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; null when the reply is only tool calls.")
    reasoning_content: str | None = Field(None, description="A thinking model's reasoning, split from the answer.")
    tool_calls: list[ToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed chat completion; the last carries finish_reason and usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "hearth"
    loaded: bool = Field(False, description="Whether the model is in memory now (a request naming another loads it).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- internal endpoints -----------------------------------------------------------------------------
class ModelInfoResponse(BaseModel):
    model_name: str = Field(description="The loaded model, or 'None' (as text-generation-webui) when none is.")
    loader: str | None = None
    lora_names: list[str] = Field(default_factory=list)
    info: dict[str, Any] | None = Field(None, description="Architecture, context length, vocabulary, ...")


class ModelNamesResponse(BaseModel):
    model_names: list[str]


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_name: str
    loader: str | None = Field(None, description="Default: chosen from the model (may also be given as args.loader).")
    args: dict[str, Any] = Field(default_factory=dict, description="Loader parameters, e.g. {\"n_ctx\": 4096}.")


class UnloadModelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="The model to unload (default: the UI's model).")
    cancel: bool = Field(False, description="Stop its running and queued requests instead of waiting for them.")


class LoraListResponse(BaseModel):
    lora_names: list[str] = Field(description="The adapters in the LoRA folder (PEFT folders and GGUF adapters).")


class LoadLorasRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_names: list[str] = Field(description="Adapters to apply, replacing those applied now; [] removes them.")
    lora_weights: list[float] | None = Field(None, description="One scale per LoRA (default 1.0 each).")


class EncodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    model: str | None = routed_model_field()
    add_bos_token: bool = True


class EncodeResponse(BaseModel):
    tokens: list[int]
    length: int


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[int]
    model: str | None = routed_model_field()


class DecodeResponse(BaseModel):
    text: str


class TokenCountResponse(BaseModel):
    length: int


class LogitsRequest(SamplerFields):  # type: ignore[misc, valid-type]
    prompt: str
    model: str | None = routed_model_field()
    top_logits: int = Field(50, ge=1, le=1000, description="How many of the most likely next tokens to return.")
    use_samplers: bool = Field(False, description="Probabilities after the sampler fields given, instead of raw.")
    add_bos_token: bool = True
    detailed: bool = Field(False, description="Answer with Hearth's LogitsDetailedResponse (token ids, log-probabilities) "
                           "instead of text-generation-webui's flat {token: probability}.")


class TokenProbability(BaseModel):
    token_id: int
    token: str
    prob: float
    logprob: float | None = Field(description="null where prob is 0 (a sampler removed the token).")


class LogitsResponse(RootModel[dict[str, float]]):
    """text-generation-webui's answer: {token text: probability}, most likely first; of tokens with equal
    text the likelier one."""


class LogitsDetailedResponse(BaseModel):
    """The answer with `detailed: true`."""

    logits: dict[str, float] = Field(description="{token text: probability}: the plain answer.")
    top_logits: list[TokenProbability] = Field(description="The same, as a list (tokens with equal text stay apart).")


class ChatPromptResponse(BaseModel):
    prompt: str
    stop_strings: list[str]
    dropped_turns: int = Field(description="Oldest turns left out to fit the context.")
    length: int = Field(description="Prompt length in tokens.")


class StopResponse(BaseModel):
    status: Literal["ok"] = "ok"
    stopped: int = Field(description="Generations signalled (running and queued).")


class SamplerRoutingRequest(SamplerFields):  # type: ignore[misc, valid-type]
    """The sampler fields of a completion request (same names, same presets), plus its logprobs."""

    logprobs: bool | Annotated[int, Field(ge=0, le=50)] | None = Field(
        None, description="As in a completion (an integer; 0 still asks for one) or a chat completion (true)."
    )


class SamplerRoutingResponse(BaseModel):
    """Where a request with these settings runs on the loaded model."""

    loader: str
    native_sampler: str | None = Field(
        description="The backend's own sampler, or null when the loader always uses Hearth's pipeline."
    )
    path: Literal["native", "pipeline"]
    active: list[str] = Field(description="The settings that change anything, in the order they run.")
    native: list[str] = Field(description="Active settings run by the backend's own sampler.")
    pipeline: list[str] = Field(description="Active settings run by Hearth's sampler pipeline.")
    forced_pipeline: dict[str, str] = Field(description="Setting -> why it sent the request to the pipeline.")
    unavailable: dict[str, str] = Field(description="Setting -> why this loader cannot run it (refused).")
    slower: bool = Field(description="The pipeline was forced on a backend that has a faster native sampler.")
    extension_processors: list[str] = Field(
        default_factory=list,
        description="Enabled extensions that may add a logits processor to a request (that request then runs in the pipeline).",
    )


class SettingRouteInfo(BaseModel):
    runs: Literal["native", "pipeline", "unavailable"]
    reason: str | None = Field(description="Why it is not native (null when it is).")
    slower: bool = Field(description="Pipeline on a backend that has a faster native sampler.")
    example: dict[str, Any] = Field(description="The value(s) it was turned on with.")


class SamplersResponse(BaseModel):
    """Every setting on its own, on the loaded model."""

    model_name: str
    loader: str
    native_sampler: str | None
    settings: dict[str, SettingRouteInfo]
    extension_processors: list[str] = Field(default_factory=list)
