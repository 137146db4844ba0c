"""How often a request's greedy tokens differ alone and beside others in llama.cpp's `parallel` slots.

Run: .venv/bin/python bench/bench_parallel_agreement.py [--prompts 32] [--tokens 64] [--parallel 4]
Uses the realistic-size bench GGUF (tests/model_factory.build_bench_gguf, cached in bench/.cache/). Every
prompt is generated greedily alone (parallel 1), then all of them again, `--parallel` at a time through the
generation core from one thread each, as the API runs them. Prints how many requests and tokens agree, where
the first difference falls, and the largest logprob difference of the chosen tokens up to it.

A batch of another size takes other kernel paths in llama.cpp (matrix products tiled differently), so the
logits can differ in the last bits; greedy decoding then changes only where two candidates are that close.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.model_factory import build_bench_gguf  # noqa: E402
from webui.events import Finished, TextChunk  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

WORDS = "river stone light quiet market engine winter garden letter signal paper morning".split()


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8 + i % 5)) for i in range(n)]


def run(core: GenerationCore, prompt: str, tokens: int) -> tuple[list[int], list[float]]:
    request = GenerationRequest(prompt=prompt, max_new_tokens=tokens, logprobs=1,
                                sampling=SamplingParams(temperature=0, ban_eos_token=True))
    ids: list[int] = []
    logprobs: list[float] = []
    for event in core.stream(request):
        if isinstance(event, TextChunk):
            logprobs += [lp.logprob for lp in event.logprobs]
        if isinstance(event, Finished):
            ids = event.token_ids
    return ids, logprobs


def side_by_side(core: GenerationCore, texts: list[str], tokens: int) -> list[tuple[list[int], list[float]]]:
    results: list = [None] * len(texts)

    def one(i: int) -> None:
        results[i] = run(core, texts[i], tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--loader", default="llama.cpp", choices=["llama.cpp", "llamacpp_HF"])
    parser.add_argument("--no-repack", action="store_true", help="the loader's repack off (see --help of webui)")
    args = parser.parse_args()
    settings = {"n_ctx": 1024, "repack": not args.no_repack}
    gguf = build_bench_gguf(ROOT / "bench" / ".cache")
    manager = ModelManager(gguf.parent, collect_loaders(make_plugin_manager()))
    core = GenerationCore(manager)
    texts = prompts(args.prompts)
    manager.load(gguf.name, args.loader, {**settings, "parallel": 1})
    alone = [run(core, text, args.tokens) for text in texts]
    manager.load(gguf.name, args.loader, {**settings, "parallel": args.parallel})
    together = side_by_side(core, texts, args.tokens)
    batcher = manager.model.stepper
    same_requests = same_tokens = 0
    first_differences: list[int] = []
    drift = 0.0
    for (ids_a, lp_a), (ids_b, lp_b) in zip(alone, together, strict=True):
        agree = next((i for i, (a, b) in enumerate(zip(ids_a, ids_b, strict=False)) if a != b), min(len(ids_a), len(ids_b)))
        same_tokens += agree
        if ids_a == ids_b:
            same_requests += 1
        else:
            first_differences.append(agree)
        drift = max([drift, *(abs(a - b) for a, b in zip(lp_a[:agree], lp_b[:agree], strict=False))])
    total = sum(len(ids) for ids, _ in alone)
    print(f"{args.loader}, parallel {args.parallel}: {len(texts)} requests x {args.tokens} tokens, "
          f"{batcher.steps} decodes served up to {batcher.widest} requests each")
    print(f"requests with the same tokens: {same_requests}/{len(texts)}")
    print(f"tokens the same before any difference: {same_tokens}/{total}")
    print(f"first difference at token: {sorted(first_differences) or 'none'}")
    print(f"largest |logprob difference| of a chosen token before the first difference: {drift:.2e}")
    manager.unload()


if __name__ == "__main__":
    main()
