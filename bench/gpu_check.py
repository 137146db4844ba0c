"""Hearth's CUDA paths on one NVIDIA GPU: greedy parity, decode speed against each library, VRAM against
Hearth's estimate, and n_gpu_layers auto; one summary table at the end. Run through bench/gpu_check.sh (it
installs the CUDA builds first); `--skip NAME` leaves out a library whose install failed.

Models (random weights, built here, cached in bench/.cache/gpu/): the tiny test Llama and the ~0.25B
benchmark shape (tests/model_factory.py), as GGUF for llama.cpp and as HF folders converted to EXL2 and EXL3
by exllamav2's and exllamav3's own converters.

- parity: the native loader and its _HF twin generate the same greedy tokens (llama.cpp with every layer on
  the GPU, ExLlamaV2, ExLlamaV3);
- speed: decode tokens/s of Hearth (native path, goal >= 0.98; _HF pipeline, goal >= 0.95) against the library
  called directly doing the same work (same prompt, greedy, EOS banned, the same tokens checked), rounds
  alternated, min / median / max of the per-round ratio;
- VRAM: measured after load and a generation (torch for ExLlama, nvidia-smi for llama.cpp) against
  webui.memory_estimate (goal within 10%);
- n_gpu_layers auto: for budgets below the whole model, the layers max_gpu_layers picks, loaded, never use
  more VRAM than the budget;
- parallel slots: 4 requests at once on the llama.cpp loader with parallel 4 (every layer on the GPU)
  against one at a time: aggregate decode tokens/s (goal >= 2x: decoding is memory-bound on a GPU, so a
  batch of 4 costs little more than one token) and the same greedy tokens as alone.
Every step is time-boxed; a failure is a row of the table, and the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import interleaved  # noqa: E402
from tests.model_factory import TinyConfig, build_bench_gguf, build_bench_hf, build_pair  # noqa: E402
from webui import memory_estimate  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "gpu"
GREEDY = SamplingParams(do_sample=False, ban_eos_token=True)
PROMPT = "Once upon a time there was a little village by the sea"
CTX = 2048
ROWS: list[tuple[str, str, str, str]] = []  # check, result, goal, verdict


class StepTimeout(Exception):
    pass


def step(name: str, seconds: int, deadline: float, body: Callable[[], object]) -> bool:
    """Run `body` with an alarm at min(seconds, what is left); a failure or a timeout becomes a table row."""
    left = int(deadline - time.monotonic())
    if left < 10:
        ROWS.append((name, "not run: out of time", "", "SKIP"))
        return False

    def alarm(*_: object) -> None:
        raise StepTimeout(f"over {min(seconds, left)} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, min(seconds, left)))
    try:
        body()
        return True
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the table, the run goes on
        ROWS.append((name, f"{type(exc).__name__}: {str(exc)[:90]}", "", "FAIL"))
        traceback.print_exc()
        return False
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        free_gpu()


def free_gpu() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def spread(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def vram_used_mib() -> int:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return int(out.stdout.split()[0])


def convert(kind: str, source: Path, seconds: int) -> Path:
    """EXL2 / EXL3 with the library's own converter, cached next to the source folder."""
    out = source.parent / f"{source.name}-{kind}"
    if (out / "config.json").is_file():
        return out
    work = source.parent / f"work-{source.name}-{kind}"
    if kind == "exl2":
        cmd = [
            sys.executable,
            "-m",
            "exllamav2.conversion.convert_exl2",
            "-i",
            str(source),
            "-o",
            str(work),
            "-cf",
            str(out),
            "-b",
            "6.0",
            "-hb",
            "8",
            "-l",
            "256",
            "-ml",
            "256",
            "-r",
            "4",
            "-mr",
            "2",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "exllamav3.conversion.convert_model",
            "-i",
            str(source),
            "-o",
            str(out),
            "-w",
            str(work),
            "-b",
            "4.0",
            "-hb",
            "6",
            "-cr",
            "8",
            "-cc",
            "256",
        ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds)
    if result.returncode or not (out / "config.json").is_file():
        raise RuntimeError(f"{kind} conversion failed: {(result.stdout + result.stderr)[-400:]}")
    return out


