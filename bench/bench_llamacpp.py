"""Decode speed of Hearth's llama.cpp path vs llama-cpp-python called directly, and prompt-cache reuse.

Run: .venv/bin/python bench/bench_llamacpp.py [--tokens 256] [--rounds 7]
Builds (once, cached in bench/.cache/) a ~0.25B-parameter random GGUF with a 32k vocabulary, quantized
to Q8_0 by llama.cpp. Prints ratios measured side by side in this run, as min / median / max over rounds
whose first side alternates; the goal is >= 0.98.

Equal work: llama-cpp-python's own generate loop (Llama.generate) runs with the very sampler chain
Hearth builds for SETTINGS (its built-in chain has another order and a 64-token penalty window), fed
the same prompt tokens first, with the same seed; both sides must then produce the same tokens, which
the bench checks before it reports a figure.

Every llama.cpp call runs on the core's model thread, as in the app: llama.cpp's OpenMP keeps a thread
team per calling thread, and with a second team in the process libgomp spins only briefly before sleeping,
which costs ~25% of decode speed on 2 cores (measured: 80 vs 110 tok/s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import interleaved, report, without_extra_buffers  # noqa: E402
from loaders import llamacpp_sampling as native  # noqa: E402
from loaders.llamacpp import LlamaCppLoader  # noqa: E402
from tests.model_factory import build_bench_gguf  # noqa: E402
from webui.events import Finished, TextChunk  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

SETTINGS = {"temperature": 0.7, "min_p": 0.05, "repetition_penalty": 1.1, "ban_eos_token": True, "seed": 7}


class Direct:
    """llama-cpp-python's Llama.generate, with Hearth's chain for SETTINGS in place of its own."""

    def __init__(self, llm, model, prompt_ids: list[int]):
        self.llm, self.model, self.prompt_ids = llm, model, prompt_ids
        self.tokens: list[int] = []

    def run(self, n: int) -> float:
        params = SamplingParams(**SETTINGS)
        chain = native.build_chain(params, model=self.llm._model, n_vocab=self.llm.n_vocab(), n_ctx=self.llm.n_ctx(),
                                   eos_ids=self.model.eos_token_ids, seed=params.seed)
        for token in self.prompt_ids:  # as Hearth's native loop: penalties see the prompt
            chain.accept(token)
        self.llm._init_sampler = lambda **_: chain  # Llama.generate's loop, this chain
        self.llm.reset()
        self.llm.eval(self.prompt_ids)  # prompt reading is not part of the decode figure
        self.tokens = []
        start = time.perf_counter()
        for token in self.llm.generate(self.prompt_ids, reset=True):
            self.tokens.append(token)
            if len(self.tokens) == n:
                break
        elapsed = time.perf_counter() - start
        chain.close()
        return n / elapsed


class Ours:
    """Hearth's generation core on the llama.cpp loader (native chain)."""

    def __init__(self, core: GenerationCore, prompt_ids: list[int]):
        self.core, self.prompt_ids = core, prompt_ids
        self.tokens: list[int] = []

    def run(self, n: int) -> float:
        params = SamplingParams(**SETTINGS)
        assert not self.core.models.require().unsupported_native(params)
        request = GenerationRequest(prompt_ids=self.prompt_ids, max_new_tokens=n, sampling=params)
        self.core.worker.call(self._read_prompt)
        start = time.perf_counter()
        done = self.core.generate(request)
        elapsed = time.perf_counter() - start
        assert done.usage.completion_tokens == n, done
        self.tokens = done.token_ids
        return n / elapsed

    def _read_prompt(self) -> None:
        """Read the prompt afresh in one batch, as the direct side does: prompt reading is not part of the
        decode figure, and re-reading only its last token would give logits that differ in the last bits."""
        model = self.core.models.require()
        model._slots[0].reset()
        model.logits(self.prompt_ids)


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
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-extra-buffers", action="store_true", help=without_extra_buffers.__doc__)
    args = parser.parse_args()
    if args.no_extra_buffers:
        without_extra_buffers()
    from llama_cpp import Llama

    path = build_bench_gguf(ROOT / "bench" / ".cache")
    manager = ModelManager(path.parent, collect_loaders(make_plugin_manager()))
    model = manager.load(path.name, "llama.cpp", {"n_ctx": 4096})
    core = GenerationCore(manager)
    loader = LlamaCppLoader()  # the direct Llama gets exactly the context Hearth's loader made: same logits
    direct = Llama(str(path), **loader.llama_kwargs(path, loader.resolve_params({"n_ctx": 4096})))
    prompt_ids = model.tokenize("Once upon a time there was a little village by the sea")
    print(f"model: {path.name} ({path.stat().st_size / 2**20:.0f} MiB), {model.info.parameters / 1e6:.0f}M parameters, vocab {model.vocab_size}")

    ours, theirs = Ours(core, prompt_ids), Direct(direct, model, prompt_ids)
    # Direct calls run on the core's model thread too: llama.cpp keeps an OpenMP team per calling
    # thread, and two teams on 2 cores would slow whichever runs second.
    speeds = interleaved({"direct": lambda: core.worker.call(lambda: theirs.run(args.tokens)),
                          "hearth": lambda: ours.run(args.tokens)}, args.rounds)
    assert ours.tokens == theirs.tokens, f"the two sides did not do the same work:\n{ours.tokens}\n{theirs.tokens}"
    print(report(f"decode, {args.tokens} tokens x {args.rounds} rounds, settings {SETTINGS} (same tokens on both sides)",
                 ("Hearth llama.cpp", speeds["hearth"]), ("llama-cpp-python direct", speeds["direct"]), 0.98))

    words = "The dragon guarded a library of ancient books, and every night the fishermen told stories. "
    history = "User: " + words * 110 + "\nAssistant:"
    first_ttft, first = time_to_first_token(core, history)
    second_ttft, second = time_to_first_token(core, history + first.text + "\nUser: And then what happened?\nAssistant:")
    print(f"chat of {first.usage.prompt_tokens} prompt tokens: first-turn time to first token {first_ttft * 1000:.0f} ms, "
          f"second turn {second_ttft * 1000:.0f} ms, ratio {second_ttft / first_ttft:.3f} (prefix cache reuse)")
    manager.unload()


if __name__ == "__main__":
    main()
