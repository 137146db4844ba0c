"""The one generation core: a typed request in, a stream of events out.

The UI, the API and extensions all call `GenerationCore.stream`. It owns: tokenization, fitting the
prompt into the context, choosing the token source (the backend's native sampler chain when it can
honour every setting, else the model's logits through Hearth's sampler pipeline), stop strings,
EOS handling, cancellation and the per-model FIFO queue.

Requests wait in arrival order for a lane (`webui.lanes`): one at a time for most models, up to
`Model.parallel` at once for a model that decodes several sequences together (llama.cpp's `parallel`
slots), all on the core's one model worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from webui.context_fit import check_fits, fit_context
from webui.errors import ContextLengthError, GenerationError, ModelRuntimeError
from webui.events import Event, Finished, PromptRead, TextChunk, TokenLogprob, Usage
from webui.lanes import run_lanes
from webui.loader_api import Model
from webui.media import Image, MediaError, check_placement
from webui.model_worker import ModelWorker
from webui.models import ModelManager
from webui.pipeline_path import SampledTokens, TokenSource
from webui.prompt_scoring import added_tokens, prompt_entries
from webui.remote_generation import remote_stream, remote_top_tokens
from webui.sampling import SamplingParams, build_sampler
from webui.sampling.constraints import build_constraint
from webui.textstream import BannedStringGuard, IncrementalDecoder, StopMatcher, token_index
from webui.thinking_budget import BudgetedTokens, ThinkingBudget

if TYPE_CHECKING:
    from webui.extensions import ExtensionManager

log = logging.getLogger(__name__)
T = TypeVar("T")


class GenerationRequest(BaseModel):
    """Everything one generation needs. Validated once, here; the loop trusts it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    prompt_ids: list[int] | None = None
    #: 0 reads (and, with prompt_logprobs, scores) the prompt only.
    max_new_tokens: int = Field(512, ge=0, le=1 << 20)
    stop: list[str] = Field(default_factory=list)
    add_bos_token: bool = True
    #: Context budget for prompt + reply; 0 = the model's context. Longer prompts lose their oldest tokens.
    truncation_length: int = Field(0, ge=0)
    #: Report the top-N alternatives (with log-probabilities) of every generated token.
    logprobs: int = Field(0, ge=0, le=50)
    #: Also score the prompt (an echo's logprobs) with the top-N alternatives; None = don't. A scored
    #: prompt is never truncated: one longer than the context is an error.
    prompt_logprobs: int | None = Field(None, ge=0, le=50)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    #: Close a thinking model's reasoning block after this many tokens (None: no limit).
    thinking_budget: ThinkingBudget | None = None
    #: Write special tokens out in the text (the reasoning and tool-call markers a chat reply is split by).
    special_tokens: bool = False
    #: The chat messages `prompt` was rendered from (instruct mode), and the tools the template was given:
    #: a remote model set to use the server's own chat template sends these instead of the prompt.
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    #: Images of the prompt, in order: `prompt` holds `webui.media.MEDIA_MARKER` once for each, where it goes.
    images: list[Image] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if (self.prompt is None) == (self.prompt_ids is None):
            raise ValueError("give exactly one of prompt or prompt_ids")
        if self.images and self.prompt is None:
            raise ValueError("images go with a text prompt (one image marker each), not with prompt_ids")
        return self


def _media_prompt_ids(model: Model, request: GenerationRequest) -> list[int]:
    """The prompt's ids with its images in place (`Model.tokenize_media`), after the checks every loader
    shares: the model sees, takes this many images, and the text has one marker per image."""
    if model.max_images <= 0:
        raise MediaError(model.vision_missing())
    if len(request.images) > model.max_images:
        raise MediaError(
            f"{len(request.images)} images in one prompt; {model.info.name} takes at most {model.max_images}"
        )
    check_placement(request.prompt or "", request.images)
    return model.tokenize_media(request.prompt or "", request.images, request.add_bos_token)


def _detokenizer(model: Model, request: GenerationRequest) -> Callable[[Sequence[int]], str]:
    return model.detokenize_special if request.special_tokens else model.detokenize


def _replay(model: Model, request: GenerationRequest, ids: list[int], generated: list[int]) -> IncrementalDecoder:
    """A decoder that has seen `generated` (after a rollback)."""
    decoder = IncrementalDecoder(_detokenizer(model, request), ids)
    for token in generated:
        decoder.push(token)
    return decoder


