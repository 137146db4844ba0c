"""How close webui.memory_estimate's estimate is to what a loader really takes on the CPU.

Run: .venv/bin/python bench/bench_memory_estimate.py [--loader llama.cpp|Transformers] [--model PATH] [--ctx 2048]
The goal is a ratio measured/estimate within 0.90-1.10, where measured is the RSS increase of a fresh child
process over its baseline (the loader's library already imported).

llama.cpp (default): without --model it builds (once each, cached in bench/.cache/) the same ~0.25B-parameter,
32k-vocabulary GGUF as bench_llamacpp.py in every type of --quants, and measures each at every --ctx. The child
loads it with llama_cpp.Llama as Hearth's loader does (memory-mapped; --no-mmap reads it instead) and fills the
whole context with a prompt, so every weight page, every KV cache page and the compute buffer at its peak
are touched. Mapped pages count in RSS once touched, and weights that llama.cpp's CPU backend copies into an
extra buffer (AMX, CPU_REPACK: webui/cpu_weight_buffers.py) count twice. llama.cpp's own buffer report is
printed alongside, and one table at the end.

Transformers (--loader Transformers [--dtype auto|float32|bfloat16]): without --model it builds the same shape
as an F32 HF folder (bench/.cache/bench-hf/). The child loads it through Hearth's ModelManager (device cpu)
and reads every parameter once: when the load dtype is the file's, transformers maps the safetensors file and
its pages count only once read. Then it runs `Model.logits` two ways, one child each: "prefill" asks for all
--ctx tokens in one call (a long uncached prompt; the loader reads it PREFILL_CHUNK tokens per forward),
"growing" feeds a growing prefix (--chunk tokens more each call) so the KV cache is extended through the
reuse path. The KV cache grows by concatenation, and glibc keeps the freed smaller copies in its heap, which
is most of what is measured beyond weights, KV and one chunk's activations.
The loader takes no n_ctx, so the estimate is asked for the same --ctx explicitly.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import without_extra_buffers  # noqa: E402
from webui.memory_estimate import MemoryEstimate, MiB, estimate  # noqa: E402


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """The process's highest RSS since it started or since `_reset_peak` (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    """Linux: make the current RSS the new high-water mark, so a later peak belongs to what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_llamacpp(model: str, n_ctx: int, n_batch: int, mmap: bool) -> None:
    """Child process: print the RSS increase (bytes) of loading `model` and filling its context."""
    import gc

    import llama_cpp

    gc.collect()
    before = _rss()
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_gpu_layers=0,
        use_mmap=mmap,
        verbose=True,
    )
    llm.eval([llm.token_bos()] + [1000 + i % 20000 for i in range(n_ctx - 2)])
    print(json.dumps({"rss_increase": _rss() - before}))


def _touch_parameters(model: Any) -> None:
    """Read one value per 512 of every parameter: each page of a memory-mapped weight becomes resident."""
    import torch

    with torch.inference_mode():
        for param in model.parameters():
            float(param.detach().reshape(-1)[::512].float().sum())


def _warm_up(manager: Any) -> None:
    """Load, run and unload a tiny model: transformers imports its model and tokenizer code and PyTorch starts
    its thread pool on first use. That one-time cost belongs to the baseline, as llama_cpp's import does."""
    import tempfile

    from tests.model_factory import build_pair

    with tempfile.TemporaryDirectory() as tmp:
        tiny, _ = build_pair(Path(tmp))
        manager.load(str(tiny), "Transformers", {"device": "cpu", "dtype": "auto"}).logits([1, 2, 3])
        manager.unload()


