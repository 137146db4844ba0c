"""Decode speed of Hearth's llama.cpp path vs llama-cpp-python called directly, and prompt-cache reuse.

Run: .venv/bin/python bench/bench_llamacpp.py [--tokens 128] [--rounds 3]
Builds (once, cached in bench/.cache/) a ~0.25B-parameter random GGUF with a 32k vocabulary, quantized
to Q8_0 by llama.cpp. Prints ratios measured side by side in this run; the goal is >= 0.98.

Every llama.cpp call runs on the core's model thread, as in the app: llama.cpp's OpenMP keeps a thread
team per calling thread, and with a second team in the process libgomp spins only briefly before sleeping,
which costs ~25% of decode speed on 2 cores (measured: 80 vs 110 tok/s).
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
from webui.generation import Finished, GenerationCore, GenerationRequest, TextChunk  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

SETTINGS = {"temperature": 0.7, "min_p": 0.05, "repetition_penalty": 1.1, "ban_eos_token": True, "seed": 7}


def direct_tokens_per_s(llm, prompt_ids: list[int], n: int) -> float:
    """llama-cpp-python's own generate loop with the same samplers (min_p, temperature, repetition penalty)."""
    llm.reset()
    llm.eval(prompt_ids)  # prompt reading is not part of the decode figure
    start = time.perf_counter()
    count = 0
    for _ in llm.generate(prompt_ids, temp=0.7, min_p=0.05, top_k=0, top_p=1.0, repeat_penalty=1.1, reset=True):
        count += 1
        if count == n:
            break
    return n / (time.perf_counter() - start)


def hearth_tokens_per_s(core: GenerationCore, prompt_ids: list[int], n: int) -> float:
    request = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=n, sampling=SamplingParams(**SETTINGS))
    core.worker.call(lambda: core.models.require().logits(prompt_ids))  # prompt cached, as for the direct run
    start = time.perf_counter()
    done = core.generate(request)
    assert done.usage.completion_tokens == n, done
    return n / (time.perf_counter() - start)


def time_to_first_token(core: GenerationCore, prompt: str) -> tuple[float, Finished]:
    request = GenerationRequest(prompt=prompt, max_new_tokens=8, sampling=SamplingParams(**SETTINGS))
    start = time.perf_counter()
    first = None
    for event in core.stream(request):
        if isinstance(event, TextChunk) and first is None:
            first = time.perf_counter() - start
        if isinstance(event, Finished):
            return first or time.perf_counter() - start, event
    raise AssertionError("no Finished event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from llama_cpp import Llama

    path = build_bench_gguf(ROOT / "bench" / ".cache")
    manager = ModelManager(path.parent, collect_loaders(make_plugin_manager()))
    model = manager.load(path.name, "llama.cpp", {"n_ctx": 4096})
    core = GenerationCore(manager)
    direct = Llama(str(path), n_ctx=4096, n_threads=model._llm.n_threads if hasattr(model, "_llm") else 2,
                   n_threads_batch=2, n_batch=512, verbose=False)
    prompt_ids = model.tokenize("Once upon a time there was a little village by the sea")
    print(f"model: {path.name} ({path.stat().st_size / 2**20:.0f} MiB), {model.info.parameters / 1e6:.0f}M parameters, vocab {model.vocab_size}")

    ours, theirs = [], []
    for _ in range(args.rounds):  # interleaved so drift in machine load hits both alike
        # Direct calls run on the core's model thread too: llama.cpp keeps an OpenMP team per calling
        # thread, and two teams on 2 cores would slow whichever runs second.
        theirs.append(core.worker.call(lambda: direct_tokens_per_s(direct, prompt_ids, args.tokens)))
        ours.append(hearth_tokens_per_s(core, prompt_ids, args.tokens))
    ours_m, theirs_m = statistics.median(ours), statistics.median(theirs)
    print(f"decode: llama-cpp-python direct {theirs_m:.2f} tok/s, Hearth llama.cpp {ours_m:.2f} tok/s, "
          f"ratio {ours_m / theirs_m:.3f} (goal >= 0.98)")

    words = "The dragon guarded a library of ancient books, and every night the fishermen told stories. "
    history = "User: " + words * 110 + "\nAssistant:"
    first_ttft, first = time_to_first_token(core, history)
    second_ttft, second = time_to_first_token(core, history + first.text + "\nUser: And then what happened?\nAssistant:")
    print(f"chat of {first.usage.prompt_tokens} prompt tokens: first-turn time to first token {first_ttft * 1000:.0f} ms, "
          f"second turn {second_ttft * 1000:.0f} ms, ratio {second_ttft / first_ttft:.3f} (prefix cache reuse)")
    manager.unload()


if __name__ == "__main__":
    main()
