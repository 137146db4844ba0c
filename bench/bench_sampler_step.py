"""Milliseconds per generated token for the sampler pipeline (process + choose) on a large vocabulary.

Not a test: run `python bench/bench_sampler_step.py [--vocab 32000] [--context 4096]`. Each setting is
reported in ms/step (median of blocks of 20 steps) and as a ratio to the neutral chain (only the final draw), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from webui.sampling import SamplingParams, build_sampler  # noqa: E402
from webui.sampling.vocabulary import Vocabulary  # noqa: E402

SETTINGS: dict[str, dict] = {
    "neutral (draw only)": {},
    "typical: min_p + temperature + rep. penalty": {
        "min_p": 0.05,
        "temperature": 0.8,
        "repetition_penalty": 1.1,
        "repetition_penalty_range": 1024,
    },
    "Simple-1: top_k top_p temperature rep": {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.15,
    },
    "top_p 0.95 alone": {"top_p": 0.95},
    "DRY + XTC + min_p": {"dry_multiplier": 0.8, "xtc_probability": 0.5, "min_p": 0.02},
    "presence + frequency": {"presence_penalty": 0.3, "frequency_penalty": 0.2},
    "(a) + presence + DRY + top_k": {
        "min_p": 0.05,
        "temperature": 0.8,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.3,
        "dry_multiplier": 0.8,
        "top_k": 100,
    },
    "adaptive-p after min_p": {"min_p": 0.05, "adaptive_target": 0.3},
    "mirostat 2": {"mirostat_mode": 2},
    "typical_p + tfs": {"typical_p": 0.9, "tfs": 0.95},
    "dynatemp + quadratic": {
        "dynamic_temperature": True,
        "dynatemp_low": 0.5,
        "dynatemp_high": 1.5,
        "smoothing_factor": 0.3,
    },
}


def bench(settings: dict, vocab: int, context: int, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    # LM-like next-token logits: Zipf-shaped probabilities (exponent 1.5: a few likely tokens, a long
    # tail) in a random token order, plus noise. Flatter rows make top_p fall back to a sort.
    zipf = -1.5 * torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    logits = [
        (zipf + 0.3 * torch.randn(vocab, generator=gen))[torch.randperm(vocab, generator=gen)][None]
        for _ in range(8)
    ]
    ids = torch.randint(0, vocab, (1, context), generator=gen)
    sampler = build_sampler(
        SamplingParams(seed=1, **settings),
        vocab_size=vocab,
        eos_token_ids=[2],
        prompt_ids=ids[0, : context // 2].tolist(),
        vocabulary=Vocabulary(vocab, lambda t: bytes([32 + t % 90]), lambda s: [ord(c) % vocab for c in s]),
    )
    for i in range(5):
        sampler.choose(ids, logits[i % 8])
    # Median over blocks of 20 steps: the machine is shared, and the median shrugs off a busy moment.
    blocks = []
    for block in range(max(steps // 20, 1)):
        start = time.perf_counter()
        for i in range(20):
            sampler.choose(ids, logits[(block + i) % 8])
        blocks.append((time.perf_counter() - start) / 20 * 1000)
    return statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = as beside llama.cpp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"vocab {args.vocab}, context {args.context}, {args.steps} steps, {args.threads} torch thread(s)")
    baseline = None
    for name, settings in SETTINGS.items():
        ms = bench(settings, args.vocab, args.context, args.steps)
        baseline = baseline or ms
        print(f"  {name:46s} {ms:7.3f} ms/step  ({ms / baseline:4.1f}x draw only)")


if __name__ == "__main__":
    main()
