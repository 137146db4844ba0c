"""Memory estimates against files written here with known tensors, and KV sizes computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from webui.amx_probe import extra_buffers_run
from webui.memory_estimate import (
    CUDA_RESERVE,
    GiB,
    MemoryEstimateError,
    MiB,
    ModelFacts,
    available_memory,
    compute_buffer_bytes,
    estimate,
    estimate_llamacpp,
    kv_cache_bytes,
    max_gpu_layers,
    read_gguf,
    read_hf,
    read_safetensors_header,
)

HIDDEN, HEADS, KV_HEADS, FFN, VOCAB, LAYERS = 64, 4, 2, 128, 100, 2
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def _gguf_tensors() -> dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]]:
    """Names -> (array as written, quant type). Shapes are numpy's (rows, columns)."""
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]] = {
        "token_embd.weight": (rng.standard_normal((VOCAB, HIDDEN), dtype=np.float32), None),
        "output_norm.weight": (np.ones(HIDDEN, dtype=np.float32), None),
        "output.weight": (rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16), None),
    }
    for i in range(LAYERS):
        tensors[f"blk.{i}.attn_norm.weight"] = (np.ones(HIDDEN, dtype=np.float32), None)
        tensors[f"blk.{i}.attn_q.weight"] = (rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float16), None)
        kv = rng.standard_normal((KV_HEADS * HIDDEN // HEADS, HIDDEN), dtype=np.float32)
        tensors[f"blk.{i}.attn_k.weight"] = (gguf.quants.quantize(kv, Q8_0), Q8_0)
        tensors[f"blk.{i}.ffn_up.weight"] = (
            gguf.quants.quantize(rng.standard_normal((FFN, HIDDEN), dtype=np.float32), Q8_0),
            Q8_0,
        )
    return tensors


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_feed_forward_length(FFN)
    writer.add_context_length(1024)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    for name, (array, qtype) in _gguf_tensors().items():
        writer.add_tensor(name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _expected_gguf() -> tuple[int, dict[str, int]]:
    """Parameter count and bytes per type, computed from the arrays: Q8_0 is 34 bytes per 32 values."""
    params, by_type = 0, {}
    for array, qtype in _gguf_tensors().values():
        if qtype is None:
            count, name, size = (
                array.size,
                {np.float32: "F32", np.float16: "F16"}[array.dtype.type],
                array.nbytes,
            )
        else:
            count, name, size = array.size * 32 // 34, "Q8_0", array.size
        params += count
        by_type[name] = by_type.get(name, 0) + size
    return params, by_type


def test_gguf_facts_are_exact(tiny_gguf: Path) -> None:
    facts = read_gguf(tiny_gguf)
    params, by_type = _expected_gguf()
    assert (
        facts.n_params
        == params
        == VOCAB * HIDDEN * 2 + HIDDEN + LAYERS * (HIDDEN + HIDDEN * HIDDEN + 32 * HIDDEN + FFN * HIDDEN)
    )
    assert facts.bytes_by_type == by_type
    assert by_type["Q8_0"] == LAYERS * (32 * HIDDEN + FFN * HIDDEN) // 32 * 34
    assert facts.weight_bytes == sum(by_type.values())
    assert facts.input_bytes == VOCAB * HIDDEN * 4
    assert facts.output_bytes == HIDDEN * 4 + VOCAB * HIDDEN * 2
    assert facts.layer_bytes == (facts.layer_bytes[0],) * LAYERS
    assert sum(facts.layer_bytes) + facts.input_bytes + facts.output_bytes == facts.weight_bytes
    assert (facts.architecture, facts.n_layers, facts.hidden_size, facts.n_heads, facts.n_kv_heads) == (
        "llama",
        2,
        64,
        4,
        2,
    )
    assert (facts.head_dim, facts.ffn_size, facts.vocab_size, facts.context_length) == (16, FFN, VOCAB, 1024)
    assert facts.file_size == tiny_gguf.stat().st_size > facts.weight_bytes


def test_kv_cache_matches_hand_computation() -> None:
    # Llama-2-7B: 32 layers, 32 heads of 128 (4096 dim), no GQA; fp16 at 4096 tokens = exactly 2 GiB.
    assert kv_cache_bytes(32, 4096, 32, 128, "f16") == 2 * GiB
    # Llama-3-8B: 8 KV heads of 128 -> a quarter of that.
    assert kv_cache_bytes(32, 4096, 8, 128, "f16") == 512 * MiB
    assert kv_cache_bytes(32, 4096, 32, 128, "q8_0") == 2 * GiB // 64 * 34
    assert kv_cache_bytes(32, 4096, 32, 128, "q4_0") == 2 * GiB // 64 * 18
    with pytest.raises(MemoryEstimateError, match="cache_type"):
        kv_cache_bytes(32, 4096, 32, 128, "q5_1")


def test_gguf_estimate_splits_weights_by_gpu_layers(tiny_gguf: Path) -> None:
    facts = read_gguf(tiny_gguf)
    base = {"n_ctx": 512, "cache_type": "f16", "flash_attn": False}
    cpu = estimate(tiny_gguf, "llama.cpp", {**base, "n_gpu_layers": 0})
    copies = sum(moved[1] for moved in (*facts.layer_moved, facts.output_moved))  # this CPU's AMX / repack
    copies *= extra_buffers_run()  # none where the AMX probe found them dying (weights in place)
    assert (cpu.weights_gpu, cpu.weights_cpu, cpu.vram) == (0, facts.weight_bytes + copies, 0)
    assert cpu.kv_cache == kv_cache_bytes(LAYERS, 512, KV_HEADS, 16)
    one = estimate(tiny_gguf, "llama.cpp", {**base, "n_gpu_layers": 1})
    assert one.weights_gpu == facts.layer_bytes[-1]
    full = estimate(tiny_gguf, "llama.cpp", {**base, "n_gpu_layers": -1})
    assert full.weights_gpu == facts.weight_bytes - facts.input_bytes  # token embeddings stay on the CPU
    assert full.vram == full.weights_gpu + full.kv_cache + compute_buffer_bytes(facts, 512) + CUDA_RESERVE
    assert full.vram + full.ram == full.total
    assert estimate(tiny_gguf, "llama.cpp", {**base, "n_gpu_layers": 99}) == full
    q8 = estimate(
        tiny_gguf, "llama.cpp", {**base, "n_gpu_layers": 0, "cache_type": "q8_0", "flash_attn": True}
    )
    assert q8.kv_cache == kv_cache_bytes(LAYERS, 512, KV_HEADS, 16, "q8_0") < cpu.kv_cache
    assert q8.overhead < cpu.overhead  # flash attention never materialises the scores
    assert set(cpu.as_dict()) == {
        "weights_gpu",
        "weights_cpu",
        "kv_cache",
        "overhead",
        "vram",
        "ram",
        "total",
    }


def test_n_ctx_zero_means_the_models_context_capped_like_the_loader(tiny_gguf: Path) -> None:
    est = estimate(tiny_gguf, "llama.cpp", {"n_ctx": 0, "n_gpu_layers": 0})
    assert est.kv_cache == kv_cache_bytes(LAYERS, 1024, KV_HEADS, 16)


def _seven_b() -> ModelFacts:
    """Llama-2-7B-shaped facts: 32 equal blocks of 200 MiB, embeddings and head 250 MiB each."""
    return ModelFacts(
        format="gguf",
        architecture="llama",
        n_params=7_000_000_000,
        n_layers=32,
        hidden_size=4096,
        n_heads=32,
        n_kv_heads=32,
        head_dim=128,
        ffn_size=11008,
        vocab_size=32000,
        context_length=4096,
        file_size=0,
        weight_bytes=32 * 200 * MiB + 500 * MiB,
        layer_bytes=(200 * MiB,) * 32,
        input_bytes=250 * MiB,
        output_bytes=250 * MiB,
    )


def test_max_gpu_layers_is_monotone_and_exact_at_the_edges() -> None:
    facts, params = _seven_b(), {"n_ctx": 4096, "cache_type": "f16", "flash_attn": False}
    vram = [estimate_llamacpp(facts, {**params, "n_gpu_layers": n}).vram for n in range(34)]
    assert vram == sorted(vram) and vram[0] == 0
    assert max_gpu_layers(facts, params, 0) == 0
    assert max_gpu_layers(facts, params, vram[1] - 1) == 0
    assert max_gpu_layers(facts, params, vram[1]) == 1
    assert max_gpu_layers(facts, params, vram[20]) == 20
    assert max_gpu_layers(facts, params, vram[33] - 1) == 32
    assert max_gpu_layers(facts, params, vram[33]) == 33  # everything, the output head included
    assert max_gpu_layers(facts, params, 1 << 50) == 33
    results = [max_gpu_layers(facts, params, free) for free in range(0, 16 * GiB, GiB // 2)]
    assert results == sorted(results)


def test_max_gpu_layers_reads_a_path(tiny_gguf: Path) -> None:
    assert max_gpu_layers(tiny_gguf, {"n_ctx": 512}, 1 << 40) == LAYERS + 1


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny"
    folder.mkdir()
    config = {
        "model_type": "llama",
        "num_hidden_layers": LAYERS,
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": FFN,
        "vocab_size": VOCAB,
        "max_position_embeddings": 512,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    first = {"model.embed_tokens.weight": torch.zeros(VOCAB, HIDDEN, dtype=torch.bfloat16)}
    for i in range(LAYERS):
        first[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.zeros(HIDDEN, HIDDEN, dtype=torch.bfloat16)
        first[f"model.layers.{i}.input_layernorm.weight"] = torch.zeros(HIDDEN, dtype=torch.float32)
    save_file(first, str(folder / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(
        {"lm_head.weight": torch.zeros(VOCAB, HIDDEN, dtype=torch.bfloat16)},
        str(folder / "model-00002-of-00002.safetensors"),
    )
    return folder


def test_safetensors_header_is_read_without_the_data(tiny_hf: Path) -> None:
    header = read_safetensors_header(tiny_hf / "model-00002-of-00002.safetensors")
    assert header == {
        "lm_head.weight": {"dtype": "BF16", "shape": [VOCAB, HIDDEN], "data_offsets": [0, VOCAB * HIDDEN * 2]}
    }


def test_hf_facts_and_estimates_by_dtype(tiny_hf: Path) -> None:
    facts = read_hf(tiny_hf)
    matrices = LAYERS * HIDDEN * HIDDEN
    params = 2 * VOCAB * HIDDEN + matrices + LAYERS * HIDDEN
    assert facts.n_params == params and facts.quantizable_params == matrices
    assert facts.bytes_by_type == {"BF16": (2 * VOCAB * HIDDEN + matrices) * 2, "F32": LAYERS * HIDDEN * 4}
    assert (facts.dtype, facts.n_kv_heads, facts.head_dim, facts.context_length) == (
        "bfloat16",
        KV_HEADS,
        16,
        512,
    )
    cpu = {"device": "cpu"}
    assert (
        estimate(tiny_hf, "Transformers", {**cpu, "dtype": "auto"}).weights_cpu == params * 4
    )  # float32 on CPU
    assert estimate(tiny_hf, "Transformers", {**cpu, "dtype": "float16"}).weights_cpu == params * 2
    on_gpu = estimate(tiny_hf, "Transformers", {"device": "cuda", "dtype": "auto"})
    assert (on_gpu.weights_gpu, on_gpu.weights_cpu, on_gpu.vram) == (params * 2, 0, on_gpu.total)
    assert on_gpu.kv_cache == 2 * LAYERS * 512 * KV_HEADS * 16 * 2
    int8 = estimate(tiny_hf, "Transformers", {**cpu, "load_in_8bit": True})
    assert int8.weights_cpu == matrices + (params - matrices) * 2
    nf4 = estimate(tiny_hf, "Transformers", {**cpu, "load_in_4bit": True})
    assert nf4.weights_cpu < int8.weights_cpu
    with pytest.raises(MemoryEstimateError, match="not a GGUF"):
        estimate(tiny_hf, "llama.cpp", {})


def test_transformers_overhead_is_the_mlp_peak_of_one_prompt_chunk(tiny_hf: Path) -> None:
    # Per token: gate activation, up projection and their product (3 * FFN), four hidden-size tensors and
    # rotary cos/sin (2 * head_dim 16) = 384 + 256 + 32 = 672 values; 512 tokens (one prompt chunk).
    assert 3 * FFN + 4 * HIDDEN + 2 * 16 == 672
    params = 2 * VOCAB * HIDDEN + LAYERS * HIDDEN * HIDDEN + LAYERS * HIDDEN
    cpu = estimate(tiny_hf, "Transformers", {"device": "cpu", "dtype": "auto"})  # float32 on the CPU
    assert cpu.overhead == 512 * 672 * 4 == 1_376_256
    assert cpu.kv_cache == 2 * LAYERS * 512 * KV_HEADS * 16 * 4
    assert cpu.total == cpu.ram == params * 4 + cpu.kv_cache + 1_376_256
    short = estimate(tiny_hf, "Transformers", {"device": "cpu", "dtype": "bfloat16", "n_ctx": 100})
    assert (short.overhead, short.kv_cache) == (100 * 672 * 2, 2 * LAYERS * 100 * KV_HEADS * 16 * 2)
    gpu = estimate(tiny_hf, "Transformers", {"device": "cuda", "dtype": "auto"})  # the checkpoint's bfloat16
    assert gpu.overhead == 512 * 672 * 2 + CUDA_RESERVE and gpu.vram == gpu.total
    long = estimate(tiny_hf, "Transformers", {"device": "cpu", "dtype": "auto", "n_ctx": 4096})
    assert long.overhead == cpu.overhead and long.kv_cache == 8 * cpu.kv_cache  # the chunk, not the context
    int8 = estimate(tiny_hf, "Transformers", {"device": "cuda", "load_in_8bit": True, "dtype": "float32"})
    assert int8.overhead == gpu.overhead  # 8-bit weights compute in float16


def test_unreadable_files_raise_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(MemoryEstimateError, match="broken.gguf is not a readable GGUF"):
        estimate(bad, "llama.cpp", {})
    with pytest.raises(MemoryEstimateError, match="expected a .gguf file"):
        estimate(tmp_path / "notes.txt", "llama.cpp", {})


def test_available_memory_reports_ram() -> None:
    info = available_memory()
    assert info["ram_total"] >= info["ram_available"] > 0
    assert info["vram_total"] >= info["vram_free"] >= 0


def test_an_hf_folder_for_exllamav2_is_estimated_not_refused_as_gguf(models_dir: Path) -> None:
    """ExLlamav2's name contains "llama": it once sent HF folders down the GGUF path and failed."""
    folder = models_dir / "tiny-llama"
    assert estimate(folder, "ExLlamav2", {}).total == estimate(folder, "Transformers", {}).total > 0
    with pytest.raises(MemoryEstimateError, match="not a GGUF model"):
        estimate(folder, "llamacpp_HF", {})


# -- what llama.cpp itself reports -------------------------------------------------------------------------
QUANTS = ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_NL")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small random Llama (rows of 256: every K-quant applies) quantized by llama.cpp to each type."""
    import llama_cpp

    from tests.model_factory import TinyConfig, build_tokenizer, random_weights, write_gguf

    root = tmp_path_factory.mktemp("quants")
    cfg = TinyConfig(hidden=256, heads=4, kv_heads=2, layers=2, intermediate=512, vocab=512)
    tokenizer = build_tokenizer(cfg.vocab)
    f32 = write_gguf(root / "f32.gguf", cfg, tokenizer, random_weights(cfg, tokenizer.get_vocab_size()))
    out = {}
    for quant in QUANTS:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
        out[quant] = root / f"{quant}.gguf"
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(out[quant]).encode(), params) == 0
    return out


def reported_buffers(path: Path) -> dict[str, float]:
    """llama.cpp's own `load_tensors: NAME model buffer size = X MiB` lines for a CPU load of `path`."""
    import re
    import subprocess
    import sys

    script = "import sys; from llama_cpp import Llama; Llama(sys.argv[1], n_ctx=64, n_gpu_layers=0, verbose=True)"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {name: float(mib) for name, mib in re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB",
                                                         done.stderr)}


def test_extra_weight_buffers_match_what_llama_cpp_allocates(quantized: dict[str, Path]) -> None:
    """Issue 17: the estimate was 1.19-1.27x under on Q4_K_M because llama.cpp's CPU backend copies some
    weights into a second buffer (AMX, CPU_REPACK) while the mapped file stays resident. The rules in
    webui/cpu_weight_buffers.py, applied to this machine's CPU, give the sizes llama.cpp reports here."""
    for quant, path in quantized.items():
        facts = read_gguf(path)
        predicted = sum(moved[1] for moved in (*facts.layer_moved, facts.output_moved)) / MiB
        reported = reported_buffers(path)
        extra = sum(mib for name, mib in reported.items() if name not in ("CPU_Mapped", "CPU"))
        assert predicted == pytest.approx(extra, abs=0.011), (quant, reported)
        mapped = estimate(path, "llama.cpp", {"n_ctx": 64, "n_gpu_layers": 0})
        read = estimate(path, "llama.cpp", {"n_ctx": 64, "n_gpu_layers": 0, "mmap": False})
        stored = sum(moved[0] for moved in (*facts.layer_moved, facts.output_moved))
        if extra_buffers_run():
            assert mapped.weights_cpu == facts.weight_bytes + round(predicted * MiB)  # the copy and the mapped pages
            assert read.weights_cpu == facts.weight_bytes - stored + round(predicted * MiB)  # only the copy
        else:  # the loader keeps the weights in place here (webui/amx_probe.py), and the estimate follows it
            assert mapped.weights_cpu == read.weights_cpu == facts.weight_bytes
        plain = estimate(path, "llama.cpp", {"n_ctx": 64, "n_gpu_layers": 0, "extra_buffers": False})
        assert plain.weights_cpu == facts.weight_bytes  # llama.cpp's use_extra_bufts off: used in place


def test_a_split_gguf_is_read_from_every_shard(tmp_path: Path) -> None:
    """Issue 17: split GGUFs were read as their first shard only (about 1/N of the weights)."""
    from llama_cpp import Llama

    from tests.model_factory import TinyConfig, build_tokenizer, random_weights, write_gguf

    cfg = TinyConfig()
    tokenizer = build_tokenizer(cfg.vocab)
    weights = random_weights(cfg, tokenizer.get_vocab_size())
    whole = write_gguf(tmp_path / "whole.gguf", cfg, tokenizer, weights)
    (tmp_path / "split").mkdir()
    first = write_gguf(tmp_path / "split" / "tiny.gguf", cfg, tokenizer, weights, split_max_tensors=8)
    shards = sorted((tmp_path / "split").glob("*.gguf"))
    assert first.name == f"tiny-00001-of-{len(shards):05d}.gguf" and len(shards) >= 3
    one, split = read_gguf(whole), read_gguf(first)
    assert (split.weight_bytes, split.layer_bytes, split.n_params) == (one.weight_bytes, one.layer_bytes, one.n_params)
    assert read_gguf(shards[1]).weight_bytes == one.weight_bytes  # any shard names the whole model
    params = {"n_ctx": 256, "n_gpu_layers": 1}
    assert estimate(tmp_path / "split", "llama.cpp", params) == estimate(whole, "llama.cpp", params)
    llm = Llama(str(first), n_ctx=64, verbose=False)  # llama.cpp itself loads all shards from the first
    assert llm.n_vocab() == tokenizer.get_vocab_size()
    del llm
    shards[-1].unlink()
    with pytest.raises(MemoryEstimateError, match=f"{shards[-1].name} is missing"):
        read_gguf(first)


def test_repack_off_loads_weights_in_place_and_generates(quantized: dict[str, Path], loaders: dict) -> None:
    """`--no-repack` (llama.cpp's use_extra_bufts off): for CPUs whose repacked kernels die with 'Illegal
    instruction' (this VM's advertises AMX it does not run; tests/test_amx_probe.py: found out by itself).
    The model generates, the estimate drops the copy, and llama.cpp's own default is left as it was."""
    from llama_cpp import llama_cpp as capi

    from webui.generation import GenerationCore, GenerationRequest
    from webui.models import ModelManager
    from webui.sampling import SamplingParams

    default = capi.llama_model_default_params
    path = quantized["Q4_0"]
    manager = ModelManager(path.parent, loaders)
    try:
        model = manager.load(path.name, "llama.cpp", {"n_ctx": 128, "repack": False})
        assert model._llm.model_params.use_extra_bufts is False
        assert capi.llama_model_default_params is default and default().use_extra_bufts is True
        done = GenerationCore(manager).generate(
            GenerationRequest(prompt="Hello", max_new_tokens=8, sampling=SamplingParams(temperature=0, ban_eos_token=True)))
        assert len(done.token_ids) == 8
        manager.load(path.name, "llama.cpp", {"n_ctx": 128})  # on only where the AMX probe found they run
        assert manager.model._llm.model_params.use_extra_bufts is extra_buffers_run()
    finally:
        manager.unload()
    plain = estimate(path, "llama.cpp", {"n_ctx": 64, "repack": False})
    assert plain.weights_cpu == read_gguf(path).weight_bytes <= estimate(path, "llama.cpp", {"n_ctx": 64}).weights_cpu
