"""Tiny random vision models as llama.cpp files: a text GGUF plus its mmproj (projector) GGUF, holding the
same weights as a Hugging Face folder, so that tests can compare loaders.

- `build_vlm_gguf`: the Gemma 3 model of tests/vision_models.py (transformers can run it too).
- `build_qwen2vl_gguf`: the tiny Qwen2-VL of tests/vision_models.py, for M-RoPE (an image takes fewer
  positions than tokens), checked against `mtmd_reference_logits`, llama.cpp's own whole-prompt evaluation.

Both are written by llama.cpp's own ``convert_hf_to_gguf.py`` (from llama-cpp-python's source distribution,
`webui.lora_convert.find_converter`), run once per model in one subprocess, with test-model artifacts answered:
- the tokenizers are trained by the tests, so their pre-tokenizer hash is unknown to the converter; they
  are GPT-2's byte-level regex, so ``tokenizer.ggml.pre`` is set to "gpt-2";
- transformers 5 saves Gemma 3's vision keys as ``vision_tower.X``, the converter maps
  ``vision_tower.vision_model.X`` (the released checkpoints' layout): the projector is converted from a
  copy of the folder whose safetensors have the released names.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.vision_models import build_tiny_qwen2vl

#: Run in a subprocess: the converter's module with the one pre-tokenizer lookup answered.
_SCRIPT = """
import sys
folder, text_src, text_out, proj_src, proj_out = sys.argv[1:6]
sys.path.insert(0, folder)
import convert_hf_to_gguf as convert
from conversion.base import TextModel

TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
for src, out, extra in ((text_src, text_out, []), (proj_src, proj_out, ["--mmproj"])):
    sys.argv = ["convert_hf_to_gguf.py", src, "--outtype", "f32", "--outfile", out, *extra]
    convert.main()
"""


def _released_layout(src: Path, dst: Path) -> Path:
    """A copy of the HF folder whose vision keys carry the ``vision_model.`` level the converter maps."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, dst / item.name)
    tensors = load_file(src / "model.safetensors")
    renamed = {
        (
            k.replace("vision_tower.", "vision_tower.vision_model.", 1)
            if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.")
            else k
        ): v
        for k, v in tensors.items()
    }
    save_file(renamed, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _convert(hf_dir: Path, out_dir: Path, name: str, rename_vision: bool) -> tuple[Path, Path]:
    """``out_dir/NAME-f32.gguf`` and ``out_dir/mmproj-NAME-f32.gguf`` (built once; existing files are
    returned as they are). Skips the calling test when the converter cannot be had."""
    import pytest

    from webui.lora_convert import find_converter

    text, proj = out_dir / f"{name}-f32.gguf", out_dir / f"mmproj-{name}-f32.gguf"
    if text.is_file() and proj.is_file():
        return text, proj
    folder = find_converter()
    if folder is None:
        pytest.skip("llama.cpp's convert_hf_to_gguf.py is not available (no network for pip download?)")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".convert"
    work.mkdir(exist_ok=True)
    source = _released_layout(hf_dir, work / hf_dir.name) if rename_vision else hf_dir
    env = {**os.environ, "PYTHONPATH": str(Path(folder) / "gguf-py")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            str(folder),
            str(hf_dir),
            str(work / text.name),
            str(source),
            str(work / proj.name),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{done.stderr[-3000:]}")
    (work / text.name).replace(text)
    (work / proj.name).replace(proj)
    shutil.rmtree(work, ignore_errors=True)
    return text, proj


def build_vlm_gguf(vlm_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The Gemma 3 model of tests/vision_models.py as ``tiny-vlm-f32.gguf`` + ``mmproj-tiny-vlm-f32.gguf``."""
    return _convert(vlm_dir, out_dir, "tiny-vlm", rename_vision=True)


def build_qwen2vl_gguf(work: Path, out_dir: Path) -> tuple[Path, Path]:
    """The tiny Qwen2-VL as ``tiny-qwen2vl-f32.gguf`` + ``mmproj-tiny-qwen2vl-f32.gguf``."""
    return _convert(build_tiny_qwen2vl(work / "tiny-qwen2vl"), out_dir, "tiny-qwen2vl", rename_vision=False)


def mtmd_reference_logits(
    model: Path, mmproj: Path, text: str, images: list[bytes], n_ctx: int = 1024
) -> np.ndarray:
    """Next-token logits after `text` (with llama.cpp's media markers) and `images` (encoded files), read
    the way llama.cpp's own tools do: a fresh context, `mtmd_helper_eval_chunks` over the whole prompt (it
    places every chunk, M-RoPE positions included). No Hearth code is involved."""
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as capi

    from loaders.llamacpp_media import input_text

    llm = Llama(model_path=str(model), n_ctx=n_ctx, n_batch=512, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.print_timings, params.warmup = False, False, False
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm._model.model, params)
    bitmaps = [
        mtmd.mtmd_helper_bitmap_init_from_buf(
            ctx, (ctypes.c_uint8 * len(d)).from_buffer_copy(d), len(d), False
        )
        for d in images
    ]
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        request = input_text(mtmd, text)
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(request), array, len(bitmaps)) == 0
        n_past = capi.llama_pos(0)
        assert (
            mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, 512, True, ctypes.byref(n_past))
            == 0
        )
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        for bitmap in bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(ctx)
        llm.close()