def hearth_tokens(loaders: dict, path: Path, loader: str, params: dict, n: int) -> list[int]:
    manager = ModelManager(path.parent, loaders)
    manager.load(path.name, loader=loader, params=params)
    try:
        return (
            GenerationCore(manager)
            .generate(GenerationRequest(prompt=PROMPT, max_new_tokens=n, sampling=GREEDY))
            .token_ids
        )
    finally:
        manager.unload()


def check_parity(loaders: dict, label: str, path: Path, pair: tuple[str, str], params: dict) -> None:
    native, hf = (hearth_tokens(loaders, path, name, params, 32) for name in pair)
    same = native == hf and len(native) == 32
    ROWS.append(
        (
            f"parity {label}: {pair[0]} vs {pair[1]}",
            "same 32 tokens" if same else f"differ: {native[:8]} / {hf[:8]}",
            "equal",
            "PASS" if same else "FAIL",
        )
    )


class HearthSide:
    """Hearth's core on a loaded model: decode tokens/s of one request, the prompt read beforehand."""

    def __init__(self, manager: ModelManager, prompt_ids: list[int]) -> None:
        self.core, self.prompt_ids, self.tokens = GenerationCore(manager), prompt_ids, []

    def run(self, n: int) -> float:
        model = self.core.models.require()
        self.core.worker.call(
            lambda: (model.logits([0]), model.logits(self.prompt_ids))
        )  # prompt read, not timed
        start = time.perf_counter()
        done = self.core.generate(
            GenerationRequest(prompt_ids=self.prompt_ids, max_new_tokens=n, sampling=GREEDY)
        )
        elapsed = time.perf_counter() - start
        self.tokens = done.token_ids
        return len(done.token_ids) / elapsed


def direct_llamacpp(
    path: Path, params: dict, model, prompt_ids: list[int]
) -> Callable[[int], tuple[float, list[int]]]:
    """llama-cpp-python's own Llama.generate with the chain Hearth builds for GREEDY (as bench_llamacpp.py)."""
    from llama_cpp import Llama

    from loaders import llamacpp_sampling
    from loaders.llamacpp import LlamaCppLoader

    loader = LlamaCppLoader()
    llm = Llama(str(path), **loader.llama_kwargs(path, loader.resolve_params(params)))

    def run(n: int) -> tuple[float, list[int]]:
        chain = llamacpp_sampling.build_chain(
            GREEDY,
            model=llm._model,
            n_vocab=llm.n_vocab(),
            n_ctx=llm.n_ctx(),
            eos_ids=model.eos_token_ids,
            seed=0,
        )
        for token in prompt_ids:
            chain.accept(token)
        llm._init_sampler = lambda **_: chain
        llm.reset()
        llm.eval(prompt_ids)
        tokens, start = [], time.perf_counter()
        for token in llm.generate(prompt_ids, reset=True):
            tokens.append(token)
            if len(tokens) == n:
                break
        elapsed = time.perf_counter() - start
        chain.close()
        return n / elapsed, tokens

    return run


def direct_exllamav2(
    path: Path, eos: frozenset[int], prompt_ids: list[int]
) -> Callable[[int], tuple[float, list[int]]]:
    """ExLlamaV2.forward in a loop on its own cache, argmax with EOS banned, on the GPU."""
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

    config = ExLlamaV2Config(str(path))
    config.max_seq_len = CTX
    model = ExLlamaV2(config)
    model.load()
    cache = ExLlamaV2Cache(model)
    vocab = config.vocab_size

    def run(n: int) -> tuple[float, list[int]]:
        with torch.inference_mode():
            cache.current_seq_len = 0
            model.forward(torch.tensor([prompt_ids[:-1]]), cache, preprocess_only=True)
            last, tokens = torch.tensor([prompt_ids[-1:]]), []
            start = time.perf_counter()
            for _ in range(n):
                logits = model.forward(last, cache)[0, -1, :vocab].float()
                logits[list(eos)] = float("-inf")
                token = int(logits.argmax())
                tokens.append(token)
                last = torch.tensor([[token]])
            return n / (time.perf_counter() - start), tokens

    return run


