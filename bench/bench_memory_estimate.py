"""How close webui.memory's estimate is to what llama.cpp really takes (CPU, n_gpu_layers 0).

Run: .venv/bin/python bench/bench_memory_estimate.py [--model PATH.gguf] [--ctx 2048]
Without --model it builds (once, cached in bench/.cache/) the same ~0.25B-parameter, 32k-vocabulary Q8_0
GGUF as bench_llamacpp.py. A fresh child process loads it with llama_cpp.Llama (use_mmap=False, so the
weights are read into counted memory rather than mapped pages that only count once touched) and fills the
whole context with a prompt, so every KV cache page and the compute buffer at its peak are touched. The RSS increase
over the child's baseline (llama_cpp already imported) is compared with the estimate; the goal is a ratio
measured/estimate within 0.90-1.10. llama.cpp's own buffer report is printed alongside for each part.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui.memory import MiB, estimate  # noqa: E402


def measure(model: str, n_ctx: int, n_batch: int) -> None:
    """Child process: print the RSS increase (bytes) of loading `model` and filling its context."""
    import gc

    import llama_cpp
    import psutil

    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_gpu_layers=0,
        use_mmap=False,
        verbose=True,
    )
    llm.eval([llm.token_bos()] + [1000 + i % 20000 for i in range(n_ctx - 2)])
    after = process.memory_info().rss
    print(json.dumps({"rss_increase": after - before}))


def llama_cpp_buffers(log: str) -> dict[str, float]:
    """llama.cpp's own 'X buffer size = N MiB' lines, summed by kind (model, KV, compute, output)."""
    sizes: dict[str, float] = {}
    for kind, mib in re.findall(r"(\w+(?: \w+)?) buffer size =\s+([\d.]+) MiB", log):
        key = kind.split()[-1]
        sizes[key] = sizes.get(key, 0.0) + float(mib)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a GGUF file (default: build the benchmark model)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(str(args.model), args.ctx, args.batch)
    if args.model is None:
        from tests.model_factory import build_bench_gguf

        args.model = build_bench_gguf(ROOT / "bench" / ".cache")
    params = {
        "n_ctx": args.ctx,
        "n_gpu_layers": 0,
        "cache_type": "f16",
        "flash_attn": False,
        "n_batch": args.batch,
    }
    est = estimate(args.model, "llama.cpp", params)
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            "--model",
            str(args.model),
            "--ctx",
            str(args.ctx),
            "--batch",
            str(args.batch),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(child.stdout.strip().splitlines()[-1])["rss_increase"]
    print(
        f"model {args.model.name}: {args.model.stat().st_size / MiB:.0f} MiB, n_ctx {args.ctx}, n_batch {args.batch}"
    )
    print(f"estimate: {est.describe()}")
    print(
        "llama.cpp reports (MiB): "
        + ", ".join(f"{k} {v:.1f}" for k, v in llama_cpp_buffers(child.stderr).items())
    )
    print(
        f"estimate parts (MiB): weights {(est.weights_cpu + est.weights_gpu) / MiB:.1f}, KV {est.kv_cache / MiB:.1f}, "
        f"overhead {est.overhead / MiB:.1f}"
    )
    print(
        f"measured RSS increase {measured / MiB:.1f} MiB, estimate {est.total / MiB:.1f} MiB, "
        f"ratio measured/estimate {measured / est.total:.3f} (goal 0.90-1.10)"
    )


if __name__ == "__main__":
    main()
