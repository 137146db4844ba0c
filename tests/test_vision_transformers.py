"""Images on the Transformers loader (loaders/transformers_vision.py), through Hearth's ModelManager and
GenerationCore, on tiny random vision models saved with transformers: Gemma 3 (tests/vision_models.py) and
the Qwen2-VL of tests/vision_gguf.py (3-D M-RoPE positions; its processor loads without torchvision). Each is
checked against plain transformers: the same processor output through the model's own forward / generate."""

from __future__ import annotations

import dataclasses
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.vision_models import QWEN_TEMPLATE, build_tiny_qwen2vl
from webui.events import PromptRead, TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.media import MEDIA_MARKER, Image, MediaError
from webui.models import ModelManager
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False)
TURN = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
PROMPT = "<bos>" + TURN.format(f"{MEDIA_MARKER}\nWhat is in the picture?")
GEMMA_IMAGE = "<start_of_image>"  # what Gemma 3's chat template writes for an image part


def png(seed: int, size: tuple[int, int] = (64, 48)) -> Image:
    """A noisy RGB picture (noise, so two seeds look nothing alike to the vision tower)."""
    from PIL import Image as PILImage

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buf, "PNG")
    return Image.from_bytes(buf.getvalue())


RED, GREEN = png(1), png(2)


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory: pytest.TempPathFactory, vlm_dir: Path) -> Path:
    """A models folder holding tiny-vlm (Gemma 3) and tiny-qwen2vl (Qwen2-VL)."""
    root = tmp_path_factory.mktemp("vision-models")
    shutil.copytree(vlm_dir, root / "tiny-vlm")
    build_tiny_qwen2vl(root / "tiny-qwen2vl")
    return root


@pytest.fixture(scope="module")
def vlm(vision_models: Path, loaders: dict):
    """(manager, core) with tiny-vlm loaded by the Transformers loader."""
    manager = ModelManager(vision_models, loaders)
    manager.load("tiny-vlm", loader="Transformers", params={"device": "cpu"})
    yield manager, GenerationCore(manager)
    manager.unload()


