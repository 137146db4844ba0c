"""Decode speed of Hearth's own sampler pipeline on llama.cpp logits (llamacpp_HF) vs llama.cpp's
native chain (the llama.cpp loader), doing the same sampling work.

Run: .venv/bin/python bench/bench_pipeline_path.py [--tokens 256] [--rounds 7] [--no-extra-buffers]
Same ~0.25B-parameter 32k-vocab Q8_0 random GGUF as bench_llamacpp.py. Every setting below runs natively
on the llama.cpp loader (checked), with the same meaning in both paths (tests/test_sampler_parity.py
holds them to the same numbers; ranges 0 = the whole context on both). The greedy setting must give
the same tokens on both sides, which the bench checks. Goal: pipeline / native >= 0.95. Each figure is
min / median / max over rounds whose first side alternates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import interleaved, report, without_extra_buffers  # noqa: E402
from tests.model_factory import build_bench_gguf  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.model_worker import ModelWorker  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

SETTINGS = {
    "a: min_p + temperature + repetition penalty": {"temperature": 0.8, "min_p": 0.05, "repetition_penalty": 1.1},
    "b: (a) + presence penalty + DRY + top_k": {"temperature": 0.8, "min_p": 0.05, "repetition_penalty": 1.1,
                                                "presence_penalty": 0.3, "dry_multiplier": 0.8, "top_k": 100},
    "c: adaptive-p after min_p": {"min_p": 0.05, "adaptive_target": 0.3},
    "d: greedy + repetition penalty + DRY (same tokens on both sides)": {"temperature": 0.0, "repetition_penalty": 1.1,
                                                                         "dry_multiplier": 0.8},
}


class Side:
    """One loader's core: runs a request of n tokens after reading the prompt afresh."""

    def __init__(self, core: GenerationCore, prompt_ids: list[int]):
        self.core, self.prompt_ids = core, prompt_ids
        self.tokens: list[int] = []

    def run(self, settings: dict, n: int) -> float:
        params = SamplingParams(ban_eos_token=True, seed=3, **settings)
        self.core.worker.call(self._read_prompt)  # prompt reading is not part of the decode figure
        start = time.perf_counter()
        done = self.core.generate(GenerationRequest(prompt_ids=self.prompt_ids, max_new_tokens=n, sampling=params))
        elapsed = time.perf_counter() - start
        assert done.usage.completion_tokens == n
        self.tokens = done.token_ids
        return n / elapsed

    def _read_prompt(self) -> None:
        model = self.core.models.require()
        model._slots[0].reset()  # one batch, as the other side: the same logits to the last bit
        model.logits(self.prompt_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-extra-buffers", action="store_true", help=without_extra_buffers.__doc__)
    args = parser.parse_args()
    if args.no_extra_buffers:
        without_extra_buffers()
    path = build_bench_gguf(ROOT / "bench" / ".cache")
    loaders = collect_loaders(make_plugin_manager())
    worker = ModelWorker()  # one model thread for both, as in the app: one llama.cpp (OpenMP) thread team
    sides = {}
    for loader in ("llama.cpp", "llamacpp_HF"):
        manager = ModelManager(path.parent, loaders)
        manager.load(path.name, loader, {"n_ctx": 2048})
        core = GenerationCore(manager, worker=worker)
        sides[loader] = Side(core, core.tokenize("Once upon a time there was a little village by the sea"))
    native_model = sides["llama.cpp"].core.models.require()
    for label, settings in SETTINGS.items():
        params = SamplingParams(ban_eos_token=True, **settings)
        assert not native_model.unsupported_native(params), native_model.native_limits(params)
        speeds = interleaved({name: (lambda side=side, settings=settings: side.run(settings, args.tokens)) for name, side in sides.items()},
                             args.rounds)
        if settings.get("temperature") == 0:
            assert sides["llama.cpp"].tokens == sides["llamacpp_HF"].tokens, "greedy runs differ: not the same work"
        print(report(f"{label}: {args.tokens} tokens x {args.rounds} rounds", ("pipeline (llamacpp_HF)", speeds["llamacpp_HF"]),
                     ("native (llama.cpp)", speeds["llama.cpp"]), 0.95))
    for side in sides.values():
        side.core.models.unload()


if __name__ == "__main__":
    main()
