"""Images on llama.cpp: a GGUF model's multimodal projector (mmproj), run through llama-cpp-python's own
libmtmd bindings (`llama_cpp.mtmd_cpp`), as llama.cpp's server and `MTMDChatHandler` use it.

Hearth decodes an image once with Pillow (`webui.media.Image.pil`, so every format Hearth accepts works
the same way) and hands llama.cpp the RGB pixels (`mtmd_bitmap_init`); everything after that is llama.cpp's:
resizing, slicing, normalising (`mtmd_tokenize`), the image encoder and writing its embeddings into the
context (`mtmd_helper_eval_chunk_single`).

`Projector.tokenize` turns a prompt with `MEDIA_MARKER`s into token ids, with one placeholder id per image
position (the model's own image token where its vocabulary has one), and the `ImageSpan`s that say which
image each run of placeholders stands for. The model remembers the spans of its last few prompts
(`MediaLayouts`); `logits()` and the native loop look up the spans of the ids they are given, and
`LlamaSequence` evaluates an image only when the same image is not cached at the same place (a chat's
second turn reads only its new text).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaders.llamacpp_sequence import ImageSpan
from webui import lanes
from webui.errors import LoaderError, ModelRuntimeError
from webui.loader_api import LoaderParam, ModelInfo
from webui.media import MEDIA_MARKER, Image, MediaError

#: Most images in one prompt. Each costs tens to thousands of tokens (Gemma 3: 256; Qwen2-VL: by size);
#: the context check refuses a prompt that does not fit anyway. llama.cpp's server sets no limit.
MAX_IMAGES = 16
#: Image tokens of common vision vocabularies, tried in order for the placeholder id.
PLACEHOLDER_NAMES = (
    "<image_soft_token>",
    "<|image_pad|>",
    "<image>",
    "<|image|>",
    "[IMG]",
    "<IMG_CONTEXT>",
    "<img>",
    "<|vision_pad|>",
)

MMPROJ_PARAM = LoaderParam(
    "mmproj",
    "str",
    "auto",
    "Multimodal projector (mmproj-*.gguf) for images: auto = the one in the model's folder or named like the "
    "model beside it; a file name in the model's folder; none = text only.",
)


def input_text(mtmd: Any, text: str) -> Any:
    """An `mtmd_input_text` for `text` (special tokens parsed, none added: the prompt has its own BOS)."""
    request = mtmd.mtmd_input_text()
    encoded = text.encode("utf-8")
    request.text, request.text_len, request.add_special, request.parse_special = encoded, len(encoded), False, True
    return request


class ImageChunk:
    """One image (or one slice of it) as mtmd tokenized it: an owned copy of the chunk, freed with this object."""

    def __init__(self, projector: Projector, ptr: Any):
        mtmd = projector.mtmd
        self._projector, self._ptr = projector, ptr
        self.n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(ptr))
        self.n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(ptr))
        self.sha256 = (mtmd.mtmd_input_chunk_get_id(ptr) or b"").decode("ascii", errors="replace")

    def eval(self, ctx: Any, n_past: int, n_batch: int, logits_last: bool, seq_id: int = 0) -> int:
        """Encode the image and write its embeddings into `ctx` (a LlamaContext) from position `n_past`;
        returns the next position."""
        projector = self._projector
        if projector.ctx is None or not self._ptr:
            raise ModelRuntimeError("the model's projector was unloaded")
        from llama_cpp import llama_cpp as capi

        new_n_past = capi.llama_pos(0)
        code = projector.mtmd.mtmd_helper_eval_chunk_single(
            projector.ctx, ctx.ctx, self._ptr, n_past, seq_id, n_batch, logits_last, ctypes.byref(new_n_past)
        )
        if code != 0:
            raise ModelRuntimeError(
                f"llama.cpp failed to evaluate an image of {self.n_tokens} tokens at position "
                f"{n_past} (code {code}): try a larger n_ctx or n_batch"
            )
        return int(new_n_past.value)

    def close(self) -> None:
        if self._ptr:
            self._projector.mtmd.mtmd_input_chunk_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        try:
            self.close()
        except (TypeError, AttributeError):  # at interpreter exit the library may already be gone
            pass


class Projector:
    """An mtmd context: the projector file loaded beside a llama.cpp model."""

    def __init__(self, path: Path, llm: Any, *, use_gpu: bool, n_threads: int, flash_attn: bool):
        import llama_cpp.mtmd_cpp as mtmd
        from llama_cpp import llama_cpp as capi
        from llama_cpp._logger import llama_log_callback

        self.mtmd, self.path = mtmd, path
        mtmd.mtmd_log_set(llama_log_callback, None)  # clip's logs follow llama-cpp-python's verbosity
        mtmd.mtmd_helper_log_set(llama_log_callback, None)
        params = mtmd.mtmd_context_params_default()
        marker = MEDIA_MARKER.encode("utf-8")
        params.use_gpu, params.print_timings, params.n_threads = use_gpu, False, n_threads
        params.media_marker = marker
        params.flash_attn_type = (
            capi.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else capi.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self.ctx = mtmd.mtmd_init_from_file(str(path).encode("utf-8"), llm._model.model, params)
        if not self.ctx:
            raise LoaderError(
                f"mmproj: llama.cpp could not load {path.name} with this model (a projector for "
                "another model, or a corrupt file?); choose another file or set mmproj to none"
            )
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise LoaderError(f"mmproj: {path.name} has no vision encoder (an audio projector?)")
        #: M-RoPE (Qwen2-VL family): an image takes fewer positions than tokens (`LlamaSequence` counts them).
        self.mrope = bool(mtmd.mtmd_decode_use_mrope(self.ctx))
        self.placeholder = _placeholder_id(llm)

    def tokenize(self, text: str, images: Sequence[Image]) -> tuple[list[int], list[ImageSpan]]:
        """Ids of `text` with each marker replaced by its image's placeholders, and where the images are."""
        mtmd = self.mtmd
        if self.ctx is None:
            raise ModelRuntimeError("the model's projector was unloaded")
        bitmaps = []
        try:
            for index, image in enumerate(images, 1):
                rgb = image.pil()
                pixels = rgb.tobytes()
                bitmap = mtmd.mtmd_bitmap_init(
                    rgb.width, rgb.height, (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
                )
                if not bitmap:
                    raise MediaError(
                        f"image {index} ({image.width} x {image.height}) could not be given to llama.cpp"
                    )
                bitmaps.append(bitmap)
                mtmd.mtmd_bitmap_set_id(bitmap, image.sha256.encode("ascii"))
            return self._chunks(text, bitmaps)
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _chunks(self, text: str, bitmaps: list[Any]) -> tuple[list[int], list[ImageSpan]]:
        mtmd = self.mtmd
        request = input_text(mtmd, text)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            code = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(request), array, len(bitmaps))
            if code == 1:
                raise MediaError(
                    f"the prompt's image markers ({MEDIA_MARKER}) do not match its {len(bitmaps)} image(s)"
                )
            if code != 0:
                raise MediaError(
                    f"llama.cpp could not preprocess the image(s) for {self.path.name} (code {code})"
                )
            ids: list[int] = []
            spans: list[ImageSpan] = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                kind = mtmd.mtmd_input_chunk_get_type(chunk)
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    ids.extend(tokens[j] for j in range(count.value))
                elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    image = ImageChunk(self, mtmd.mtmd_input_chunk_copy(chunk))
                    spans.append(ImageSpan(len(ids), image.n_tokens, image.n_pos, image.sha256, image))
                    ids.extend([self.placeholder] * image.n_tokens)
                else:
                    raise MediaError(
                        "llama.cpp made a non-image part out of the prompt; only images are supported"
                    )
            return ids, spans
        finally:
            mtmd.mtmd_input_chunks_free(chunks)

    def close(self) -> None:
        if self.ctx:
            self.mtmd.mtmd_free(self.ctx)
        self.ctx = None