def measure_transformers(folder: str, n_ctx: int, dtype: str, chunk: int) -> None:
    """Child process: load `folder` with Hearth's Transformers loader on the CPU, evaluate n_ctx tokens in
    calls of `chunk` more tokens each, and print RSS figures (bytes, over the baseline) and timings."""
    import gc

    from webui.models import ModelManager
    from webui.plugins import collect_loaders, make_plugin_manager

    manager = ModelManager(Path(folder).parent, collect_loaders(make_plugin_manager()))
    start = _rss()
    _warm_up(manager)
    gc.collect()
    before = _rss()
    began = time.perf_counter()
    model = manager.load(folder, "Transformers", {"device": "cpu", "dtype": dtype})
    _touch_parameters(model._model)
    loaded, load_peak, load_s = _rss(), _peak_rss(), time.perf_counter() - began
    _reset_peak()
    vocab = model.vocab_size
    ids = [1] + [(1000 + i % 20000) % vocab for i in range(n_ctx - 1)]
    began = time.perf_counter()
    for end in [*range(chunk, n_ctx, chunk), n_ctx]:
        model.logits(ids[:end])
    fill_s = time.perf_counter() - began
    cache = model._caches[0][1]
    kv = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    result = {
        "warm_up": before - start,
        "after_load": loaded - before,
        "load_peak": load_peak - before,
        "rss_increase": _rss() - before,
        "fill_peak": _peak_rss() - before,
        "kv_bytes": kv,
        "load_s": load_s,
        "fill_s": fill_s,
    }
    print(json.dumps(result))


def llama_cpp_buffers(log: str) -> dict[str, float]:
    """llama.cpp's own 'X buffer size = N MiB' lines, summed by kind (model, KV, compute, output)."""
    sizes: dict[str, float] = {}
    for kind, mib in re.findall(r"(\w+(?: \w+)?) buffer size =\s+([\d.]+) MiB", log):
        key = kind.split()[-1]
        sizes[key] = sizes.get(key, 0.0) + float(mib)
    return sizes


