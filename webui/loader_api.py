"""The contract between Hearth and a model backend.

A *loader* knows how to recognise a model on disk, which parameters it takes, and how to turn a path into
a *Model*. A Model is what the generation core drives: tokenize, detokenize, next-token logits for a token
sequence (reusing its cache for the common prefix), and optionally a native fast generate.

Loader parameters are declared once here (`LoaderParam`); the CLI flags, the Model tab and API validation
are generated from those declarations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from webui.errors import HearthError, LoaderError, ModelRuntimeError  # noqa: F401  (re-exported: the loader contract)
from webui.media import MEDIA_MARKER, Image, MediaError  # noqa: F401  (re-exported: the loader contract)
from webui.param_specs import ParamSpec
from webui.sampling.vocabulary import Vocabulary

if TYPE_CHECKING:
    import torch

    from webui.sampling import SamplingParams





@dataclass(frozen=True)
class LoaderParam(ParamSpec):
    """One parameter a loader accepts (`webui.param_specs.ParamSpec`: kind is one of bool, int, float, str,
    choice); `coerce` raises LoaderError naming it."""

    error: ClassVar[type[HearthError]] = LoaderError


@dataclass
class ModelInfo:
    """What a person wants to know about a loaded model; shown in the Model tab and the API."""

    name: str
    loader: str
    path: str
    architecture: str = "unknown"
    parameters: int | None = None
    context_length: int = 0
    vocab_size: int = 0
    quantization: str = ""
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "loader": self.loader,
            "path": self.path,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "quantization": self.quantization,
            "has_chat_template": bool(self.chat_template),
            **self.extra,
        }


class Model(ABC):
    """A loaded model. The generation core drives it from one thread; a model with `parallel` > 1 is
    driven by that many requests at once, each in its own lane (`webui.lanes`): it tells them apart with
    `webui.lanes.current()` and decodes them together through its `stepper`."""

    info: ModelInfo
    #: Tokens actually evaluated by the backend since load (prefix-cache reuse makes this grow slowly).
    evaluated_tokens: int = 0
    #: PyTorch threads while this model is loaded; None keeps the default. A backend that computes
    #: outside PyTorch sets 1: the sampler math is tiny, and idle PyTorch worker threads spinning on a
    #: small CPU would steal the cores the backend needs (measured 10x slower decode on 2 cores).
    torch_threads: int | None = None
    #: Requests decoded together (llama.cpp's `parallel` slots); 1 = one request at a time.
    parallel: int = 1
    #: Advances parked lanes together (`webui.lanes.Stepper`); None for a model whose lanes never park.
    stepper: Any = None

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """The context window in tokens."""

    @property
    @abstractmethod
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    @abstractmethod
    def bos_token_id(self) -> int | None: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Width of the logits vector."""

    @abstractmethod
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]: ...

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens skipped)."""

    def detokenize_special(self, ids: Sequence[int]) -> str:
        """Text of `ids` with special tokens written out (``[TOOL_CALLS]``, ``<|channel|>``): what the
        reasoning and tool-call readers need. Default: `detokenize` (a backend that cannot show them)."""
        return self.detokenize(ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token, for byte-exact streaming; default goes through detokenize."""
        return self.detokenize([token_id]).encode("utf-8")

    def token_text(self, token_id: int) -> bytes:
        """One token's bytes with a special token as its text (DRY looks for breakers in it)."""
        return self.token_bytes(token_id)

    @cached_property
    def vocabulary(self) -> Vocabulary:
        """The tokens as the samplers see them, built on first use and kept with the model."""
        return Vocabulary(self.vocab_size, self.token_text, lambda text: self.tokenize(text, add_bos=False))

    @abstractmethod
    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        """Raw next-token logits (float32, shape [vocab]) after `ids`, reusing the cache for the
        longest common prefix with the previous call on the same `slot`.

        Slot 0 is the main sequence; slot 1 holds a second sequence (the negative prompt of CFG) in its
        own cache, so that guidance costs one token of evaluation per step, not a re-read."""

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Raw logits at every position of `ids` (float32, shape [len(ids), vocab]): row i is what
        `logits(ids[: i + 1])` returns. Perplexity evaluation scores every token of a window with it.

        The default asks `logits()` one prefix at a time on slot 0 (the prefix cache makes each a one-token
        step), so it works on every backend; a backend that can return a whole batch's logits overrides it
        (one pass). Either way the slot-0 cache stays truthful for the generation that follows."""
        import torch

        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot compute logits for an empty sequence")
        return torch.stack([self.logits(ids[: i + 1]).float() for i in range(len(ids))])

    def native_generate(
        self, ids: Sequence[int], params: SamplingParams, seed: int
    ) -> Iterator[int] | None:
        """A backend's own fast sampling loop, or None when it cannot honour `params` exactly.

        The core then falls back to `logits()` plus Hearth's sampler pipeline. Never ignore a parameter
        silently: return None instead."""
        return None

    #: The backend's own sampler, by name ("llama.cpp"), when `native_generate` can run requests; None
    #: when every request goes through Hearth's pipeline.
    native_sampler: str | None = None

    #: Set by a model that generates on another server (`loaders.remote`: its `RemoteKind`, what the server
    #: accepts). The core then hands whole requests to `webui.remote_generation`, which streams text from
    #: the server, instead of driving `logits()`. None for a local model.
    remote: Any = None

    def unsupported_native(self, params: SamplingParams) -> list[str]:
        """Names of the parameters in `params` the native path cannot honour ([] when it can)."""
        return list(self.native_limits(params))

    def native_limits(self, params: SamplingParams) -> dict[str, str]:
        """The settings in `params` the native path cannot honour, each with why ({} when it can)."""
        return {}

    def supports_grammar(self) -> bool:
        """Whether this backend's native path honours `grammar_string` and `json_schema` (a constrained
        request goes to Hearth's pipeline otherwise)."""
        return False

    #: Most images one prompt may carry (`webui.media`); 0 for a model without vision, the default.
    max_images: int = 0

    def vision_missing(self) -> str:
        """Why this model takes no images and what to do instead: the error a request with images gets.
        A loader that can see with an extra file (llama.cpp's mmproj projector) says to load it."""
        return f"{self.info.name} has no vision: it is a text-only model; load a vision model to send images"

    def tokenize_media(self, text: str, images: Sequence[Image], add_bos: bool = True) -> list[int]:
        """Token ids of `text` with each `MEDIA_MARKER` replaced by its image, in order (the core has checked
        there is one marker per image and at most `max_images`).

        An image's positions hold a placeholder token (the model's own image token where it has one). The
        model keeps which image each run of positions stands for, so `logits()` of these ids (and of them
        plus generated tokens) evaluates the image there; its prefix cache reuses an image only while the same
        image (`Image.sha256`) sits at the same place. Raise MediaError for an image the model cannot take.
        Default: no vision (`vision_missing`)."""
        raise MediaError(self.vision_missing())

    def image_tokens(self, image: Image) -> int:
        """How many tokens `image` takes in a prompt (with the model's own wrapping tokens), without keeping
        anything: the chat's history fitting drops old exchanges by it. Called from any thread, so it must not
        touch the evaluation state. Default 0 (an image then counts as its marker's text)."""
        return 0

    #: Whether `set_loras` can apply LoRA adapters to this model without reloading it.
    supports_loras: bool = False

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        """Apply exactly `loras` (adapter path, scale; 1.0 = as trained), replacing those applied before;
        [] removes them all and gives the base model's outputs back exactly. The base weights stay loaded.

        Check every adapter against this model first and raise LoaderError naming what does not fit (a LoRA
        for another base model), leaving the model as it was. Drop every cached prefix: one computed
        without an adapter is wrong with it. Default: refuses, naming the loader (the manager only calls this
        when `supports_loras`, or with [] to clear)."""
        if loras:
            raise LoaderError(f"the {self.info.loader} loader cannot apply LoRA adapters")

    @abstractmethod
    def unload(self) -> None:
        """Free the weights and caches. The object must not be used afterwards."""


