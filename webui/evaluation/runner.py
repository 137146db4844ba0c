"""The evaluation job: each model loaded in turn (its saved settings), scored window by window.

Window work runs on the generation core's model worker holding the model lock, one window per turn, so
a chat request waits at most one window and llama.cpp keeps one thread team (see `webui.model_worker`).
A model that fails to load, or cannot be compared with the reference (another vocabulary or
tokenization), is recorded in the outcome's errors and the run goes on with the next one; a reference
that fails stops the run, since nothing can be compared without it. The model loaded before the run is
loaded again at the end, with its LoRAs (also after Stop or a failure); a model already loaded is evaluated as it is
(with its LoRAs and Model-tab settings), so what a person has loaded is what gets measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from webui.errors import HearthError
from webui.evaluation.dataset import EvaluationError, read_dataset
from webui.evaluation.kl import KL_TOP_K, ReferenceWindow, compare, keep_reference
from webui.evaluation.perplexity import (
    Totals,
    Window,
    negative_log_likelihood,
    sliding_windows,
    window_log_probs,
)
from webui.evaluation.results import EvaluationResult, append_result, now
from webui.jobs import EVALUATION_JOB, MODEL_JOBS, Job, JobCancelled, JobContext
from webui.loader_api import Model
from webui.model_settings import settings_for
from webui.model_worker import ModelWorker
from webui.models import ModelManager

if TYPE_CHECKING:
    from webui.app import App

log = logging.getLogger(__name__)
T = TypeVar("T")



@dataclass(frozen=True)
class EvaluationRequest:
    models: tuple[str, ...]
    dataset: str
    stride: int = 512
    max_length: int = 2048
    #: A model to compare every model against (KL divergence, top-1 agreement); "" for none.
    reference: str = ""
    comment: str = ""


@dataclass
class EvaluationOutcome:
    results: list[EvaluationResult] = field(default_factory=list)
    #: "model: why" for each model that could not be evaluated.
    errors: list[str] = field(default_factory=list)
    #: What was adjusted (max_length clamped to a model's context) or could not be restored.
    notices: list[str] = field(default_factory=list)


@dataclass
class _Reference:
    name: str
    ids: list[int]
    vocab_size: int
    stride: int
    max_length: int
    windows: list[ReferenceWindow]


class Evaluator:
    def __init__(
        self, models: ModelManager, worker: ModelWorker, user_data_dir: Path, kl_top_k: int = KL_TOP_K
    ):
        self.models = models
        self.worker = worker
        self.user_data_dir = user_data_dir
        self.kl_top_k = kl_top_k

    def check(self, request: EvaluationRequest) -> str:
        """Everything that can be checked before a model is loaded; returns the dataset's text."""
        if not request.models:
            raise EvaluationError("models: choose at least one model to evaluate")
        if request.stride < 1:
            raise EvaluationError(f"stride must be at least 1 (got {request.stride})")
        if request.max_length < 2:
            raise EvaluationError(f"max_length must be at least 2 (got {request.max_length})")
        if request.stride > request.max_length:
            raise EvaluationError(
                f"stride ({request.stride}) must not be larger than max_length ({request.max_length}): "
                "tokens between windows would never be scored"
            )
        for name in (*request.models, *([request.reference] if request.reference else [])):
            self.models.resolve(name)  # ModelNotFound names what exists
        return read_dataset(self.user_data_dir, request.dataset)

    def run(self, request: EvaluationRequest, ctx: JobContext, text: str | None = None) -> EvaluationOutcome:
        text = self.check(request) if text is None else text
        outcome = EvaluationOutcome()
        previous = (
            self.models.model_name,
            self.models.loader_name,
            dict(self.models.load_params),
            list(getattr(self.models, "loras", None) or []),
        )
        progress = _Progress(ctx, passes=len(request.models) + bool(request.reference))
        try:
            reference = self._reference(request, text, progress, outcome) if request.reference else None
            for name in request.models:
                ctx.check()
                try:
                    result = self._evaluate(name, request, text, reference, progress, outcome.notices)
                except JobCancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on with the next model
                    if not isinstance(exc, HearthError):
                        log.exception("evaluating %s failed", name)
                    outcome.errors.append(f"{name}: {exc}")
                    progress.skip(f"{name}: {exc}")
                    continue
                append_result(self.user_data_dir, result)
                outcome.results.append(result)
        finally:
            self._restore(previous, outcome.notices)
        progress.finish(outcome)
        return outcome

    # -- one model --
    def _load(self, name: str) -> Model:
        if self.models.model is not None and self.models.model_name == name:
            return self.models.model
        settings = settings_for(self.models, self.user_data_dir, name)
        return self.models.load(name, settings.loader, settings.params)

    def _on_model(self, model: Model, fn: Callable[[], T]) -> T:
        def work() -> T:
            with self.models.lock:
                if self.models.model is not model:
                    raise EvaluationError("the model was unloaded or replaced during the evaluation")
                return fn()

        return self.worker.call(work)

    def _prepare(
        self, name: str, text: str, stride: int, max_length: int, notices: list[str]
    ) -> tuple[Model, list[int], int, int]:
        model = self._load(name)
        ids = self._on_model(model, lambda: model.tokenize(text, add_bos=True))
        if len(ids) < 2:
            raise EvaluationError(f"the dataset is {len(ids)} token(s) for {name}: at least 2 are needed")
        if max_length > model.n_ctx:
            notices.append(
                f"{name}: max_length {max_length} is more than its context of {model.n_ctx}; "
                f"used {model.n_ctx}"
            )
            max_length, stride = model.n_ctx, min(stride, model.n_ctx)
        return model, ids, stride, max_length

    def _reference(
        self, request: EvaluationRequest, text: str, progress: _Progress, outcome: EvaluationOutcome
    ) -> _Reference:
        """Score the reference (its result is the outcome's first), keeping its top-k per token."""
        name = request.reference
        try:
            model, ids, stride, max_length = self._prepare(
                name, text, request.stride, request.max_length, outcome.notices
            )
        except HearthError as exc:
            raise EvaluationError(f"reference model {name}: {exc}") from None
        windows = sliding_windows(len(ids), stride, max_length)
        kept: list[ReferenceWindow] = []

        def keep(log_probs: Any) -> None:
            kept.append(keep_reference(log_probs, self.kl_top_k))

        totals = self._score(model, name, ids, windows, progress, keep)
        result = self._result(name, model, request, totals, stride, max_length)
        append_result(self.user_data_dir, result)
        outcome.results.append(result)
        return _Reference(name, ids, model.vocab_size, stride, max_length, kept)

    def _evaluate(
        self,
        name: str,
        request: EvaluationRequest,
        text: str,
        reference: _Reference | None,
        progress: _Progress,
        notices: list[str],
    ) -> EvaluationResult:
        if reference is None:
            model, ids, stride, max_length = self._prepare(
                name, text, request.stride, request.max_length, notices
            )
            totals = self._score(model, name, ids, sliding_windows(len(ids), stride, max_length), progress)
            return self._result(name, model, request, totals, stride, max_length)
        model, ids, _, _ = self._prepare(name, text, reference.stride, reference.max_length, [])
        if model.vocab_size != reference.vocab_size:
            raise EvaluationError(
                f"its vocabulary has {model.vocab_size} tokens, the reference {reference.name}'s "
                f"{reference.vocab_size}: KL divergence compares models of one vocabulary"
            )
        if ids != reference.ids:
            raise EvaluationError(
                f"it tokenizes the dataset differently from the reference {reference.name} "
                f"({len(ids)} vs {len(reference.ids)} tokens): KL needs the same tokenizer"
            )
        if reference.max_length > model.n_ctx:
            raise EvaluationError(
                f"its context ({model.n_ctx}) is smaller than the reference's windows "
                f"({reference.max_length} tokens): lower max_length"
            )
        windows = sliding_windows(len(ids), reference.stride, reference.max_length)
        totals = self._score(model, name, ids, windows, progress, reference=reference.windows)
        return self._result(
            name, model, request, totals, reference.stride, reference.max_length, reference.name
        )

    def _score(
        self,
        model: Model,
        name: str,
        ids: list[int],
        windows: Sequence[Window],
        progress: _Progress,
        keep: Callable[[Any], None] | None = None,
        reference: list[ReferenceWindow] | None = None,
    ) -> Totals:
        totals = Totals()
        progress.start_pass(name, sum(w.targets for w in windows))
        for index, window in enumerate(windows):
            progress.ctx.check()

            def step(window: Window = window, index: int = index) -> tuple[float, tuple[float, int] | None]:
                log_probs, targets = window_log_probs(model, ids, window)
                if keep is not None:
                    keep(log_probs)
                kl = compare(reference[index], log_probs) if reference is not None else None
                return negative_log_likelihood(log_probs, targets), kl

            nll, kl = self._on_model(model, step)
            totals.nll += nll
            totals.tokens += window.targets
            if kl is not None:
                totals.kl += kl[0]
                totals.agree += kl[1]
            progress.advance(totals, index + 1, len(windows))
        return totals

    def _result(
        self,
        name: str,
        model: Model,
        request: EvaluationRequest,
        totals: Totals,
        stride: int,
        max_length: int,
        reference: str = "",
    ) -> EvaluationResult:
        return EvaluationResult(
            model=name,
            loader=self.models.loader_name or model.info.loader,
            quantization=model.info.quantization,
            loras=", ".join(getattr(self.models, "lora_names", None) or []),
            dataset=request.dataset,
            tokens=totals.tokens,
            perplexity=totals.perplexity,
            stride=stride,
            max_length=max_length,
            date=now(),
            comment=request.comment,
            reference=reference,
            kl_divergence=totals.mean_kl if reference else None,
            top1_agreement=totals.top1_agreement if reference else None,
        )

    def _restore(
        self, previous: tuple[str | None, str | None, dict[str, Any], list[Any]], notices: list[str]
    ) -> None:
        """Load the model of before the run again, with its settings and LoRAs (unless it is still loaded)."""
        name, loader, params, loras = previous
        if self.models.model_name == name and self.models.loader_name == loader:
            return
        try:
            if name is None:
                self.models.unload()
            else:
                self.models.load(name, loader, params)
                if loras:
                    self.models.apply_loras(loras)
        except HearthError as exc:
            notices.append(f"could not load {name} again: {exc}")
            log.warning("after the evaluation, could not load %s again: %s", name, exc)