def _child(args: list[str]) -> tuple[dict[str, Any], str]:
    """Run this script with `--measure` in a fresh process; its last stdout line (JSON) and its stderr."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", *args], capture_output=True, text=True, check=True
    )
    return json.loads(child.stdout.strip().splitlines()[-1]), child.stderr


def _parts(est: MemoryEstimate) -> str:
    return (
        f"estimate parts (MiB): weights {(est.weights_cpu + est.weights_gpu) / MiB:.1f}, KV {est.kv_cache / MiB:.1f}, "
        f"overhead {est.overhead / MiB:.1f}"
    )


def run_llamacpp(args: argparse.Namespace) -> None:
    models = [args.model] if args.model else []
    if not models:
        from tests.model_factory import build_bench_gguf

        models = [build_bench_gguf(ROOT / "bench" / ".cache", quant) for quant in args.quants.split(",")]
    rows = []
    for model in models:
        for n_ctx in (int(c) for c in str(args.ctx).split(",")):
            rows.append(_measure_one(model, n_ctx, args.batch, not args.no_mmap, not args.no_extra_buffers))
    print(f"\n{'model':<22} {'n_ctx':>6} {'file MiB':>9} {'extra MiB':>10} {'estimate':>9} {'measured':>9} {'ratio':>6}")
    for name, n_ctx, size, extra, est, measured in rows:
        print(f"{name:<22} {n_ctx:>6} {size:>9.1f} {extra:>10.1f} {est:>9.1f} {measured:>9.1f} {measured / est:>6.3f}")
    print("ratio = measured RSS increase / estimate (goal 0.90-1.10); extra = llama.cpp's AMX + CPU_REPACK buffers")


def _measure_one(model: Path, n_ctx: int, n_batch: int, mmap: bool,
                 extra_buffers: bool) -> tuple[str, int, float, float, float, float]:
    params = {"n_ctx": n_ctx, "n_gpu_layers": 0, "cache_type": "f16", "flash_attn": False, "n_batch": n_batch,
              "mmap": mmap, "extra_buffers": extra_buffers}
    est = estimate(model, "llama.cpp", params)
    flags = [*([] if mmap else ["--no-mmap"]), *([] if extra_buffers else ["--no-extra-buffers"])]
    figures, log = _child(["--model", str(model), "--ctx", str(n_ctx), "--batch", str(n_batch), *flags])
    measured = figures["rss_increase"]
    extra = sum(float(mib) for name, mib in re.findall(r"(AMX|CPU_REPACK) model buffer size =\s+([\d.]+) MiB", log))
    print(f"model {model.name}: {model.stat().st_size / MiB:.0f} MiB, n_ctx {n_ctx}, n_batch {n_batch}, mmap {mmap}")
    print("llama.cpp reports (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in llama_cpp_buffers(log).items()))
    print(_parts(est))
    print(
        f"measured RSS increase {measured / MiB:.1f} MiB, estimate {est.total / MiB:.1f} MiB, "
        f"ratio measured/estimate {measured / est.total:.3f} (goal 0.90-1.10)"
    )
    return model.name, n_ctx, model.stat().st_size / MiB, extra, est.total / MiB, measured / MiB


def run_transformers(args: argparse.Namespace) -> None:
    args.ctx = int(args.ctx)
    if args.model is None:
        from tests.model_factory import build_bench_hf

        args.model = build_bench_hf(ROOT / "bench" / ".cache")
    est = estimate(args.model, "Transformers", {"device": "cpu", "dtype": args.dtype, "n_ctx": args.ctx})
    size = sum(f.stat().st_size for f in args.model.glob("*.safetensors"))
    print(f"model {args.model.name}: {size / MiB:.0f} MiB of safetensors, dtype {args.dtype}, n_ctx {args.ctx}")
    print(_parts(est))
    for label, chunk in (("prefill", args.ctx), (f"growing by {args.chunk}", args.chunk)):
        fig, _ = _child(
            ["--loader", "Transformers", "--model", str(args.model), "--ctx", str(args.ctx),
             "--dtype", args.dtype, "--chunk", str(chunk)]
        )
        _report_transformers(label, fig, est.total)


def _report_transformers(label: str, fig: dict[str, Any], total: int) -> None:
    """Two lines per run: the child's figures (MiB over its baseline), then the ratios to the estimate."""
    mib = {key: value / MiB for key, value in fig.items()}
    print(
        f"{label}: load {fig['load_s']:.1f} s, fill {fig['fill_s']:.1f} s; RSS increase (MiB) after load "
        f"{mib['after_load']:.1f} (peak {mib['load_peak']:.1f}), after fill {mib['rss_increase']:.1f} "
        f"(peak {mib['fill_peak']:.1f}), of which KV tensors {mib['kv_bytes']:.1f}; "
        f"not counted: the warm-up's one-time imports {mib['warm_up']:.1f}"
    )
    print(
        f"{label}: measured {mib['rss_increase']:.1f} MiB, estimate {total / MiB:.1f} MiB, ratio measured/estimate "
        f"{fig['rss_increase'] / total:.3f} after the fill, {fig['fill_peak'] / total:.3f} at its peak (goal 0.90-1.10)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loader", choices=("llama.cpp", "Transformers"), default="llama.cpp")
    parser.add_argument("--model", type=Path, help="a GGUF file or an HF folder (default: build the benchmark model)")
    parser.add_argument("--ctx", default="2048", help="context size(s), comma-separated (llama.cpp), e.g. 2048,8192")
    parser.add_argument("--quants", default="Q4_0,Q4_K_M,Q5_K_M,Q6_K,Q8_0",
                        help="llama.cpp: the benchmark model's types to build and measure (comma-separated)")
    parser.add_argument("--no-mmap", action="store_true", help="llama.cpp: read the file instead of mapping it")
    parser.add_argument("--no-extra-buffers", action="store_true",
                        help="llama.cpp: load without extra buffer types (AMX, CPU_REPACK), estimated the same way; "
                             + str(without_extra_buffers.__doc__).split(". ", 1)[1])
    parser.add_argument("--batch", type=int, default=512, help="llama.cpp's n_batch and n_ubatch")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="Transformers' load dtype (auto is float32 on the CPU)")
    parser.add_argument("--chunk", type=int, default=512, help="Transformers: tokens added per call when growing")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure and args.loader == "Transformers":
        return measure_transformers(str(args.model), int(args.ctx), args.dtype, args.chunk)
    if args.no_extra_buffers:
        without_extra_buffers()
    if args.measure:
        return measure_llamacpp(str(args.model), int(args.ctx), args.batch, not args.no_mmap)
    if args.loader == "Transformers":
        return run_transformers(args)
    return run_llamacpp(args)


if __name__ == "__main__":
    main()
