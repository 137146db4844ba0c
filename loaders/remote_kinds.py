"""What each kind of OpenAI-compatible server accepts: its sampler fields (by their wire names), its
tokenizer endpoints and where it tells its context length. Data, not code paths: adding a kind is adding
a `RemoteKind` to `KINDS`.

A sampler setting a kind does not list is not silently dropped: `unsupported` names it and the request
is refused (`webui.remote_generation`), because Hearth's own pipeline cannot apply it either without the
full logits, which a remote server does not send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webui.sampling import SamplingParams

#: Settings that only shape a random draw: they change nothing in greedy decoding (Hearth's greedy is the
#: most likely token after penalties and bans), so a greedy request never needs the remote to take them.
DRAW_ONLY = frozenset(
    {
        "temperature",
        "dynamic_temperature",
        "dynatemp_low",
        "dynatemp_high",
        "dynatemp_exponent",
        "smoothing_factor",
        "smoothing_curve",
        "top_k",
        "top_p",
        "min_p",
        "top_a",
        "typical_p",
        "tfs",
        "epsilon_cutoff",
        "eta_cutoff",
        "top_n_sigma",
        "xtc_threshold",
        "xtc_probability",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
        "adaptive_target",
        "adaptive_decay",
        "temperature_last",
        "sampler_priority",
        "do_sample",
        "seed",
    }
)

_OPENAI = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
}


@dataclass(frozen=True)
class Tokenizer:
    """A server's tokenizer endpoints and the names of their fields."""

    encode: str
    decode: str
    text_field: str  # the text to encode
    tokens_field: str  # the ids in the encode answer, and the ids sent to decode
    decoded_field: str  # the text in the decode answer
    add_special_field: str | None = None  # the "add BOS" switch, when the endpoint has one
    sends_model: bool = False  # the request names the model (vLLM)


@dataclass(frozen=True)
class RemoteKind:
    name: str
    label: str
    #: Hearth SamplingParams field -> the server's field. Every listed field is sent with Hearth's value
    #: (servers have their own non-neutral defaults, e.g. llama-cpp-python's repeat_penalty 1.1).
    samplers: dict[str, str]
    tokenizer: Tokenizer | None = None
    #: The server takes a list of token ids as the prompt (else the text is sent).
    token_prompt: bool = False
    #: The stream ends with a usage chunk when asked (stream_options.include_usage).
    stream_usage: bool = True
    #: The stream has no usage, but one event per generated token (llama-cpp-python's): count them.
    count_by_events: bool = False
    #: The server reports its top logprobs of generated tokens in a stream (the `logprobs` request field).
    top_logprobs: bool = True
    #: The most alternatives per token the server reports (OpenAI's completions allow 5; vLLM's default
    #: max_logprobs is 20; llama.cpp servers take more).
    max_logprobs: int = 20
    #: Extra fields sent with every completion request.
    extra: dict[str, Any] = field(default_factory=dict)

    def unsupported(self, params: SamplingParams) -> list[str]:
        """The settings of `params` that differ from neutral and that this kind cannot take."""
        changed = set(params.non_neutral())
        if params.greedy:
            changed -= DRAW_ONLY
        return sorted(name for name in changed if name not in self.samplers)

    def wire(self, params: SamplingParams) -> dict[str, Any]:
        """The sampler fields of a completion request."""
        values = params.model_dump()
        body: dict[str, Any] = {}
        for name, wire_name in self.samplers.items():
            value = values[name]
            if name == "seed" and value < 0:
                continue
            if name == "json_schema" and value is None or name == "grammar_string" and not value:
                continue
            if name == "logit_bias":
                if not value:
                    continue
                value = {str(k): v for k, v in value.items()}
            body[wire_name] = value
        if params.greedy and "temperature" in self.samplers:
            body[self.samplers["temperature"]] = 0.0
        return body


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


KINDS: dict[str, RemoteKind] = {
    kind.name: kind
    for kind in (
        RemoteKind(
            "openai",
            "generic OpenAI-compatible server",
            {**_OPENAI, "logit_bias": "logit_bias"},
            max_logprobs=5,
        ),
        RemoteKind(
            "vllm",
            "vLLM",
            {
                **_OPENAI,
                **_same("top_k", "min_p", "repetition_penalty", "logit_bias"),
                "ban_eos_token": "ignore_eos",
                "json_schema": "guided_json",
            },
            Tokenizer(
                "/tokenize",
                "/detokenize",
                "prompt",
                "tokens",
                "prompt",
                "add_special_tokens",
                sends_model=True,
            ),
            token_prompt=True,
        ),
        RemoteKind(
            "llama-server",
            "llama.cpp's llama-server",
            {
                **_OPENAI,
                **_same(
                    "top_k",
                    "min_p",
                    "typical_p",
                    "top_n_sigma",
                    "dry_multiplier",
                    "dry_base",
                    "dry_allowed_length",
                    "dry_sequence_breakers",
                    "xtc_threshold",
                    "xtc_probability",
                    "mirostat_tau",
                    "mirostat_eta",
                    "json_schema",
                ),
                "repetition_penalty": "repeat_penalty",
                "mirostat_mode": "mirostat",
                "grammar_string": "grammar",
                "ban_eos_token": "ignore_eos",
            },
            Tokenizer("/tokenize", "/detokenize", "content", "tokens", "content", "add_special"),
            token_prompt=True,
        ),
        RemoteKind(
            "llama-cpp-python",
            "llama-cpp-python's server (python -m llama_cpp.server)",
            {
                **_OPENAI,
                **_same("top_k", "min_p", "typical_p", "mirostat_tau", "mirostat_eta", "logit_bias"),
                "repetition_penalty": "repeat_penalty",
                "mirostat_mode": "mirostat_mode",
                "grammar_string": "grammar",
            },
            Tokenizer("/extras/tokenize", "/extras/detokenize", "input", "tokens", "text"),
            stream_usage=False,
            count_by_events=True,
        ),
        RemoteKind(
            "tgi",
            "Hugging Face text-generation-inference (its OpenAI routes)",
            {**_OPENAI, "repetition_penalty": "repetition_penalty"},
            top_logprobs=False,  # its /v1/completions streams no logprobs
        ),
        RemoteKind(
            "hearth",
            "another Hearth (--api)",
            _same(*SamplingParams.model_fields),
            Tokenizer(
                "/v1/internal/encode", "/v1/internal/decode", "text", "tokens", "text", "add_bos_token"
            ),
            token_prompt=True,
        ),
    )
}