class _Progress:
    """Tokens scored over all passes (the reference's, then each model's) as the job's done/total."""

    def __init__(self, ctx: JobContext, passes: int):
        self.ctx = ctx
        self.passes_left = passes
        self.done = 0
        self.base = 0
        self.name = ""

    def start_pass(self, name: str, targets: int) -> None:
        self.name, self.base = name, self.done
        self.ctx.report(
            self.done, self.done + targets * self.passes_left, f"{name}: starting ({targets} tokens)"
        )
        self.passes_left -= 1

    def advance(self, totals: Totals, window: int, windows: int) -> None:
        self.done = self.base + totals.tokens
        metrics = {"perplexity": totals.perplexity}
        if totals.kl or totals.agree:
            metrics.update(kl_divergence=totals.mean_kl, top1_agreement=totals.top1_agreement)
        self.ctx.report(self.done, None, f"{self.name}: window {window}/{windows}", **metrics)

    def skip(self, message: str) -> None:
        self.passes_left = max(self.passes_left - 1, 0)
        self.ctx.report(self.done, None, message)

    def finish(self, outcome: EvaluationOutcome) -> None:
        self.ctx.report(
            self.done,
            self.done,
            f"{len(outcome.results)} model(s) evaluated"
            + (f", {len(outcome.errors)} failed" if outcome.errors else ""),
        )


def start_evaluation(app: App, request: EvaluationRequest) -> Job:
    """Check `request` (raising EvaluationError and friends at once), then run it as the App's job."""
    app.jobs.ensure_idle(*MODEL_JOBS)  # loading a model would pull a model in training away
    evaluator = Evaluator(app.models, app.core.worker, app.settings.user_data_dir)
    text = evaluator.check(request)
    return app.jobs.start(EVALUATION_JOB, lambda ctx: evaluator.run(request, ctx, text), excludes=MODEL_JOBS)
