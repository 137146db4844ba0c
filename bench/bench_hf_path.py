"""Decode speed of the HF-wrapped path (llama.cpp logits -> Hearth's samplers) vs llama.cpp's native chain.

Run: .venv/bin/python bench/bench_hf_path.py [--tokens 96] [--rounds 3]
Same ~0.25B-parameter 32k-vocab Q8_0 random GGUF as bench_llamacpp.py, two settings:
(a) min_p + temperature + repetition penalty, (b) the same plus DRY and XTC.
Goal: HF/native >= 0.95 for (a). Ratios come from interleaved rounds in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.model_factory import build_bench_gguf  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.model_worker import ModelWorker  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

SETTINGS = {
    "a: min_p + temperature + repetition penalty": {"temperature": 0.8, "min_p": 0.05, "repetition_penalty": 1.1},
    "b: (a) + DRY + XTC": {"temperature": 0.8, "min_p": 0.05, "repetition_penalty": 1.1, "dry_multiplier": 0.8,
                           "xtc_threshold": 0.1, "xtc_probability": 0.5},
}


def tokens_per_s(core: GenerationCore, prompt_ids: list[int], n: int, settings: dict) -> float:
    core.worker.call(lambda: core.models.require().logits(prompt_ids))  # prompt cached: decode speed only
    request = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=n,
                                sampling=SamplingParams(ban_eos_token=True, seed=3, **settings))
    start = time.perf_counter()
    done = core.generate(request)
    assert done.usage.completion_tokens == n
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = build_bench_gguf(ROOT / "bench" / ".cache")
    loaders = collect_loaders(make_plugin_manager())
    cores = {}
    worker = ModelWorker()  # one model thread for both, as in the app: one llama.cpp (OpenMP) thread team
    for loader in ("llama.cpp", "llamacpp_HF"):
        manager = ModelManager(path.parent, loaders)
        manager.load(path.name, loader, {"n_ctx": 2048})
        cores[loader] = GenerationCore(manager, worker=worker)
    prompt_ids = cores["llama.cpp"].tokenize("Once upon a time there was a little village by the sea")
    for label, settings in SETTINGS.items():
        speeds: dict[str, list[float]] = {"llama.cpp": [], "llamacpp_HF": []}
        for _ in range(args.rounds):
            for loader, core in cores.items():
                speeds[loader].append(tokens_per_s(core, prompt_ids, args.tokens, settings))
        native, hf = (statistics.median(speeds[k]) for k in ("llama.cpp", "llamacpp_HF"))
        print(f"{label}: native {native:.2f} tok/s, HF path {hf:.2f} tok/s, ratio {hf / native:.3f}")
    for core in cores.values():
        core.models.unload()


if __name__ == "__main__":
    main()
