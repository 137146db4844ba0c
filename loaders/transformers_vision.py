"""Image-text-to-text models on the Transformers loader (Gemma 3, Qwen2-VL / Qwen2.5-VL, LLaVA, Idefics3 /
SmolVLM, Mistral 3...): the model from AutoModelForImageTextToText, its processor from AutoProcessor
(`loaders.transformers_processor`: loading it, the text its chat template writes for an image).

A prompt reaches `tokenize_media` with `MEDIA_MARKER` where each image goes. Each marker becomes the text
the processor's own chat template writes for an image part (`image_placeholder`), and the processor
expands that into the model's image tokens, as it would for `processor(text=..., images=...)`. The model
keeps the last few such prompts (`_Layout`): their ids, where each image's tokens lie (`ImageSpan`), the
processor's per-token tensors and the position ids (3-D for Qwen2-VL's M-RoPE, from the model's own rule).

`logits()` then treats an image span like any run of tokens of the prefix cache, keyed by the image's
SHA-256 as well as its ids: a later call with the same image at the same place (a decode step, the next
chat turn) reuses the cache; a different image there re-evaluates from its start. An image is encoded by
the vision tower once (`get_image_features`, as transformers' generate does) and its features kept for a
few images, so a changed text before it re-runs the language model over it but not the vision tower.
Each chunk fed to the model holds at most one image, whole (Gemma 3's image tokens attend to each other).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loaders.transformers_loader import PREFILL_CHUNK, TransformersModel
from loaders.transformers_processor import UNSUPPORTED, image_placeholder
from webui.errors import ModelRuntimeError
from webui.loader_api import MEDIA_MARKER, Image, MediaError, ModelInfo, common_prefix_length

#: Images one prompt may carry when the model says nothing (fewer when the context cannot hold them).
DEFAULT_MAX_IMAGES = 8
#: Encoded images kept for reuse (features of a few MB each).
KEPT_IMAGES = 8
#: Prompts whose images `logits()` can place (the request's own, and a few that tokenized after it).
KEPT_PROMPTS = 4
#: Processor outputs with one value per token (the rest describe images).
TOKEN_KEYS = ("attention_mask", "token_type_ids", "mm_token_type_ids", "moe_mm_token_type_ids")


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's tokens lie in a prompt, and which image it is (what the prefix cache compares)."""

    start: int
    end: int
    sha256: str
    layout: _Layout = field(compare=False, repr=False)  # the prompt it came from


@dataclass
class _Encoded:
    """One image as the model takes it: its processor tensors, token count, and vision-tower output."""

    n_tokens: int
    inputs: dict[str, Any]
    features: Any = None


@dataclass
class _Layout:
    """A prompt `tokenize_media` built: what `logits()` needs to place its images."""

    ids: list[int]
    images: dict[str, Image]
    token_types: dict[str, Any]  # the processor's per-token tensors, [1, len(ids)] each
    positions: Any = None  # position ids for ids plus one text token after them, [..., len(ids) + 1]
    spans: tuple[ImageSpan, ...] = ()