@dataclass(eq=False)
class _Admission:
    """Generations waiting to run: an API request's prompts run in one lane, in order."""

    requests: list[GenerationRequest]
    cancel: threading.Event
    is_chat: bool
    sink: Callable[[Event | BaseException], None]
    #: Drop `cancel` from the core's active set when done (`start`; `stream` drops its own).
    forget: bool
    started: bool = False
    #: An inspection (`GenerationCore.inspect`) that runs in the lane instead of `requests`.
    job: Callable[[], None] | None = None

    def cancel_all(self) -> None:
        if self.job is not None:
            self.sink(ModelRuntimeError("the inspection was cancelled before it ran"))
        for _ in self.requests:
            self.sink(_cancelled())


def _cancelled() -> Finished:
    """The end of a generation cancelled before its first token."""
    return Finished("cancelled", "", Usage(0, 0), seed=-1)


class GenerationCore:
    def __init__(
        self, models: ModelManager, extensions: ExtensionManager | None = None, worker: ModelWorker | None = None
    ):
        self.models = models
        #: Enabled extensions' hooks run inside every generation (see `_run`).
        self.extensions = extensions
        self._active: set[threading.Event] = set()
        self._active_lock = threading.Lock()
        #: The one thread that evaluates the model (llama.cpp keeps per-thread compute teams). Cores over
        #: several loaded models in one process (a benchmark) should share one worker, hence one team.
        self.worker = worker or ModelWorker()
        #: Extra logits processors (extensions) appended to every HF-path pipeline.
        self.extra_processors: list = []
        #: Requests waiting for a lane, in arrival order (`_enqueue`).
        self._admissions: deque[_Admission] = deque()
        self._admit_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------
    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None, *,
               is_chat: bool = False) -> Iterator[Event]:
        """Generate; yields TextChunk events and one Finished. Waits its turn behind earlier requests.

        The work runs on the core's model worker thread (see `webui.model_worker`); this generator only
        relays its events, so any thread may consume it. Closing it early cancels the generation.

        ``is_chat``: the prompt came from the chat service, which applies the extensions' input and
        output modifiers to the message and the reply itself."""
        cancel = cancel or threading.Event()
        if self.worker.on_worker():  # called from inside a job (an extension): the model is ours already
            yield from self._run(self.models.require(), request, cancel, is_chat)
            return
        events: queue.SimpleQueue = queue.SimpleQueue()
        with self._active_lock:
            self._active.add(cancel)
        self._enqueue(_Admission([request], cancel, is_chat, events.put, forget=False))
        finished = False
        try:
            while True:
                event = events.get()
                if isinstance(event, BaseException):
                    finished = True
                    raise event
                yield event
                if isinstance(event, Finished):
                    finished = True
                    return
        finally:
            if not finished:
                cancel.set()  # the consumer went away: stop generating for nobody
            with self._active_lock:
                self._active.discard(cancel)

    def start(self, request: GenerationRequest, cancel: threading.Event, sink: Callable[[Event | BaseException], None],
              *, is_chat: bool = False) -> None:
        """Queue a generation and return at once; `sink` gets its events on the model worker thread.

        The events are those of `stream` (TextChunks, then one Finished), or the exception that ended it.
        `sink` must be quick and must not raise (an asyncio server hands the events to its loop). This
        saves `stream`'s relay thread hop per token; setting `cancel` stops the generation."""
        self.start_many([request], cancel, sink, is_chat=is_chat)

    def start_many(self, requests: Sequence[GenerationRequest], cancel: threading.Event,
                   sink: Callable[[Event | BaseException], None], *, is_chat: bool = False) -> None:
        """`start` for several generations queued as one job (an API request's prompts): they run one after
        another, in order, with no other request between them. Each one's events end with its Finished, so
        the k-th Finished closes the k-th request; once `cancel` is set the rest finish 'cancelled' at once.
        An exception ends the whole job."""
        with self._active_lock:
            self._active.add(cancel)
        self._enqueue(_Admission(list(requests), cancel, is_chat, sink, forget=True))

    # -- admission: requests wait here for a lane (webui/lanes.py) ---------------------------------
    def _enqueue(self, admission: _Admission) -> None:
        """Queue `admission` and a worker job that serves it (with whatever else waits) once the model
        lock is free: each admission brings its own job, so none is left without one."""
        with self._admit_lock:
            self._admissions.append(admission)
        self.worker.submit(lambda: self._kick(admission))

    def _kick(self, admission: _Admission) -> None:
        """On the worker thread: serve the queue, or, when `admission` was cancelled while the lock was
        held elsewhere (a load), finish it at once."""
        if admission.started:  # an earlier job's lanes took it
            return
        if admission.cancel.is_set() or not self.models.lock.acquire(admission.cancel):
            if self._take(admission):
                admission.cancel_all()
            return
        try:
            model = self.models.model
            run_lanes(self._admit_next, model.parallel if model is not None else 1,
                      lambda: model.stepper if model is not None else None)
        finally:
            self.models.lock.release()

    def _take(self, admission: _Admission) -> bool:
        with self._admit_lock:
            if admission.started:
                return False
            admission.started = True
            self._admissions.remove(admission)
        self._forget(admission)
        return True

    def _admit_next(self) -> Callable[[], None] | None:
        """The next waiting request's lane body; None when none waits or a load waits for the lock (it
        goes first: the lanes running finish, and the rest are served after it). Cancelled ones end here."""
        while True:
            if self.models.lock.waiting:
                return None
            with self._admit_lock:
                if not self._admissions:
                    return None
                admission = self._admissions.popleft()
                admission.started = True
            if not admission.cancel.is_set():
                return lambda: self._lane(admission)
            admission.cancel_all()
            self._forget(admission)

    def _lane(self, admission: _Admission) -> None:
        """One admission's generations, in order, inside its lane; events go to its sink."""
        try:
            if admission.job is not None:
                admission.job()
            for request in admission.requests:
                if admission.cancel.is_set():
                    admission.sink(_cancelled())
                    continue
                for event in self._run(self.models.require(), request, admission.cancel, admission.is_chat):
                    admission.sink(event)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            admission.sink(exc)
        finally:
            self._forget(admission)

    def _forget(self, admission: _Admission) -> None:
        if admission.forget:
            with self._active_lock:
                self._active.discard(admission.cancel)

    @property
    def busy(self) -> bool:
        """True while a generation runs, waits, or its consumer is still handling the result."""
        with self._active_lock:
            return bool(self._active) or self.worker.pending > 0

    @property
    def live_requests(self) -> int:
        """Generations running or queued that nobody has cancelled."""
        with self._active_lock:
            return sum(not event.is_set() for event in self._active)

    @property
    def pending(self) -> int:
        """Jobs (generations, inspections) queued or running on the model worker."""
        return self.worker.pending

    def close(self) -> None:
        """Cancel what runs or waits and stop the worker thread (the core's model is unloaded for good)."""
        self.stop_all()
        self.worker.close()

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None, *,
                 is_chat: bool = False) -> Finished:
        """Run to the end and return the final event (its `text` is the whole reply)."""
        final = None
        for event in self.stream(request, cancel, is_chat=is_chat):
            if isinstance(event, Finished):
                final = event
        assert final is not None
        return final

    def stop_all(self) -> int:
        """Cancel the running generation and every queued one; returns how many were signalled."""
        with self._active_lock:
            events = list(self._active)
        for event in events:
            event.set()
        return len(events)

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self, model: Model, request: GenerationRequest, cancel: threading.Event, is_chat: bool = False) -> Iterator[Event]:
        # -- extensions (webui/extensions.py): state_modifier, input_modifier --------------------------
        ext, state = self.extensions, {}
        if ext is not None:
            request = ext.modify_state(request, ext.state(request=request, is_chat=is_chat))
            state = ext.state(request=request, is_chat=is_chat)
            if request.prompt is not None and not is_chat:
                request = request.model_copy(update={"prompt": ext.modify_input(request.prompt, state, False)})
        # -- end extensions ----------------------------------------------------------------------------
        if model.remote is not None:  # generates on another server, text-level: webui/remote_generation.py
            if request.images:
                raise MediaError(model.vision_missing())
            return (yield from remote_stream(model, request, cancel, ext, state, self.extra_processors, is_chat))
        if request.images:
            ids = _media_prompt_ids(model, request)
        elif request.prompt_ids is not None:
            ids = list(request.prompt_ids)
        else:
            ids = model.tokenize(request.prompt or "", request.add_bos_token)
        added = added_tokens(model, request.prompt, ids) if request.prompt_logprobs is not None and request.prompt is not None else 0
        if ext is not None and not request.images:  # extensions: tokenizer_modifier (an image's tokens are the model's)
            ids = ext.modify_tokens(state, request.prompt or "", ids)
        if not ids:
            raise GenerationError("the prompt is empty: give at least one token (or enable add_bos_token)")
        bad = [t for t in ids if not 0 <= t < model.vocab_size]
        if bad:
            raise GenerationError(f"prompt_ids contain ids outside the vocabulary (0..{model.vocab_size - 1}): {bad[:5]}")
        if request.prompt_logprobs is not None or request.images:  # scored or holding images: never shortened
            check_fits(ids, model.n_ctx, request.truncation_length,
                       "a prompt with images is never shortened" if request.images else "its logprobs cannot be computed")
            dropped = 0
            if request.prompt_logprobs is not None:
                yield PromptRead(prompt_entries(model, ids, added, max(request.prompt_logprobs, 1), request.prompt is not None))
        else:
            ids, dropped = fit_context(ids, model.n_ctx, request.truncation_length, request.max_new_tokens, model.bos_token_id)
        if dropped:
            log.info("prompt truncated: dropped the oldest %d tokens to fit the context", dropped)
        max_new = min(request.max_new_tokens, model.n_ctx - len(ids))
        params = request.sampling
        extra = [*self.extra_processors, *(ext.logits_processors(request, state) if ext is not None else [])]
        sampler = build_sampler(
            params,
            vocab_size=model.vocab_size,
            eos_token_ids=model.eos_token_ids,
            prompt_ids=ids,
            vocabulary=model.vocabulary,
            extra_processors=extra,
        )
        if request.thinking_budget is not None:
            source: TokenSource = BudgetedTokens(
                model, ids, request.thinking_budget,
                lambda seq: self._token_source(model, seq, request, sampler, bool(extra)))
        else:
            source = self._token_source(model, ids, request, sampler, bool(extra))
        for event in self._decode_stream(model, ids, request, source, sampler.seed, max_new, dropped, cancel):
            if ext is not None and isinstance(event, Finished):
                event.extension_errors = ext.processor_failures(extra)
                if not is_chat:  # extensions: output_modifier
                    event.text = ext.modify_output(event.text, state, False)
            yield event

    def _token_source(self, model: Model, ids: list[int], request: GenerationRequest, sampler,
                      has_extra: bool = False) -> TokenSource:
        params = request.sampling
        wants_hf = request.logprobs > 0 or params.guidance_scale != 1 or params.banned_strings or has_extra
        # a grammar or schema goes native only to a backend that says it runs them (`supports_grammar`)
        if not wants_hf and (not params.constrained or model.supports_grammar()):
            native = model.native_generate(ids, params, sampler.seed)
            if native is not None:
                return ((token, None) for token in native)
        return SampledTokens(model, ids, request, sampler, build_constraint(model, params))

    def _decode_stream(self, model: Model, ids: list[int], request: GenerationRequest, source: TokenSource,
                       seed: int, max_new: int, dropped: int, cancel: threading.Event) -> Iterator[Event]:
        decoder = IncrementalDecoder(_detokenizer(model, request), ids)
        stops = StopMatcher(request.stop)
        guard = BannedStringGuard(request.sampling.banned_strings)
        # a complete grammar ends the reply with EOS even when EOS is banned (as llama.cpp's grammar does)
        eos = set() if request.sampling.ban_eos_token and not request.sampling.constrained else model.eos_token_ids
        generated: list[int] = []
        offsets: list[int] = []  # char offset in decoder.text where each generated token starts
        emitted = 0  # chars of decoder.text passed on to the stop matcher
        reported = 0  # generated[:reported] went out in chunks
        reason, rollbacks = "length", 0
        text_parts: list[str] = []
        ended: tuple[int, TokenLogprob | None] | None = None  # the EOS that ended the reply
        try:
            for token, logprob in source if max_new > 0 else ():
                if cancel.is_set():
                    reason = "cancelled"
                    break
                if token in eos:
                    ended, reason = (token, logprob), "stop"
                    break
                generated.append(token)
                offsets.append(len(decoder.text))
                decoder.push(token)
                hit = guard.find(decoder.text, emitted) if guard.phrases else None
                if hit is not None and rollbacks < 1000:
                    keep = token_index(offsets, hit)
                    source.rollback(keep, generated[keep])  # type: ignore[attr-defined]
                    del generated[keep:], offsets[keep:]
                    reported = min(reported, keep)
                    decoder = _replay(model, request, ids, generated)
                    rollbacks += 1
                    continue
                end = guard.safe_end(decoder.text, offsets)
                text = stops.feed(decoder.text[emitted:end]) if end > emitted else ""
                emitted = max(emitted, end)
                if text or logprob:
                    text_parts.append(text)
                    yield TextChunk(text, generated[reported:], [logprob] if logprob else [])
                    reported = len(generated)
                if stops.stopped_by is not None:
                    reason = "stop"
                    break
                if len(generated) >= max_new:
                    break
        finally:
            close = getattr(source, "close", None)
            if close:
                close()
        if stops.stopped_by is None:
            decoder.flush()
            tail = stops.feed(decoder.text[emitted:]) + stops.flush()
            if tail or reported < len(generated):
                text_parts.append(tail)
                yield TextChunk(tail, generated[reported:])
        if ended is not None:  # a generated token like any other (counted, scored), but with no text
            generated.append(ended[0])
            yield TextChunk("", [ended[0]], [ended[1]] if ended[1] else [])
        usage = Usage(len(ids), len(generated), dropped)
        yield Finished(reason, "".join(text_parts), usage, seed, stops.stopped_by, generated)

    # -- inspection -------------------------------------------------------------------------------
    def inspect(self, work: Callable[[], T]) -> T:
        """Run `work` (it reads the model: next-token logits, a sampler trace) in its turn, in a lane, and
        return its result. On a model with `parallel` slots it runs beside the generations in progress, in a
        slot of its own, instead of waiting for them to end; otherwise after them, as a generation would."""
        if self.worker.on_worker():  # from a job outside the lanes (an extension): the model lock is free
            with self.models.lock:
                return work()
        result: Future[T] = Future()

        def job() -> None:
            try:
                result.set_result(work())
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                result.set_exception(exc)

        def sink(item: Event | BaseException) -> None:
            if isinstance(item, BaseException) and not result.done():
                result.set_exception(item)

        self._enqueue(_Admission([], threading.Event(), False, sink, forget=False, job=job))
        return result.result()

    def top_tokens(self, text: str, n: int = 20, use_samplers: bool = False, sampling: SamplingParams | None = None,
                   add_bos: bool = True) -> list[TokenLogprob]:
        """The most likely next tokens after `text`, raw or after the current samplers."""
        return self.inspect(lambda: self._top_tokens(text, n, use_samplers, sampling, add_bos))

    def _top_tokens(self, text: str, n: int, use_samplers: bool, sampling: SamplingParams | None,
                    add_bos: bool) -> list[TokenLogprob]:
        model = self.models.require()
        if model.remote is not None:  # the server's own numbers (webui/remote_generation.py)
            return remote_top_tokens(model, text, n, use_samplers, sampling or SamplingParams(), add_bos)
        ids = model.tokenize(text, add_bos) or [model.bos_token_id or 0]
        if len(ids) > model.n_ctx:  # truncating would describe another text's next token
            raise ContextLengthError(f"the text is {len(ids)} tokens, more than the model's context of "
                                     f"{model.n_ctx}: shorten it or load the model with a larger n_ctx")
        scores = model.logits(ids)
        if use_samplers:
            sampler = build_sampler(sampling or SamplingParams(), vocab_size=model.vocab_size,
                                    eos_token_ids=model.eos_token_ids, prompt_ids=ids,
                                    vocabulary=model.vocabulary)
            probs = sampler.probabilities(torch.tensor([ids]), scores[None].clone())
        else:
            probs = torch.softmax(scores.float(), dim=-1)
        top = torch.topk(probs, min(n, probs.numel()))
        return [
            TokenLogprob(int(i), model.detokenize([int(i)]), float(torch.log(p)) if p > 0 else float("-inf"))
            for p, i in zip(top.values, top.indices, strict=True)
        ]

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.models.require().tokenize(text, add_bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.models.require().detokenize(ids)
