"""Perplexity evaluation speed through Hearth (webui.evaluation) vs a direct batched computation.

Run: .venv/bin/python bench/bench_perplexity.py [--rounds 3] [--tokens 2048] [--max-length 512] [--stride 256]
     [--backend llama.cpp|Transformers|both] [--no-extra-buffers]
Builds (once, cached in bench/.cache/) the ~0.25B-parameter random benchmark models of tests/model_factory.py:
a Q8_0 GGUF and an F32 Hugging Face folder, both with a 32k vocabulary. Figures are scored tokens per second
over the same sliding windows of the same text, as min / median / max over rounds whose first side
alternates; the goal is a ratio >= 0.8.

Equal work: the direct side is llama-cpp-python's `Llama(logits_all=True)` evaluating each window from an
empty cache (its `scores` hold every position's logits), or one torch forward of each window for the
Transformers folder, followed by the same log-softmax and sum; both sides must report the same perplexity,
which the bench checks before it prints a figure. Every model call runs on the core's model thread, as in
the app (one OpenMP team for llama.cpp; see bench_llamacpp.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.interleave import interleaved, report, without_extra_buffers  # noqa: E402
from loaders.llamacpp import LlamaCppLoader  # noqa: E402
from tests.model_factory import CORPUS, build_bench_gguf, build_bench_hf  # noqa: E402
from webui.evaluation import EvaluationRequest, Evaluator  # noqa: E402
from webui.evaluation.perplexity import Window, sliding_windows  # noqa: E402
from webui.generation import GenerationCore  # noqa: E402
from webui.jobs import Job, JobContext  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402

N_CTX = 2048


def window_nll(logits: torch.Tensor, ids: list[int], window: Window) -> float:
    start = window.first_target - 1 - window.begin
    rows = torch.log_softmax(logits[start : start + window.targets].float(), dim=-1)
    targets = torch.tensor(ids[window.first_target : window.end])
    return -float(rows.gather(1, targets[:, None]).double().sum())


class Hearth:
    """The evaluation as the tab runs it (the model is already loaded: no load in the figure)."""

    def __init__(
        self, manager: ModelManager, core: GenerationCore, user_data: Path, request: EvaluationRequest
    ):
        self.evaluator = Evaluator(manager, core.worker, user_data)
        self.request = request
        self.perplexity = math.nan

    def run(self) -> float:
        ctx = JobContext(Job("bench", lambda _: None))
        start = time.perf_counter()
        result = self.evaluator.run(self.request, ctx).results[0]
        seconds = time.perf_counter() - start
        self.perplexity = result.perplexity
        return result.tokens / seconds


class Direct:
    """Each window through the engine directly, all positions' logits, then the same sum."""

    def __init__(self, core: GenerationCore, forward, ids: list[int], windows: list[Window]):
        self.core, self.forward, self.ids, self.windows = core, forward, ids, windows
        self.perplexity = math.nan

    def run(self) -> float:
        def work() -> tuple[float, int]:
            nll, tokens = 0.0, 0
            for w in self.windows:
                nll += window_nll(self.forward(self.ids[w.begin : w.end]), self.ids, w)
                tokens += w.targets
            return nll, tokens

        start = time.perf_counter()
        nll, tokens = self.core.worker.call(work)
        seconds = time.perf_counter() - start
        self.perplexity = math.exp(nll / tokens)
        return tokens / seconds


def llama_forward(path: Path):
    from llama_cpp import Llama

    loader = LlamaCppLoader()  # the direct Llama gets exactly the context Hearth's loader makes
    llm = Llama(
        str(path),
        logits_all=True,
        **LlamaCppLoader.llama_kwargs(path, loader.resolve_params({"n_ctx": N_CTX})),
    )

    def forward(ids: list[int]) -> torch.Tensor:
        llm.reset()
        llm.eval(ids)
        return torch.from_numpy(llm.scores[: len(ids)])

    return forward


def torch_forward(path: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def forward(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.tensor([ids])).logits[0]

    return forward


def bench(backend: str, args: argparse.Namespace) -> None:
    cache = ROOT / "bench" / ".cache"
    path = build_bench_gguf(cache) if backend == "llama.cpp" else build_bench_hf(cache)
    user_data = Path(tempfile.mkdtemp(prefix="hearth-bench-ppl-"))
    manager = ModelManager(path.parent, collect_loaders(make_plugin_manager()))
    core = GenerationCore(manager)
    params = {"n_ctx": N_CTX} if backend == "llama.cpp" else {}
    model = manager.load(path.name, backend, params)
    text = CORPUS * 40
    ids = model.tokenize(text)[: args.tokens]
    text = model.detokenize(ids[1:])
    ids = model.tokenize(text)  # a text of about --tokens tokens that tokenizes to `ids` exactly
    (user_data / "training" / "datasets").mkdir(parents=True)
    (user_data / "training" / "datasets" / "bench.txt").write_text(text, encoding="utf-8")
    request = EvaluationRequest((path.name,), "bench.txt", args.stride, args.max_length)
    windows = sliding_windows(len(ids), args.stride, args.max_length)
    forward = llama_forward(path) if backend == "llama.cpp" else torch_forward(path)
    ours, theirs = Hearth(manager, core, user_data, request), Direct(core, forward, ids, windows)
    print(
        f"{backend}: {path.name}, {model.info.parameters or 0:.3g} parameters, vocab {model.vocab_size}; "
        f"{len(ids)} tokens, {len(windows)} windows of {args.max_length}, stride {args.stride}",
        flush=True,
    )
    speeds = interleaved({"direct": theirs.run, "hearth": ours.run}, args.rounds)
    relative = abs(ours.perplexity - theirs.perplexity) / theirs.perplexity
    assert relative < 1e-3, (
        f"the two sides did not do the same work: {ours.perplexity} vs {theirs.perplexity}"
    )
    print(
        report(
            f"perplexity evaluation, {backend}, {args.rounds} rounds (perplexity {ours.perplexity:.4f} on both "
            f"sides, relative difference {relative:.1e})",
            (f"Hearth {backend}", speeds["hearth"]),
            (f"{backend} direct", speeds["direct"]),
            0.8,
        ),
        flush=True,
    )
    manager.unload()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2048, help="Length of the evaluated text in tokens.")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--backend", choices=("llama.cpp", "Transformers", "both"), default="both")
    parser.add_argument("--no-extra-buffers", action="store_true", help=without_extra_buffers.__doc__)
    args = parser.parse_args()
    if args.no_extra_buffers:
        without_extra_buffers()
    for backend in ("llama.cpp", "Transformers") if args.backend == "both" else (args.backend,):
        bench(backend, args)


if __name__ == "__main__":
    main()