@pytest.fixture(scope="module")
def plain(vlm_dir: Path):
    """Plain transformers on the same folder: the reference."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(vlm_dir)


def first_token(
    core: GenerationCore, images: list[Image], prompt: str = PROMPT
) -> list[tuple[int, str, float]]:
    """The top next-token logprobs after `prompt` with `images`, as the core reports them."""
    chunks = [
        e
        for e in core.stream(
            GenerationRequest(prompt=prompt, images=images, max_new_tokens=1, logprobs=20, sampling=GREEDY)
        )
        if isinstance(e, TextChunk)
    ]
    return next(entry for chunk in chunks for entry in chunk.logprobs).top


# -- the image reaches the model ----------------------------------------------------------------------
def test_the_image_decides_the_next_token_logits(vlm):
    _, core = vlm
    red, green, red_again = first_token(core, [RED]), first_token(core, [GREEN]), first_token(core, [RED])
    assert red == red_again
    assert max(abs(a[2] - b[2]) for a, b in zip(red, green, strict=True)) > 1e-2
    no_image = first_token(core, [], PROMPT.replace(MEDIA_MARKER, ""))
    assert no_image != red


def test_logits_equal_plain_transformers(vlm, plain):
    manager, core = vlm
    model, processor = plain
    prompt = "<bos>" + TURN.format(f"{MEDIA_MARKER}\nand\n{MEDIA_MARKER}\nWhich differs?")
    inputs = processor(
        text=prompt.replace(MEDIA_MARKER, GEMMA_IMAGE), images=[RED.pil(), GREEN.pil()], return_tensors="pt"
    )
    with torch.no_grad():
        reference = model(**inputs, logits_to_keep=0).logits[0]
    hearth = manager.require()
    ids = hearth.tokenize_media(prompt, [RED, GREEN])
    assert ids == inputs["input_ids"][0].tolist()
    assert torch.allclose(hearth.logits(ids), reference[-1], atol=1e-4)
    assert torch.allclose(hearth.sequence_logits(ids), reference, atol=1e-4)  # every position (perplexity)
    top = first_token(core, [RED, GREEN], prompt)  # through the core: its logprobs are the same numbers
    expected = torch.log_softmax(reference, dim=-1)
    assert all(abs(logprob - float(expected[-1, token])) < 1e-4 for token, _, logprob in top)
    # the prompt scored token by token (an echo's logprobs), through the images too
    events = list(
        core.stream(
            GenerationRequest(prompt=prompt, images=[RED, GREEN], max_new_tokens=1, prompt_logprobs=1)
        )
    )
    scored = next(e for e in events if isinstance(e, PromptRead)).logprobs
    assert [entry.token_id for entry in scored] == ids and scored[0].logprob is None
    assert all(
        abs(entry.logprob - float(expected[i, entry.token_id])) < 1e-4 for i, entry in enumerate(scored[1:])
    )


def test_greedy_generation_with_an_image_matches_transformers_generate(vlm, plain):
    _, core = vlm
    model, processor = plain
    done = core.generate(GenerationRequest(prompt=PROMPT, images=[GREEN], max_new_tokens=8, sampling=GREEDY))
    inputs = processor(
        text=PROMPT.replace(MEDIA_MARKER, GEMMA_IMAGE), images=[GREEN.pil()], return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    expected = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = set(np.atleast_1d(model.generation_config.eos_token_id).tolist())
    assert done.token_ids == [t for t in expected if t not in eos][: len(done.token_ids)]
    assert done.token_ids and done.usage.prompt_tokens == inputs["input_ids"].shape[1]


def test_second_turn_reads_only_new_tokens_and_keeps_the_encoded_image(vlm):
    manager, core = vlm
    model = manager.require()

    def turn(prompt: str, image: Image):
        evaluated, encodes = model.evaluated_tokens, model.image_encodes
        done = core.generate(
            GenerationRequest(prompt=prompt, images=[image], max_new_tokens=6, sampling=GREEDY)
        )
        return done, model.evaluated_tokens - evaluated, model.image_encodes - encodes

    soft = model.hf_tokenizer.convert_tokens_to_ids("<image_soft_token>")  # Gemma 3's image tokens
    fresh = png(3)  # an image this model has never seen
    image_start = model.tokenize_media(PROMPT, [fresh]).index(soft)
    first, first_read, first_encodes = turn(PROMPT, fresh)
    second_prompt = PROMPT + first.text + "<end_of_turn>\n" + TURN.format("And the colours?")
    second, second_read, second_encodes = turn(second_prompt, fresh)
    new = second.usage.prompt_tokens - first.usage.prompt_tokens  # the reply and the new user turn
    print(
        f"turn 1: {first.usage.prompt_tokens} prompt tokens, evaluated {first_read}, image encodes {first_encodes}; "
        f"turn 2: {second.usage.prompt_tokens} prompt tokens, evaluated {second_read}, encodes {second_encodes}"
    )
    assert first_encodes == 1 and first_read >= first.usage.prompt_tokens - image_start
    assert second_encodes == 0
    assert second_read <= new + len(second.token_ids)  # nothing before the reply was read again

    other = png(4)  # another image at the same place: evaluated again from where it starts
    _, third_read, third_encodes = turn(second_prompt, other)
    assert third_encodes == 1
    assert third_read >= second.usage.prompt_tokens - image_start


def test_a_text_prompt_on_the_vision_model_is_unchanged(vlm, plain):
    _, core = vlm
    model, processor = plain
    prompt = "<bos>" + TURN.format("Tell me a story.")
    done = core.generate(GenerationRequest(prompt=prompt, max_new_tokens=6, sampling=GREEDY))
    inputs = processor.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=6)
    eos = set(np.atleast_1d(model.generation_config.eos_token_id).tolist())
    expected = [t for t in out[0, inputs["input_ids"].shape[1] :].tolist() if t not in eos]
    assert done.token_ids == expected[: len(done.token_ids)] and done.token_ids


# -- bad input: clear errors, the model still works after ---------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): enough for the size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_bad_images_are_clear_errors(vlm):
    manager, core = vlm
    with pytest.raises(MediaError, match="truncated"):
        Image.from_bytes(RED.data[: len(RED.data) // 2])
    with pytest.raises(MediaError, match="megapixels"):
        Image.from_bytes(_png_header(10_000, 5_000))
    broken = dataclasses.replace(RED, data=RED.data[:60])  # past the edge's check: the core still says which
    with pytest.raises(MediaError, match="image 1 of the prompt cannot be decoded"):
        core.generate(GenerationRequest(prompt=PROMPT, images=[broken], max_new_tokens=2, sampling=GREEDY))
    model = manager.require()
    assert model.max_images == 8
    too_many = [RED] * (model.max_images + 1)
    with pytest.raises(MediaError, match="takes at most 8"):
        core.generate(
            GenerationRequest(prompt=MEDIA_MARKER * len(too_many), images=too_many, max_new_tokens=2)
        )
    assert core.generate(
        GenerationRequest(prompt=PROMPT, images=[RED], max_new_tokens=2, sampling=GREEDY)
    ).token_ids


def test_a_text_model_given_an_image_names_itself(manager: ModelManager):
    manager.load("tiny-llama", loader="Transformers", params={"device": "cpu"})
    core = GenerationCore(manager)
    with pytest.raises(MediaError, match="tiny-llama has no vision"):
        core.generate(GenerationRequest(prompt=f"{MEDIA_MARKER} What is it?", images=[RED], max_new_tokens=2))
    assert manager.require().max_images == 0


def test_a_vision_model_without_its_processor_says_so(vision_models: Path, loaders: dict, tmp_path: Path):
    shutil.copytree(
        vision_models / "tiny-vlm",
        tmp_path / "no-processor",
        ignore=shutil.ignore_patterns("processor_config.json"),
    )
    manager = ModelManager(tmp_path, loaders)
    try:
        manager.load("no-processor", loader="Transformers", params={"device": "cpu"})
        with pytest.raises(MediaError, match="no-processor is a vision model, but .* processor"):
            GenerationCore(manager).generate(GenerationRequest(prompt=PROMPT, images=[RED], max_new_tokens=2))
    finally:
        manager.unload()


# -- Qwen2-VL: 3-D positions, a processor without torchvision, the processor's chat template --------------
def test_qwen2vl_positions_and_template(vision_models: Path, loaders: dict):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    from loaders.transformers_processor import load_processor

    folder = vision_models / "tiny-qwen2vl"
    manager = ModelManager(vision_models, loaders)
    try:
        hearth = manager.load("tiny-qwen2vl", loader="Transformers", params={"device": "cpu"})
        assert hearth.info.chat_template == QWEN_TEMPLATE  # the tokenizer has none: the processor's
        prompt = f"<|im_start|>user\n{MEDIA_MARKER} and {MEDIA_MARKER} differ how?<|im_end|>\n<|im_start|>assistant\n"
        ids = hearth.tokenize_media(prompt, [RED, png(5, (40, 90))])
        tail = [7, 9, 11]  # decode steps after the images: their positions follow the images' 3-D ones
        logits = [hearth.logits(ids + tail[:n]) for n in range(len(tail) + 1)]

        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        processor, problem = load_processor(
            folder, AutoConfig.from_pretrained(folder), trust_remote_code=False
        )
        assert not problem  # built without its video processor where torchvision is missing
        expanded = prompt.replace(MEDIA_MARKER, "<|vision_start|><|image_pad|><|vision_end|>")
        inputs = processor(text=[expanded], images=[RED.pil(), png(5, (40, 90)).pil()], return_tensors="pt")
        assert inputs["input_ids"][0].tolist() == ids
        inputs["input_ids"] = torch.tensor([ids + tail])
        for key in ("attention_mask", "mm_token_type_ids"):
            inputs[key] = torch.cat(
                [inputs[key], torch.full((1, len(tail)), int(key == "attention_mask"))], dim=1
            )
        with torch.no_grad():
            reference = model.eval()(**inputs, logits_to_keep=0).logits[0]
        for n, got in enumerate(logits):
            assert torch.allclose(got, reference[len(ids) + n - 1], atol=1e-4), n
        assert AutoTokenizer.from_pretrained(folder).chat_template is None
    finally:
        manager.unload()
