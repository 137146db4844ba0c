"""The processor side of a Transformers vision model: whether a folder is one, loading its processor
(without torchvision where only its video part needs it), and the text its chat template writes for an
image. The model itself is `loaders.transformers_vision`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Families whose images do not enter as token features (cross-attention): text works, images do not.
UNSUPPORTED = {"mllama": "its images enter through cross-attention layers, which Hearth does not drive yet"}
_TEXTS = ("hearth-text-a", "hearth-text-b")


def is_vision_config(config: Any) -> bool:
    """Whether AutoModelForImageTextToText loads this config (its mapping, or remote code that names it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    auto_map = getattr(config, "auto_map", None) or {}
    return type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING or "AutoModelForImageTextToText" in auto_map


def load_processor(path: Path, config: Any, trust_remote_code: bool) -> tuple[Any | None, str]:
    """The model's processor, or None and why not (the model then loads for text only).

    Processors that also declare a video processor (Qwen2-VL, Qwen2.5-VL) need torchvision for it even when
    only images are used; without torchvision the processor is built without its video part."""
    from transformers import AutoProcessor, ProcessorMixin

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError as exc:
        if "torchvision" not in str(exc).lower():
            return None, f"its processor needs a package that is not installed ({exc})"
        try:
            processor = _without_video(path, config, trust_remote_code)
        except (ImportError, OSError, ValueError, KeyError, TypeError) as again:
            return None, f"its processor needs torchvision (pip install torchvision): {again}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"its processor could not be loaded: {exc}"
    if not isinstance(processor, ProcessorMixin) or not hasattr(processor, "image_processor"):
        return None, "its folder has no image processor (preprocessor_config.json)"
    return processor, ""


def _without_video(path: Path, config: Any, trust_remote_code: bool) -> Any:
    """The model's processor class with its video processor left out (images need no torchvision)."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    cls = PROCESSOR_MAPPING[type(config)]
    parts = [name for name in cls.get_attributes() if "video" not in name]
    narrowed = type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda _cls: parts)})
    return narrowed.from_pretrained(path, trust_remote_code=trust_remote_code)


def image_placeholder(processor: Any) -> str | None:
    """The text the processor's chat template writes for one image part (Gemma 3: ``<start_of_image>``,
    Qwen2-VL: ``<|vision_start|><|image_pad|><|vision_end|>``, LLaVA: ``<image>\\n``): a user message
    rendered with and without an image between two texts; what the image adds is the placeholder. Falls
    back to the processor's image token; None when neither is known."""
    from jinja2 import TemplateError

    token = getattr(processor, "image_token", None)
    first, second = ({"type": "text", "text": text} for text in _TEXTS)
    try:
        seen = processor.apply_chat_template(
            [{"role": "user", "content": [first, {"type": "image"}, second]}], tokenize=False
        )
        plain = processor.apply_chat_template([{"role": "user", "content": [first, second]}], tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError, AttributeError):
        return token
    if not isinstance(seen, str) or not isinstance(plain, str):
        return token
    head = 0
    while head < min(len(seen), len(plain)) and seen[head] == plain[head]:
        head += 1
    tail = 0
    while tail < min(len(seen), len(plain)) - head and seen[-1 - tail] == plain[-1 - tail]:
        tail += 1
    added = seen[head : len(seen) - tail]
    return added if added.strip() and (token is None or token in added) else token