def direct_exllamav3(
    path: Path, eos: frozenset[int], prompt_ids: list[int]
) -> Callable[[int], tuple[float, list[int]]]:
    """exllamav3 Model.prefill / forward in a loop on its own cache (exllamav3/model/model.py), argmax, EOS banned."""
    import torch
    from exllamav3 import Cache, Config, Model

    config = Config.from_directory(str(path))
    model = Model.from_config(config)
    cache = Cache(model, max_num_tokens=CTX)
    model.load(device="cuda:0", progressbar=False)
    vocab = config.vocab_size

    def params(past: int) -> dict:
        return {"attn_mode": "flash_attn", "cache": cache, "batch_shape": (1, CTX), "past_len": past}

    def run(n: int) -> tuple[float, list[int]]:
        model.prefill(torch.tensor([prompt_ids[:-1]]), params(0))
        last, pos, tokens = prompt_ids[-1], len(prompt_ids) - 1, []
        start = time.perf_counter()
        for _ in range(n):
            logits = model.forward(torch.tensor([[last]]), params(pos))[0, -1, :vocab].float()
            logits[list(eos)] = float("-inf")
            last, pos = int(logits.argmax()), pos + 1
            tokens.append(last)
        return n / (time.perf_counter() - start), tokens

    return run


def check_speed(
    loaders: dict,
    label: str,
    path: Path,
    loader: str,
    params: dict,
    goal: float,
    direct_factory: Callable,
    tokens: int,
    rounds: int,
) -> None:
    manager = ModelManager(path.parent, loaders)
    model = manager.load(path.name, loader=loader, params=params)
    try:
        prompt_ids = model.tokenize(PROMPT)
        ours = HearthSide(manager, prompt_ids)
        direct = direct_factory(model, prompt_ids)
        theirs: list[list[int]] = []

        def direct_side() -> float:
            speed, got = ours.core.worker.call(lambda: direct(tokens))
            theirs.append(got)
            return speed

        speeds = interleaved({"direct": direct_side, "hearth": lambda: ours.run(tokens)}, rounds)
        ratios = [a / b for a, b in zip(speeds["hearth"], speeds["direct"], strict=True)]
        same = ours.tokens == theirs[-1]
        verdict = "PASS" if same and statistics.median(ratios) >= goal else "FAIL"
        ROWS.append(
            (
                f"speed {label}: {loader} vs direct",
                f"{statistics.median(speeds['hearth']):.0f} vs "
                f"{statistics.median(speeds['direct']):.0f} tok/s, ratio {spread(ratios)}"
                + ("" if same else ", tokens differ"),
                f">= {goal}",
                verdict,
            )
        )
    finally:
        manager.unload()


def check_parallel(loaders: dict, path: Path, params: dict, tokens: int, rounds: int) -> None:
    """Aggregate tokens/s of 4 requests decoded together (parallel 4) against 4 run one after another."""
    import threading

    prompts = [f"{PROMPT} {i}" for i in range(4)]
    manager = ModelManager(path.parent, loaders)
    core = GenerationCore(manager)

    def request(prompt: str) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, max_new_tokens=tokens, sampling=GREEDY)

    results: dict[str, list[list[int]]] = {}

    def one_at_a_time() -> float:
        start = time.perf_counter()
        results["alone"] = [core.generate(request(p)).token_ids for p in prompts]
        return 4 * tokens / (time.perf_counter() - start)

    def together() -> float:
        out: list[list[int]] = [[] for _ in prompts]

        def run(i: int) -> None:
            out[i] = core.generate(request(prompts[i])).token_ids

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results["together"] = out
        return 4 * tokens / (time.perf_counter() - start)

    try:
        manager.load(path.name, loader="llama.cpp", params={**params, "parallel": 4})  # one lane at a time also
        speeds = interleaved({"alone": one_at_a_time, "together": together}, rounds)  # runs in a slot
        ratios = [a / b for a, b in zip(speeds["together"], speeds["alone"], strict=True)]
        same = results["alone"] == results["together"]
        ROWS.append((
            "parallel 4 vs one at a time (llama.cpp)",
            f"{statistics.median(speeds['together']):.0f} vs {statistics.median(speeds['alone']):.0f} tok/s, "
            f"ratio {spread(ratios)}" + ("" if same else ", tokens differ"),
            ">= 2",
            "PASS" if same and statistics.median(ratios) >= 2 else "FAIL",
        ))
    finally:
        core.close()
        manager.unload()