def _runs(kinds: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of image tokens (kind 1)."""
    runs: list[tuple[int, int]] = []
    for i, kind in enumerate(kinds):
        if kind != 1:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _decode(images: Sequence[Image]) -> list[Any]:
    """The images as RGB pictures; MediaError naming the one that does not decode."""
    from PIL import Image as PILImage

    pictures = []
    for number, image in enumerate(images, 1):
        try:
            pictures.append(image.pil())
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
            raise MediaError(f"image {number} of the prompt cannot be decoded: {exc}") from None
    return pictures


class TransformersVisionModel(TransformersModel):
    def __init__(
        self, model: Any, tokenizer: Any, info: ModelInfo, device: Any, processor: Any, problem: str
    ) -> None:
        super().__init__(model, tokenizer, info, device)
        self._processor = processor
        self._placeholder = image_placeholder(processor) if processor is not None else None
        if processor is not None and not problem and not self._placeholder:
            problem = "its processor names no image token, so Hearth cannot tell where an image goes"
        model_type = getattr(model.config, "model_type", "")
        self._problem = UNSUPPORTED.get(model_type, problem)
        self.max_images = 0 if self._problem else self._image_limit(model.config)
        self._layouts: list[_Layout] = []  # the latest first
        self._rows: tuple[int, list[int], int, Any] | None = None  # (slot, ids, first row's position, rows)
        self._encoded: OrderedDict[str, _Encoded] = OrderedDict()
        #: Times the vision tower encoded an image since load (the prefix cache and `_encoded` avoid it).
        self.image_encodes = 0
        forward = inspect.signature(model.forward).parameters
        encoder = getattr(model.base_model, "get_image_features", None)
        self._encoder = encoder if encoder is not None and "mm_encoder_outputs" in forward else None
        self._position_rows = self._probe_positions()

    # -- what a request may carry -------------------------------------------------------------------------
    def _image_limit(self, config: Any) -> int:
        per_image = next(
            (
                int(v)
                for holder in (config, self._processor)
                for name in ("mm_tokens_per_image", "image_seq_length", "num_image_tokens")
                if isinstance(v := getattr(holder, name, None), int) and v > 0
            ),
            0,
        )
        fits = self.n_ctx // per_image if per_image else DEFAULT_MAX_IMAGES
        return max(1, min(DEFAULT_MAX_IMAGES, fits))

    def vision_missing(self) -> str:
        if self._problem:
            return f"{self.info.name} is a vision model, but Hearth cannot send it images: {self._problem}"
        return super().vision_missing()

    def set_loras(self, loras: Sequence[tuple[Path, float]]) -> None:
        super().set_loras(loras)
        self._encoded.clear()  # an adapter may change the vision tower too
        self._rows = None

    # -- the prompt ---------------------------------------------------------------------------------------
    def tokenize_media(self, text: str, images: Sequence[Image], add_bos: bool = True) -> list[int]:
        if self._problem or self._placeholder is None:
            raise MediaError(self.vision_missing())
        torch = self._torch
        pictures = _decode(images)
        out = self._process(text.replace(MEDIA_MARKER, self._placeholder), pictures)
        ids = out["input_ids"][0].tolist()
        per_token = {key: out[key] for key in TOKEN_KEYS if key in out}
        bos = self.bos_token_id
        if add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
            per_token = {
                key: torch.cat([torch.full_like(v[:, :1], int(key == "attention_mask")), v], dim=1)
                for key, v in per_token.items()
            }
        encoded = [self._image(image, picture) for image, picture in zip(images, pictures, strict=True)]
        places = self._spans(ids, encoded)
        positions = self._layout_positions(ids, out, per_token)
        per_token.pop("attention_mask", None)
        layout = _Layout(ids, {image.sha256: image for image in images}, per_token, positions)
        layout.spans = tuple(
            ImageSpan(start, end, image.sha256, layout)
            for (start, end), image in zip(places, images, strict=True)
        )
        self._layouts = [layout, *self._layouts[: KEPT_PROMPTS - 1]]
        return ids

    def image_tokens(self, image: Image) -> int:
        """The ids the processor makes of one image's placeholder (its wrapping tokens included)."""
        if self._problem or self._placeholder is None:
            return 0
        return len(self._process(self._placeholder, _decode([image]))["input_ids"][0])

    def _process(self, text: str, pictures: list[Any]) -> Any:
        try:
            return self._processor(
                text=[text], images=pictures or None, return_tensors="pt", add_special_tokens=False
            )
        except (ValueError, TypeError, KeyError, IndexError, OSError, RuntimeError) as exc:
            raise MediaError(f"{self.info.name}'s processor cannot read the prompt's images: {exc}") from None

    def _image(self, image: Image, picture: Any = None) -> _Encoded:
        """One image through the processor on its own (its tensors, batch of one), kept by its hash."""
        found = self._encoded.get(image.sha256)
        if found is not None:
            self._encoded.move_to_end(image.sha256)
            return found
        out = self._process(self._placeholder or "", [picture if picture is not None else image.pil()])
        kinds = self._processor.create_mm_token_type_ids(out["input_ids"].tolist())[0]
        inputs = {key: value for key, value in out.items() if key != "input_ids" and key not in TOKEN_KEYS}
        found = self._encoded[image.sha256] = _Encoded(sum(kind == 1 for kind in kinds), inputs)
        while len(self._encoded) > KEPT_IMAGES:
            self._encoded.popitem(last=False)
        return found

    def _spans(self, ids: list[int], encoded: list[_Encoded]) -> list[tuple[int, int]]:
        """Each image's [start, end): the next runs of image tokens, as many tokens as it takes alone."""
        runs = _runs(self._processor.create_mm_token_type_ids([ids])[0])
        spans = []
        for one in encoded:
            taken, first = 0, None
            while taken < one.n_tokens and runs:
                start, end = runs.pop(0)
                first = start if first is None else first
                taken += end - start
            if taken != one.n_tokens or first is None:
                break
            spans.append((first, end))
        if len(spans) != len(encoded) or runs:
            raise MediaError(
                f"the prompt's text holds {self.info.name}'s image tokens of its own; remove them, "
                "images go in as attachments"
            )
        return spans

    # -- positions ----------------------------------------------------------------------------------------
    def _probe_positions(self) -> tuple[int, ...] | None:
        """The leading shape of the model's position ids (() or (4,) for M-RoPE); None: let the model infer
        them (a transformers without `_prepare_position_ids_for_generation`)."""
        prepare = getattr(self._model, "_prepare_position_ids_for_generation", None)
        if prepare is None:
            return None
        one = self._torch.ones((1, 1), dtype=self._torch.long)
        try:
            return tuple(prepare(one * 0, {"attention_mask": one}).shape[:-2])
        except (TypeError, ValueError, KeyError, RuntimeError):
            return None

    def _layout_positions(self, ids: list[int], out: Any, per_token: dict[str, Any]) -> Any:
        """Position ids of `ids` plus one text token after them, by the model's own rule (the one
        transformers' generate uses): 3-D M-RoPE positions on Qwen2-VL, 0..n elsewhere."""
        if self._position_rows is None:
            return None
        torch = self._torch
        pad = {
            key: torch.cat([v, torch.full_like(v[:, :1], int(key == "attention_mask"))], dim=1)
            for key, v in per_token.items()
        }
        pad.setdefault("attention_mask", torch.ones((1, len(ids) + 1), dtype=torch.long))
        extra = {key: value for key, value in out.items() if key != "input_ids" and key not in TOKEN_KEYS}
        with torch.inference_mode():
            full = torch.tensor([[*ids, ids[-1]]], dtype=torch.long)
            return self._model._prepare_position_ids_for_generation(full, {**extra, **pad}).cpu()

    def _positions(self, begin: int, end: int, media: tuple[ImageSpan, ...]) -> Any:
        """Position ids of positions begin..end: the prompt's own up to its first image not in `media`,
        then counting on from there (text)."""
        torch = self._torch
        if self._position_rows is None:
            return None
        layout = media[0].layout if media else None
        if layout is None or layout.positions is None:
            return torch.arange(begin, end).view(1, -1).expand(*self._position_rows, 1, -1)
        known = layout.positions.shape[-1]
        stop = layout.spans[len(media)].start if len(media) < len(layout.spans) else known
        head = layout.positions[..., begin : min(end, stop)]
        if end <= stop:
            return head
        after = torch.arange(max(begin, stop) - stop + 1, end - stop + 1)
        return torch.cat([head, layout.positions[..., stop - 1 : stop] + after], dim=-1)

    # -- the prefix cache ---------------------------------------------------------------------------------
    def logits(self, ids: Sequence[int], slot: int = 0) -> Any:
        """As a text model's; `ids` that end inside an image (a prompt scored token by token) get their row
        of the whole image's evaluation (what one forward over the prompt gives), kept while the scoring
        walks through the image."""
        ids = list(ids)
        through = self._image_around(ids)
        if through is None:
            self._rows = None
            return super().logits(ids, slot)
        if self._rows is None or self._rows[:2] != (slot, through):
            self._rows = None
            rows, first = self._read(through, slot, every=True)
            self._rows = (slot, through, first, rows)
        _, _, first, rows = self._rows
        return rows[len(ids) - 1 - first]

    def _image_around(self, ids: list[int]) -> list[int] | None:
        """A recent prompt's ids up to the end of the image that `ids` (a prefix of them) end inside."""
        for layout in self._layouts:
            if common_prefix_length(ids, layout.ids) == len(ids):
                for span in layout.spans:
                    if span.start < len(ids) < span.end:
                        return layout.ids[: span.end]
        return None

    def _media_in(self, ids: list[int]) -> tuple[ImageSpan, ...]:
        """The images `ids` carry: those of a recent prompt whose span and everything before it match
        `ids` (the prompt that places the most of them)."""
        best: tuple[ImageSpan, ...] = ()
        for layout in self._layouts:
            same = common_prefix_length(ids, layout.ids)
            if same == len(ids) and any(span.start < same < span.end for span in layout.spans):
                raise ModelRuntimeError("the token ids end inside an image: an image is evaluated whole")
            found = tuple(span for span in layout.spans if span.end <= same)
            best = found if len(found) > len(best) else best
        return best

    def _resume_at(self, prefix: int, cached_media: tuple, media: tuple) -> int:
        """Back to the start of the first image that differs from the cached one (or is not in both), and
        never into the middle of an image."""
        for span in set(cached_media) ^ set(media):
            prefix = min(prefix, span.start)
        for span in media:
            if span.start < prefix < span.end:
                prefix = span.start
        return prefix

    def _chunks(self, start: int, end: int, media: tuple) -> list[tuple[int, int]]:
        """Chunks of at most PREFILL_CHUNK tokens, but an image opens a chunk and ends inside it."""
        whole = {span.start: span.end for span in media if start <= span.start < end}
        cuts = sorted({start, end, *whole})
        chunks = []
        for low, high in zip(cuts, cuts[1:], strict=False):
            begin = low
            while begin < high:
                stop = min(high, max(begin + PREFILL_CHUNK, whole.get(begin, 0)))
                chunks.append((begin, stop))
                begin = stop
        return chunks

    # -- one forward pass ---------------------------------------------------------------------------------
    def _forward(self, ids: list[int], begin: int, end: int, cache: Any, media: tuple, every: bool) -> Any:
        torch = self._torch
        span = next((s for s in media if begin <= s.start < end), None)
        kwargs: dict[str, Any] = {
            "past_key_values": cache,
            "use_cache": True,
            "logits_to_keep": 0 if every else 1,
        }
        positions = self._positions(begin, end, media)
        if positions is not None:
            kwargs["position_ids"] = positions.to(self._device)
        if span is not None:  # its features; per-token tensors from the start (Gemma 3's image mask)
            kwargs.update(self._image_kwargs(span))
            for key, values in span.layout.token_types.items():
                full = torch.zeros((1, end), dtype=values.dtype)
                full[:, : min(end, span.end)] = values[:, : min(end, span.end)]
                kwargs[key] = full.to(self._device)
        chunk = torch.tensor([ids[begin:end]], dtype=torch.long, device=self._device)
        inputs = self._model.prepare_inputs_for_generation(
            chunk, is_first_iteration=span is not None, **kwargs
        )
        return self._model(**inputs)

    def _image_kwargs(self, span: ImageSpan) -> dict[str, Any]:
        """What the forward needs for the image at `span`: its vision-tower output when the model takes
        one (`mm_encoder_outputs`), else its processor tensors (the forward encodes them)."""
        one = self._image(span.layout.images[span.sha256])
        inputs = {
            key: value.to(self._device) if hasattr(value, "to") else value
            for key, value in one.inputs.items()
        }
        if self._encoder is None:
            self.image_encodes += 1
            return inputs
        if one.features is None:
            names = [name for name in inspect.signature(self._encoder).parameters if name in inputs]
            one.features = self._encoder(**{name: inputs[name] for name in names}, return_dict=True)
            self.image_encodes += 1
            one.inputs = {key: value for key, value in one.inputs.items() if key not in names}  # pixels: done
            inputs = {key: value for key, value in inputs.items() if key not in names}
        return {**inputs, "mm_encoder_outputs": {"image": one.features}}
