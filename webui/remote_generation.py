"""Generation on a remote server (`loaders.remote`): the text-level twin of the core's token loop.

A remote server streams text, not token ids, so the core hands a remote model's request here
(`GenerationCore._run`, after the extensions' state and input modifiers). The prompt is tokenized by the
server's tokenizer when it has one (truncation and token counts then work as locally), stop strings are
sent to the server AND matched here (so none ever leaks, whatever the server does with them), cancelling
closes the HTTP stream, and usage comes from the server.

Chat replies: with the model's ``remote_chat`` "server" a request that carries its chat messages (an
instruct-mode reply, `ChatPrompt.messages`) goes to `/v1/chat/completions`, so the server renders them with
its own chat template; Hearth's text prompt is still built for truncation and token counts. Everything else
(Default, Notebook, chat transcripts, continue, the API's completions) uses `/v1/completions`. The streamed
`delta.content` is the reply; tool calls the server parses come back as Hermes ``<tool_call>`` text, which
Hearth's call readers take. A server-separated `reasoning_content` is not shown: Hearth's reply splitter
reads reasoning from markers in the text, which such a server has removed.

Refused, naming the setting, rather than dropped: a sampler setting the server's kind cannot take
(`loaders.remote_kinds`), prompt logprobs, a thinking budget and extension logits processors (they all
need the full logits, which never cross the wire).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from webui.context_fit import fit_context
from webui.errors import GenerationError, ModelRuntimeError
from webui.events import Event, Finished, TextChunk, TokenLogprob, Usage
from webui.textstream import StopMatcher

if TYPE_CHECKING:
    from loaders.remote import RemoteModel
    from webui.extensions import ExtensionManager
    from webui.generation import GenerationRequest

log = logging.getLogger(__name__)

#: Server finish reasons -> the core's ('stop', 'length', 'cancelled').
_REASONS = {
    "stop": "stop",
    "eos": "stop",
    "stop_sequence": "stop",
    "eos_token": "stop",
    "tool_calls": "stop",
    "length": "length",
    "max_tokens": "length",
    "abort": "cancelled",
    "cancelled": "cancelled",
}


def refusals(model: RemoteModel, request: GenerationRequest, processors: list[Any]) -> list[str]:
    """What in `request` the remote server cannot do, each named."""
    kind = model.remote
    problems = []
    bad = kind.unsupported(request.sampling)
    if bad:
        problems.append(
            f"{', '.join(bad)} (not taken by {kind.label}; Hearth cannot apply "
            f"{'it' if len(bad) == 1 else 'them'} without the full logits: set to neutral)"
        )
    if request.logprobs and not kind.top_logprobs:
        problems.append(f"logprobs (not offered by {kind.label})")
    if request.prompt_logprobs is not None:
        problems.append("prompt_logprobs (the prompt is scored only on a local model)")
    if request.thinking_budget is not None:
        problems.append("thinking_budget (needs Hearth's token loop)")
    if processors:
        names = ", ".join(sorted({str(getattr(p, "extension", type(p).__name__)) for p in processors}))
        problems.append(f"extension logits processors ({names})")
    return problems


def _prompt(
    model: RemoteModel, request: GenerationRequest, ext: ExtensionManager | None, state: dict[str, Any]
) -> tuple[str | list[int], int | None, int]:
    """(what to send as the prompt, its token count when known, tokens dropped to fit the context)."""
    kind = model.remote
    if kind.tokenizer is None:
        if request.prompt_ids is not None:
            raise GenerationError(
                f"prompt_ids: {kind.label} has no tokenizer endpoint, send the prompt as text"
            )
        return request.prompt or "", None, 0
    text = request.prompt
    ids = (
        list(request.prompt_ids)
        if request.prompt_ids is not None
        else model.tokenize(text or "", request.add_bos_token)
    )
    if ext is not None:
        modified = ext.modify_tokens(state, text or "", ids)
        if modified != ids:
            ids, text = modified, None
    if not ids:
        raise GenerationError("the prompt is empty: give at least one token (or enable add_bos_token)")
    ids, dropped = fit_context(
        ids, model.n_ctx, request.truncation_length, request.max_new_tokens, model.bos_token_id
    )
    if kind.token_prompt:
        return ids, len(ids), dropped
    if dropped or text is None:
        text = model.detokenize(ids)
    return text, len(ids), dropped


def _logprobs(choice: dict[str, Any]) -> list[TokenLogprob]:
    """The logprobs of a chunk's tokens from an OpenAI completions `logprobs` object. The token ids are
    unknown (-1): these are the remote's top logprobs, not Hearth's."""
    data = choice.get("logprobs")
    if not isinstance(data, dict):
        return []
    tokens = data.get("tokens") or []
    values = data.get("token_logprobs") or [None] * len(tokens)
    tops = data.get("top_logprobs") or [None] * len(tokens)
    out = []
    for text, value, top in zip(tokens, values, tops, strict=False):
        alternatives = [(-1, t, float(v)) for t, v in (top or {}).items()]
        out.append(TokenLogprob(-1, str(text), None if value is None else float(value), alternatives))
    return out


def _chat_logprobs(choice: dict[str, Any]) -> list[TokenLogprob]:
    """`_logprobs` for a chat completions chunk (``logprobs.content``: token, logprob, top_logprobs)."""
    data = choice.get("logprobs")
    entries = data.get("content") if isinstance(data, dict) else None
    return [
        TokenLogprob(
            -1,
            str(e.get("token", "")),
            e.get("logprob"),
            [(-1, str(t.get("token", "")), float(t["logprob"])) for t in e.get("top_logprobs") or []],
        )
        for e in entries or []
    ]


def _tool_call_text(calls: dict[int, dict[str, str]]) -> str:
    """The server's parsed tool calls, written back as Hermes ``<tool_call>`` blocks for Hearth's readers."""
    return "".join(
        f'<tool_call>\n{{"name": {json.dumps(c["name"])}, "arguments": {c["arguments"] or "{}"}}}\n</tool_call>'
        for _, c in sorted(calls.items())
    )


def remote_stream(
    model: RemoteModel,
    request: GenerationRequest,
    cancel: threading.Event,
    ext: ExtensionManager | None,
    state: dict[str, Any],
    extra_processors: list[Any],
    is_chat: bool,
) -> Iterator[Event]:
    """The core's events for `request`, generated by the remote server (`extra_processors`: the core's)."""
    processors = [*extra_processors, *(ext.logits_processors(request, state) if ext is not None else [])]
    problems = refusals(model, request, processors)
    if problems:
        raise GenerationError(f"the remote model cannot apply: {'; '.join(problems)}")
    kind = model.remote
    chat = model.chat == "server" and request.messages is not None
    prompt, prompt_tokens, dropped = _prompt(model, request, ext, state)
    max_new = (
        request.max_new_tokens
        if prompt_tokens is None
        else min(request.max_new_tokens, model.n_ctx - prompt_tokens)
    )
    seed = request.sampling.seed
    if max_new <= 0:
        yield Finished("length", "", Usage(prompt_tokens or 0, 0, dropped), seed)
        return
    body: dict[str, Any] = {
        "model": model.remote_model,
        **({"messages": request.messages} if chat else {"prompt": prompt}),
        "max_tokens": max_new,
        "stream": True,
        **kind.wire(request.sampling),
        **kind.extra,
    }
    if chat and request.tools:
        body["tools"] = request.tools
    if request.stop:
        body["stop"] = list(request.stop)
    if kind.stream_usage:
        body["stream_options"] = {"include_usage": True}
    if request.logprobs:
        body.update(
            {"logprobs": True, "top_logprobs": request.logprobs} if chat else {"logprobs": request.logprobs}
        )
    stops = StopMatcher(request.stop)
    parts: list[str] = []
    usage: dict[str, Any] = {}
    counted, reason = 0, None
    calls: dict[int, dict[str, str]] = {}  # the server's parsed tool calls, by index
    path = "/v1/chat/completions" if chat else "/v1/completions"
    for event in model.client.stream(path, body, cancel):
        usage = event.get("usage") or usage
        choices = event.get("choices") or []
        if not choices:
            continue
        choice = choices[0]
        logprobs = _chat_logprobs(choice) if chat else _logprobs(choice)
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            entry = calls.setdefault(int(call.get("index", len(calls))), {"name": "", "arguments": ""})
            entry["name"] += (call.get("function") or {}).get("name") or ""
            entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
        counted += not choice.get("finish_reason") and (not chat or "content" in delta)
        text = stops.feed(str((delta.get("content") if chat else choice.get("text")) or ""))
        if text or (logprobs and request.logprobs):
            parts.append(text)
            yield TextChunk(text, [], logprobs if request.logprobs else [])
        if stops.stopped_by is not None:
            reason = "stop"  # leaving the loop closes the stream: the server stops too
            break
        if choice.get("finish_reason"):
            reason = _REASONS.get(str(choice["finish_reason"]), "stop")
            if not kind.stream_usage:
                break
    if reason is None:
        if not cancel.is_set():
            raise ModelRuntimeError(f"{model.client._where()} ended the stream without a finish reason")
        reason = "cancelled"
    if stops.stopped_by is None:
        tail = stops.feed(_tool_call_text(calls)) + stops.flush()
        if tail:
            parts.append(tail)
            yield TextChunk(tail, [])
    text = "".join(parts)
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = (
            counted
            if kind.count_by_events
            else (len(model.tokenize(text, add_bos=False)) if kind.tokenizer is not None and text else 0)
        )
    # a chat reply's prompt is the server's rendering: its own count where it gives one
    served = int(usage.get("prompt_tokens") or 0)
    prompt_count = served if (chat and served) or prompt_tokens is None else prompt_tokens
    final = Finished(
        reason or "stop", text, Usage(prompt_count, int(completion), dropped), seed, stops.stopped_by
    )
    if ext is not None and not is_chat:  # extensions: output_modifier
        final.text = ext.modify_output(final.text, state, False)
    yield final


def remote_top_tokens(
    model: RemoteModel, text: str, n: int, use_samplers: bool, sampling: Any, add_bos: bool
) -> list[TokenLogprob]:
    """The Logits view on a remote model. Another Hearth has exact logits (its /v1/internal/logits, samplers
    included); any other server reports only its top logprobs of the next token, asked with a one-token
    greedy completion: the server's own numbers, at most `RemoteKind.max_logprobs` of them, ids unknown (-1)."""
    kind = model.remote
    if kind.name == "hearth":
        body = {"prompt": text, "top_logits": n, "detailed": True, "use_samplers": use_samplers,
                "add_bos_token": add_bos, **(sampling.model_dump(exclude_defaults=True) if use_samplers else {})}
        answer = model.client.request("POST", "/v1/internal/logits", body)
        return [TokenLogprob(int(t["token_id"]), str(t["token"]),
                             float("-inf") if t.get("logprob") is None else float(t["logprob"]))
                for t in answer.get("top_logits") or []]
    if use_samplers:
        raise GenerationError(f"{kind.label} reports only its top logprobs, not the distribution after Hearth's "
                              "samplers: untick 'after samplers', or load the model locally")
    if not kind.top_logprobs:
        raise GenerationError(f"{kind.label} reports no logprobs: the Logits view needs a local model")
    body = {"model": model.remote_model, "prompt": text, "max_tokens": 1, "temperature": 0.0,
            "logprobs": min(n, kind.max_logprobs), **kind.extra}
    answer = model.client.request("POST", "/v1/completions", body)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    entries = _logprobs(choices[0]) if isinstance(choices, list) and choices else []
    if not entries or not entries[0].top:
        raise GenerationError(f"{kind.label} sent no logprobs for the next token")
    ranked = sorted(entries[0].top, key=lambda alt: -alt[2])
    return [TokenLogprob(-1, token, logprob) for _, token, logprob in ranked[:n]]