BASELINE_MIB: list[int] = []  # GPU 0's used memory before this process touched CUDA


def measured_vram(loaders: dict, path: Path, loader: str, params: dict) -> int:
    """Bytes this process holds on GPU 0 after load + one generation (nvidia-smi, against the baseline taken
    before CUDA started: the CUDA context counts, as in the estimate's CUDA_RESERVE)."""
    manager = ModelManager(path.parent, loaders)
    manager.load(path.name, loader=loader, params=params)
    try:
        GenerationCore(manager).generate(GenerationRequest(prompt=PROMPT, max_new_tokens=16, sampling=GREEDY))
        return (vram_used_mib() - BASELINE_MIB[0]) << 20
    finally:
        manager.unload()


def check_vram(loaders: dict, label: str, path: Path, loader: str, params: dict) -> None:
    estimate = memory_estimate.estimate(path, loader, params).vram
    used = measured_vram(loaders, path, loader, params)
    error = (estimate - used) / used
    ROWS.append(
        (
            f"VRAM {label}: {loader}",
            f"measured {used / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB ({error:+.1%})",
            "within 10%",
            "PASS" if abs(error) <= 0.10 else "FAIL",
        )
    )


def check_auto_layers(loaders: dict, path: Path) -> None:
    """Budgets of 1/4 and 1/2 of the full estimate: max_gpu_layers' choice, loaded, stays inside the budget."""
    full = memory_estimate.estimate(path, "llama.cpp", {"n_ctx": CTX, "n_gpu_layers": -1}).vram
    results, ok = [], True
    for share in (0.25, 0.5):
        budget = int(full * share)
        layers = memory_estimate.max_gpu_layers(path, {"n_ctx": CTX}, budget)
        before = vram_used_mib()
        manager = ModelManager(path.parent, loaders)
        manager.load(path.name, loader="llama.cpp", params={"n_ctx": CTX, "n_gpu_layers": layers})
        used = (vram_used_mib() - before) << 20
        manager.unload()
        ok &= used <= budget
        results.append(f"{share:.0%}: {layers} layers, {used / 2**20:.0f}/{budget / 2**20:.0f} MiB")
    ROWS.append(
        (
            "n_gpu_layers auto never over-commits",
            "; ".join(results),
            "used <= budget",
            "PASS" if ok else "FAIL",
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=540, help="seconds for everything")
    parser.add_argument("--skip", action="append", default=[], help="llama-cpp-cuda, exllamav2 or exllamav3")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    import torch

    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        print(
            "gpu_check: no NVIDIA GPU here (no nvidia-smi, or PyTorch sees no CUDA device: a CPU-only build?); "
            "nothing to check",
            file=sys.stderr,
        )
        return 2
    BASELINE_MIB.append(vram_used_mib())  # before this process creates a CUDA context
    pm = make_plugin_manager()
    import loaders.exllamav3 as exl3_module  # registered here until webui.plugins lists it

    if not pm.is_registered(exl3_module):
        pm.register(exl3_module, name="loaders.exllamav3")
    loaders = collect_loaders(pm)
    models: dict[str, Path] = {}

    def build() -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        if not (CACHE / "tiny-llama.gguf").exists():
            build_pair(CACHE)
        models.update(
            tiny_hf=CACHE / "tiny-llama", tiny_gguf=CACHE / "tiny-llama.gguf", bench_hf=build_bench_hf(CACHE)
        )
        # exllamav3's quantizer needs every linear's width a multiple of 128 (exl3_lib/quantize.py)
        models["tiny_hf_128"] = CACHE / "tiny-llama-128"
        if not (models["tiny_hf_128"] / "config.json").is_file():
            build_pair(CACHE / "w128", TinyConfig(hidden=256, heads=4, kv_heads=2, intermediate=512))
            (CACHE / "w128" / "tiny-llama").rename(models["tiny_hf_128"])
        if "llama-cpp-cuda" not in args.skip:
            models["bench_gguf"] = build_bench_gguf(CACHE)

    try:
        if step("build models", 150, deadline, build):
            for label, skip in (
                ("llama.cpp", "llama-cpp-cuda"),
                ("ExLlamaV2", "exllamav2"),
                ("ExLlamaV3", "exllamav3"),
            ):
                if skip in args.skip:
                    ROWS.append((f"{label} checks", f"skipped: {skip} did not install", "", "SKIP"))
                else:
                    run_library(label, loaders, models, args, deadline)
    finally:
        print_table()
    return 1 if any(verdict == "FAIL" for *_, verdict in ROWS) else 0


def run_library(
    label: str, loaders: dict, models: dict[str, Path], args: argparse.Namespace, deadline: float
) -> None:
    """VRAM first (nothing else loaded), then parity, then speed against the library called directly."""
    if label == "llama.cpp":
        params, path = {"n_ctx": CTX, "n_gpu_layers": -1}, models["bench_gguf"]
        step(
            "VRAM llama.cpp",
            60,
            deadline,
            lambda: check_vram(loaders, "bench GGUF", path, "llama.cpp", params),
        )
        step("n_gpu_layers auto", 90, deadline, lambda: check_auto_layers(loaders, path))
        step("parallel llama.cpp", 90, deadline,
             lambda: check_parallel(loaders, path, params, args.tokens, max(3, args.rounds // 2)))
        step(
            "parity llama.cpp",
            60,
            deadline,
            lambda: check_parity(
                loaders, "tiny GGUF", models["tiny_gguf"], ("llama.cpp", "llamacpp_HF"), params
            ),
        )
        for loader, goal in (("llama.cpp", 0.98), ("llamacpp_HF", 0.95)):
            step(
                f"speed {loader}",
                90,
                deadline,
                lambda loader=loader, goal=goal: check_speed(
                    loaders,
                    "bench GGUF",
                    path,
                    loader,
                    params,
                    goal,
                    lambda m, ids: direct_llamacpp(path, params, m, ids),
                    args.tokens,
                    args.rounds,
                ),
            )
        return
    kind, prefix = ("exl2", "ExLlamav2") if label == "ExLlamaV2" else ("exl3", "ExLlamav3")
    direct = direct_exllamav2 if kind == "exl2" else direct_exllamav3
    params = {"max_seq_len": CTX}
    converted: dict[str, Path] = {}

    def convert_both() -> None:
        converted["tiny"] = convert(kind, models["tiny_hf" if kind == "exl2" else "tiny_hf_128"], 100)
        converted["bench"] = convert(kind, models["bench_hf"], 180)

    if not step(f"convert {kind}", 240, deadline, convert_both):
        return
    bench = converted["bench"]
    if kind == "exl3":
        step("VRAM ExLlamav3", 60, deadline, lambda: check_vram(loaders, "bench EXL3", bench, prefix, params))
    else:
        ROWS.append(("VRAM ExLlamav2", "webui.memory_estimate has no EXL2 estimate", "", "SKIP"))
    step(
        f"parity {label}",
        60,
        deadline,
        lambda: check_parity(
            loaders, f"tiny {kind.upper()}", converted["tiny"], (prefix, f"{prefix}_HF"), params
        ),
    )
    for loader, goal in ((prefix, 0.98), (f"{prefix}_HF", 0.95)):
        step(
            f"speed {loader}",
            90,
            deadline,
            lambda loader=loader, goal=goal: check_speed(
                loaders,
                f"bench {kind.upper()}",
                bench,
                loader,
                params,
                goal,
                lambda m, ids: direct(bench, m.eos_token_ids, ids),
                args.tokens,
                args.rounds,
            ),
        )


def print_table() -> None:
    widths = [max(len(row[i]) for row in [("check", "result", "goal", "verdict"), *ROWS]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print("\n" + line)
    for row in [("check", "result", "goal", "verdict"), *ROWS]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(line)


if __name__ == "__main__":
    sys.exit(main())