def _placeholder_id(llm: Any) -> int:
    """The vocabulary's image token (one id), else its padding or unknown token, else 0."""
    for name in PLACEHOLDER_NAMES:
        ids = llm.tokenize(name.encode("utf-8"), add_bos=False, special=True)
        if len(ids) == 1:
            return int(ids[0])
    from llama_cpp import llama_cpp as capi

    vocab = llm._model.vocab
    for token in (capi.llama_vocab_pad(vocab), capi.llama_vocab_unk(vocab)):
        if token >= 0:
            return int(token)
    return 0


class MediaLayouts:
    """The images of the last few `tokenize_media` results, looked up by the ids they were made for. Two
    prompts that differ only in their images have the same ids: the newest `tokenize_media` decides which
    images they stand for (the core tokenizes a request right before evaluating it; requests side by side
    in `parallel` slots each keep their own, in their lane)."""

    KEEP = 4

    def __init__(self) -> None:
        self._items: list[tuple[list[int], list[ImageSpan]]] = []

    def add(self, ids: list[int], spans: list[ImageSpan]) -> None:
        self._items = [item for item in self._items if item[0] != ids][-(self.KEEP - 1) :] + [
            (list(ids), spans)
        ]

    def spans_for(self, ids: Sequence[int]) -> list[ImageSpan]:
        """The images of the newest layout that `ids` extend (or a prefix of, scoring a prompt), within
        `ids`; [] for plain text. A sequence that ends inside an image cannot be evaluated."""
        if not self._items:
            return []
        ids = list(ids)
        for layout, spans in reversed(self._items):
            n = min(len(ids), len(layout))
            if ids[:n] != layout[:n]:
                continue
            inside = [s for s in spans if s.start < len(ids)]
            if inside and inside[-1].end > len(ids):
                raise ModelRuntimeError(
                    "cannot compute logits inside an image: llama.cpp evaluates an image "
                    "whole (prompt logprobs are not available over an image's tokens)"
                )
            return inside
        return []

    def clear(self) -> None:
        self._items.clear()


