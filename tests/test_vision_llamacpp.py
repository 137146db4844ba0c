"""Images on llama.cpp: a GGUF model with its multimodal projector (mmproj), on real parts.

The tiny random Gemma 3 vision model of tests/vision_models.py is converted by llama.cpp's own converter
into a text GGUF plus an mmproj GGUF (tests/vision_gguf.py): the same weights as the Hugging Face folder,
so the llama.cpp loader is held to plain transformers' numbers. Images are 56 x 56, the model's own size:
llama.cpp and transformers resize with different filters, which would move the logits by far more than
the engines differ (measured: 0.8 on logits of magnitude 20 for an 80 x 60 image, 0.002 at 56 x 56).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from loaders.llamacpp import LlamaCppLoader, find_gguf
from tests.vision_gguf import build_qwen2vl_gguf, mtmd_reference_logits
from tests.vision_models import IMAGE_SIZE, IMAGE_TOKENS
from webui.errors import LoaderError
from webui.events import Finished
from webui.generation import GenerationCore, GenerationRequest
from webui.gguf_files import find_projector, projector_bytes
from webui.loader_api import common_prefix_length
from webui.media import MEDIA_MARKER, Image, MediaError
from webui.models import ModelManager, discover_models
from webui.sampling import SamplingParams

MODEL = "tiny-vlm-gguf"
GREEDY = SamplingParams(do_sample=False, ban_eos_token=True)
#: Gemma 3's turn format; its processor puts "\n\n" around an image, llama.cpp's mtmd adds the
#: <start_of_image> / <end_of_image> tokens itself, so the ids match transformers' exactly.
PROMPT = (
    f"<start_of_turn>user\n\n\n{MEDIA_MARKER}\n\nWhat is in the picture?<end_of_turn>\n<start_of_turn>model\n"
)
HF_PROMPT = (
    "<bos><start_of_turn>user\n<start_of_image>What is in the picture?<end_of_turn>\n<start_of_turn>model\n"
)
#: Largest |logit difference| allowed between llama.cpp and transformers (logits are ~20 in magnitude;
#: measured 0.002: the projector's input projection is stored in f16 by the converter).
LOGIT_TOLERANCE = 0.02


def picture(seed: int, size: int = IMAGE_SIZE) -> Image:
    """A patterned PNG (a flat colour would leave most of the encoder's input the same)."""
    from PIL import Image as PILImage

    img = PILImage.new("RGB", (size, size))
    img.putdata(
        [
            ((x * 7 + seed * 50) % 256, (y * 11 + seed * 90) % 256, (x * y + seed * 30) % 256)
            for y in range(size)
            for x in range(size)
        ]
    )
    out = io.BytesIO()
    img.save(out, "PNG")
    return Image.from_bytes(out.getvalue())


@pytest.fixture(scope="session")
def vision_models(vlm_gguf_dir: Path) -> Path:
    """A models folder holding tiny-vlm-gguf/: the text GGUF and its projector."""
    return vlm_gguf_dir


@pytest.fixture
def vision(vision_models: Path, loaders: dict):
    manager = ModelManager(vision_models, loaders)
    yield manager
    manager.unload()


def load(manager: ModelManager, loader: str = "llama.cpp", **params):
    return manager.load(MODEL, loader, {"n_ctx": 512, **params})


def generate(core: GenerationCore, prompt: str, images: list[Image], **kwargs) -> Finished:
    events = list(core.stream(GenerationRequest(prompt=prompt, images=images, sampling=GREEDY, **kwargs)))
    return events[-1]


# -- files: a projector goes with a model, it is never one -------------------------------------------
def test_a_projector_is_paired_with_its_model_and_never_listed_as_one(vision_models: Path, tmp_path: Path):
    folder = vision_models / MODEL
    model_file, projector = folder / "tiny-vlm-f32.gguf", folder / "mmproj-tiny-vlm-f32.gguf"
    assert [m.name for m in discover_models(vision_models)] == [MODEL]
    assert find_gguf(folder) == model_file
    assert find_projector(folder, model_file, "auto") == projector
    assert find_projector(folder, model_file, "none") is None
    # loose files in a models folder: the projector is not a model; a model named like it takes it
    for path in (model_file, projector):
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(model_file, tmp_path / "unrelated-Q8_0.gguf")
    assert [m.name for m in discover_models(tmp_path)] == ["tiny-vlm-f32.gguf", "unrelated-Q8_0.gguf"]
    assert (
        find_projector(tmp_path / model_file.name, tmp_path / model_file.name, "auto")
        == tmp_path / projector.name
    )
    assert find_projector(tmp_path / "unrelated-Q8_0.gguf", tmp_path / "unrelated-Q8_0.gguf", "auto") is None
    assert LlamaCppLoader.score(tmp_path / projector.name) == 0
    with pytest.raises(LoaderError, match="multimodal projector"):
        LlamaCppLoader().load(tmp_path / projector.name, LlamaCppLoader.resolve_params({}))


def test_the_mmproj_field_names_a_file_in_the_model_folder(vision: ModelManager):
    with pytest.raises(LoaderError, match="mmproj: no file 'mmproj-other.gguf'.*mmproj-tiny-vlm-f32.gguf"):
        load(vision, mmproj="mmproj-other.gguf")
    with pytest.raises(LoaderError, match="mmproj"):
        load(vision, mmproj="../tiny-vlm-gguf/mmproj-tiny-vlm-f32.gguf")
    with pytest.raises(LoaderError, match="not a multimodal projector"):
        load(vision, mmproj="tiny-vlm-f32.gguf")
    model = load(vision, mmproj="mmproj-tiny-vlm-f32.gguf")
    assert model.info.extra["projector"] == "mmproj-tiny-vlm-f32.gguf" and model.max_images > 0


def test_projector_bytes_are_its_weights_plus_one_image_of_work(vision_models: Path):
    from gguf import GGUFReader

    folder = vision_models / MODEL
    weights = sum(int(t.n_bytes) for t in GGUFReader(folder / "mmproj-tiny-vlm-f32.gguf").tensors)
    counted = projector_bytes(folder, LlamaCppLoader.resolve_params({}))
    assert counted.weights == weights and counted.compute > 0 and not counted.on_gpu
    assert counted.ram == counted.total and counted.vram == 0
    assert projector_bytes(folder, {"mmproj": "none"}).total == 0
    assert projector_bytes(folder, {"n_gpu_layers": -1}).vram == counted.total


# -- the image reaches the model -------------------------------------------------------------------
def test_two_images_give_different_logits_and_the_same_image_the_same(vision: ModelManager):
    model = load(vision)
    assert model.info.extra["vision"] and model.max_images == 16
    first, second = picture(1), picture(2)
    ids = model.tokenize_media(PROMPT, [first])
    image_token = model.tokenize("<image_soft_token>", add_bos=False)
    assert ids.count(image_token[0]) == IMAGE_TOKENS  # one placeholder per image position
    a = model.logits(ids)
    b = model.logits(model.tokenize_media(PROMPT, [second]))
    again = model.logits(model.tokenize_media(PROMPT, [first]))
    assert float((a - b).abs().max()) > 0.1
    assert float((a - again).abs().max()) == 0.0
    text_only = model.logits(model.tokenize(PROMPT.replace(MEDIA_MARKER, "<start_of_image><end_of_image>")))
    assert float((a - text_only).abs().max()) > 0.1


@pytest.mark.slow
def test_same_weights_as_transformers_same_logits_and_greedy_tokens(vision: ModelManager, vlm_dir: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    image = picture(3)
    model = load(vision)
    processor = AutoProcessor.from_pretrained(vlm_dir)
    hf = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    inputs = processor(text=HF_PROMPT, images=[image.pil()], return_tensors="pt")
    with torch.no_grad():
        expected = hf(**inputs).logits[0, -1]
        hf_tokens = hf.generate(
            **inputs, max_new_tokens=8, do_sample=False, suppress_tokens=sorted(model.eos_token_ids)
        )[0]
    ids = model.tokenize_media(PROMPT, [image])
    assert ids == inputs["input_ids"][0].tolist()
    got = model.logits(ids)
    assert float((got - expected).abs().max()) < LOGIT_TOLERANCE
    done = generate(GenerationCore(vision), PROMPT, [image], max_new_tokens=8)
    assert done.token_ids == hf_tokens[len(ids) :].tolist()


# -- the prefix cache keeps an image while it stays in place ------------------------------------------
def test_a_second_turn_does_not_encode_the_image_again(vision: ModelManager):
    model = load(vision)
    core = GenerationCore(vision)
    image = picture(4)
    first = generate(core, PROMPT, [image], max_new_tokens=4)
    ids1 = model.tokenize_media(PROMPT, [image])
    after_first = model.evaluated_tokens
    assert after_first >= len(ids1)
    turn2 = (
        PROMPT
        + first.text
        + "<end_of_turn>\n<start_of_turn>user\nAnd the colours?<end_of_turn>\n<start_of_turn>model\n"
    )
    generate(core, turn2, [image], max_new_tokens=1)
    ids2 = model.tokenize_media(turn2, [image])
    assert ids2[: len(ids1)] == ids1
    new = model.evaluated_tokens - after_first
    assert 0 < new <= len(ids2) - len(ids1)  # only what follows the first prompt: never the image
    # another image at the same place: read again from where the image starts
    image_start = ids1.index(model.tokenize("<image_soft_token>", add_bos=False)[0])
    before = model.evaluated_tokens
    generate(core, turn2, [picture(5)], max_new_tokens=1)
    assert model.evaluated_tokens - before == len(ids2) - image_start


# -- through the generation core: native sampler and Hearth's pipeline --------------------------------
def test_the_core_generates_with_images_on_both_paths_and_both_llama_loaders(vision: ModelManager):
    model = load(vision)
    core = GenerationCore(vision)
    image = picture(6)
    native = generate(core, PROMPT, [image], max_new_tokens=6)
    pipeline = generate(core, PROMPT, [image], max_new_tokens=6, logprobs=1)  # logprobs: Hearth's pipeline
    assert native.reason == pipeline.reason == "length"
    assert native.token_ids == pipeline.token_ids and len(native.token_ids) == 6
    ids = model.tokenize_media(PROMPT, [image])
    assert native.usage.prompt_tokens == len(ids)
    other = generate(core, PROMPT, [picture(7)], max_new_tokens=6)
    load(vision, "llamacpp_HF")
    assert generate(core, PROMPT, [image], max_new_tokens=6).token_ids == native.token_ids
    assert generate(core, PROMPT, [picture(7)], max_new_tokens=6).token_ids == other.token_ids


# -- what cannot be sent -----------------------------------------------------------------------------
def test_without_its_projector_a_gguf_refuses_images_naming_the_fix(vision: ModelManager):
    model = load(vision, mmproj="none")
    assert model.max_images == 0 and not model.info.extra["vision"]
    with pytest.raises(MediaError, match=f"{MODEL} was loaded without a multimodal projector.*mmproj"):
        generate(GenerationCore(vision), PROMPT, [picture(1)], max_new_tokens=2)
    with pytest.raises(MediaError, match="mmproj"):
        model.tokenize_media(PROMPT, [picture(1)])


def test_bad_images_and_bad_counts_are_clear_errors(vision: ModelManager):
    from PIL import Image as PILImage

    model = load(vision)
    core = GenerationCore(vision)
    data = io.BytesIO()
    PILImage.new("RGB", (64, 64), (1, 2, 3)).save(data, "PNG")
    with pytest.raises(MediaError, match="truncated"):
        Image.from_bytes(data.getvalue()[:-40])
    with pytest.raises(MediaError, match="not an image"):
        Image.from_bytes(b"GGUF not a picture")
    huge = io.BytesIO()
    PILImage.new("1", (8000, 7000)).save(huge, "PNG")  # 56 megapixels, a few kB of PNG
    with pytest.raises(MediaError, match="megapixels"):
        Image.from_bytes(huge.getvalue())
    many = [picture(1)] * (model.max_images + 1)
    with pytest.raises(MediaError, match=f"at most {model.max_images}"):
        generate(core, MEDIA_MARKER * len(many), many, max_new_tokens=1)
    with pytest.raises(MediaError, match="marker"):
        generate(core, PROMPT + MEDIA_MARKER, [picture(1)], max_new_tokens=1)
    # the model is still fine afterwards
    assert generate(core, PROMPT, [picture(1)], max_new_tokens=2).reason == "length"


def test_logits_cannot_stop_inside_an_image_and_ids_follow_the_newest_images(vision: ModelManager):
    from webui.errors import ModelRuntimeError

    model = load(vision)
    ids = model.tokenize_media(PROMPT, [picture(1)])
    start = ids.index(model.tokenize("<image_soft_token>", add_bos=False)[0])
    assert model.logits(ids[:start]).shape[0] == model.vocab_size  # up to the image: plain text
    with pytest.raises(ModelRuntimeError, match="inside an image"):
        model.logits(ids[: start + 2])
    first = model.logits(ids)
    # another image gives the same ids; from then on they stand for it: the newest tokenize_media decides
    assert model.tokenize_media(PROMPT, [picture(2)]) == ids
    assert float((model.logits(ids) - first).abs().max()) > 0.1


# -- M-RoPE (Qwen2-VL): an image takes fewer positions than tokens -------------------------------------
@pytest.fixture(scope="session")
def qwen_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen2vl-models")
    build_qwen2vl_gguf(tmp_path_factory.mktemp("qwen2vl-hf"), root / "tiny-qwen2vl")
    return root


#: Same engine, other thread count and batch split: measured 0.0016 on logits of magnitude ~5 (a position
#: off by the image's missing positions moves them by ~9).
MROPE_TOLERANCE = 0.01


@pytest.mark.slow
def test_mrope_positions_across_turns_match_llama_cpps_own_reading(qwen_models: Path, loaders: dict):
    """Each prompt is read through the prefix cache (a new turn, an edit after the image, the turn again)
    and compared with llama.cpp's own whole-prompt evaluation in a fresh context."""
    folder = qwen_models / "tiny-qwen2vl"
    manager = ModelManager(qwen_models, loaders)
    model = manager.load("tiny-qwen2vl", "llama.cpp", {"n_ctx": 1024})
    try:
        image = picture(1, 150)  # 25 image tokens over 5 positions
        turn1 = f"<|im_start|>user\n{MEDIA_MARKER}Describe it.<|im_end|>\n<|im_start|>assistant\n"
        turn2 = (
            turn1
            + "A picture.<|im_end|>\n<|im_start|>user\nAnd the colours?<|im_end|>\n<|im_start|>assistant\n"
        )
        edited = turn1.replace("Describe it.", "What is it?")
        placeholder = model.tokenize("<|image_pad|>", add_bos=False)[0]
        read = {}
        for text in (turn1, turn2, edited, turn2):
            ids = model.tokenize_media(text, [image], add_bos=False)
            before = model.evaluated_tokens
            got = model.logits(ids).numpy()
            read.setdefault(text, []).append(model.evaluated_tokens - before)
            expected = mtmd_reference_logits(
                folder / "tiny-qwen2vl-f32.gguf", folder / "mmproj-tiny-qwen2vl-f32.gguf", text, [image.data]
            )
            assert np.abs(got - expected).max() < MROPE_TOLERANCE, text
        ids1, ids2, ids_edited = (
            model.tokenize_media(t, [image], add_bos=False) for t in (turn1, turn2, edited)
        )
        end_of_image = len(ids1) - ids1[::-1].index(placeholder)
        assert ids1.count(placeholder) == 25
        assert read[turn1] == [len(ids1)]
        assert read[turn2][0] == len(ids2) - len(ids1)  # the new turn only
        kept = common_prefix_length(ids2, ids_edited)
        assert kept >= end_of_image and read[edited] == [len(ids_edited) - kept]  # after the image only
        assert read[turn2][1] == len(ids2) - kept
    finally:
        manager.unload()


def test_images_in_parallel_slots_match_alone(vision: ModelManager):
    """An image is written into its own slot's sequence while the other lanes wait (it cannot share a batch):
    two lanes with different images side by side get the logits each gets alone (each lane keeps its own
    image layout, though both prompts tokenize to the same ids)."""
    from webui.lanes import run_lanes

    model = load(vision, parallel=1)

    def two_steps(seed: int):  # the prompt, then one token more, as the sampler pipeline asks
        ids = model.tokenize_media(PROMPT, [picture(seed)])
        model.logits(ids)
        return model.logits([*ids, 100]).clone()

    alone = [two_steps(seed) for seed in (1, 2)]
    assert float((alone[0] - alone[1]).abs().max()) > 0.1
    model = load(vision, parallel=2)
    results: dict[int, object] = {}

    def body(i: int) -> None:  # the same text with another image in each lane, as the core runs requests
        results[i] = two_steps(i + 1)

    bodies = [lambda i=i: body(i) for i in range(2)]
    run_lanes(lambda: bodies.pop(0) if bodies else None, 2, lambda: model.stepper)
    for i in range(2):
        assert float((results[i] - alone[i]).abs().max()) < 1e-3