class Loader(ABC):
    """A backend plugin: recognises paths, declares parameters, loads models."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[tuple[LoaderParam, ...]] = ()

    @classmethod
    @abstractmethod
    def score(cls, path: Path) -> int:
        """How well this loader fits `path`: 0 = cannot load it; the highest score is chosen by default."""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the backend's libraries are importable here, and if not, what to install."""
        return True, ""

    @classmethod
    def resolve_params(cls, values: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with `values`, every value validated; unknown names are an error."""
        values = dict(values or {})
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise LoaderError(
                f"{cls.name} has no parameter {', '.join(unknown)}; it takes: {', '.join(known) or 'none'}"
            )
        return {name: p.coerce(values.get(name)) for name, p in known.items()}

    @classmethod
    def validate(cls, path: Path, params: dict[str, Any]) -> None:
        """Check parameter combinations before the current model is unloaded; raise LoaderError."""
        return None

    @abstractmethod
    def load(self, path: Path, params: dict[str, Any]) -> Model:
        """Load `path` with already-resolved `params`; raise LoaderError with a clear message on failure."""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences (the reusable part of a KV cache)."""
    n = min(len(a), len(b))
    a, b = list(a[:n]), list(b[:n])
    if a == b:  # the usual case (a chat's next turn, a decode step): one C-speed comparison
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