class LlamaVision:
    """The Model members for images, for `loaders.llamacpp.LlamaCppModel` (`_projector` None: no vision)."""

    info: ModelInfo
    _projector: Projector | None = None
    _layouts: MediaLayouts

    @property
    def max_images(self) -> int:  # type: ignore[override]
        return MAX_IMAGES if self._projector is not None else 0

    def vision_missing(self) -> str:
        return (
            f"{self.info.name} was loaded without a multimodal projector, so it cannot see images: if it is a "
            "vision model, put its mmproj-*.gguf in the model's folder (or beside the file) and load it again "
            "with mmproj 'auto', or name the file in the Model tab's mmproj field; otherwise load a vision model"
        )

    def tokenize_media(self, text: str, images: Sequence[Image], add_bos: bool = True) -> list[int]:
        if self._projector is None:
            raise MediaError(self.vision_missing())
        ids, spans = self._projector.tokenize(text, images)
        bos = self.bos_token_id  # type: ignore[attr-defined]
        if add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
            spans = [ImageSpan(s.start + 1, s.n_tokens, s.n_pos, s.sha256, s.chunk) for s in spans]
        self._lane_layouts().add(ids, spans)
        return ids

    def _lane_layouts(self) -> MediaLayouts:
        """The running lane's own layouts (`webui.lanes`: requests side by side may send the same text with
        other images), or the model's outside lanes."""
        lane = lanes.current()
        return self._layouts if lane is None else lane.data.setdefault("media", MediaLayouts())

    def image_tokens(self, image: Image) -> int:
        """The ids mtmd makes of one image (its wrapping tokens included); nothing is remembered."""
        if self._projector is None:
            return 0
        ids, spans = self._projector.tokenize(MEDIA_MARKER, [image])
        for span in spans:
            span.chunk.close()
        return len(ids)

    def _spans(self, ids: Sequence[int]) -> list[ImageSpan]:
        if self._projector is None:
            return []
        own = self._lane_layouts()
        return own.spans_for(ids) or (self._layouts.spans_for(ids) if own is not self._layouts else [])

    def _close_projector(self) -> None:
        self._layouts.clear()
        if self._projector is not None:
            self._projector.close()
            self._projector = None
