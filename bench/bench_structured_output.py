"""Decode speed with a JSON schema vs without, same model, same run: on the native llama.cpp path (llama.cpp's
sampler chain, the schema masked by llguidance) and on Hearth's pipeline (llamacpp_HF on the same GGUF, the
schema masked by llguidance). The native path also runs the schema as GBNF through llama.cpp's own grammar
sampler (llama-cpp-python's converter), the figure that made the schema go to llguidance natively.

Run: .venv/bin/python bench/bench_structured_output.py [--tokens 256] [--rounds 7] [--vocab 32000]
     [--no-extra-buffers]
The model is the benchmarks' ~0.25B-parameter random Q8_0 GGUF shape (tests/model_factory.BENCH_CONFIG),
but with a real vocabulary: the byte-level BPE that bench_constrained_mask.py trains on the Python standard
library (32k tokens), so the grammar meets the variety of a real vocabulary, not thousands of padding
tokens. Cached in bench/.cache/structured-<vocab>/.

Equal work: every side of a path runs the same settings and seed for the same number of tokens (EOS banned;
the schema asks for at least 32 records, more than the tokens generated, so it never ends early). Random
weights make the unconstrained pick nearly always one the grammar refuses, the worst case for a grammar.
Goal: schema / plain >= 0.90 on both paths. Each figure is min / median / max over rounds whose first side
alternates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_constrained_mask import BenchTokenizer  # noqa: E402
from bench.interleave import interleaved, report, without_extra_buffers  # noqa: E402
from tests.model_factory import BENCH_CONFIG, random_weights, write_gguf  # noqa: E402
from webui.generation import GenerationCore, GenerationRequest  # noqa: E402
from webui.model_worker import ModelWorker  # noqa: E402
from webui.models import ModelManager  # noqa: E402
from webui.plugins import collect_loaders, make_plugin_manager  # noqa: E402
from webui.sampling import SamplingParams  # noqa: E402
from webui.sampling.constraints import json_schema_grammar  # noqa: E402

SETTINGS = {"temperature": 0.8, "min_p": 0.05, "ban_eos_token": True, "seed": 5}
RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "note": {"type": "string", "maxLength": 40},
    },
    "required": ["name", "age", "role", "tags", "note"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": RECORD, "minItems": 32}
PROMPT = "Write the staff list as JSON records with name, age, role, tags and a note:"


def build_model(vocab: int) -> Path:
    """The bench GGUF with a trained `vocab`-token BPE, quantized to Q8_0 by llama.cpp (cached)."""
    import llama_cpp

    root = ROOT / "bench" / ".cache" / f"structured-{vocab}"
    out = root / "bench-Q8_0.gguf"
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    bpe = BenchTokenizer(vocab).bpe
    f32 = write_gguf(
        root / "bench-F32.gguf", BENCH_CONFIG, bpe, random_weights(BENCH_CONFIG, vocab), name="bench"
    )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), params) != 0:
        raise RuntimeError("llama.cpp failed to quantize the benchmark model")
    f32.unlink()
    return out


class Side:
    """One loader's core: decodes n tokens after the prompt, plain or with a constraint."""

    def __init__(self, core: GenerationCore):
        self.core = core
        self.prompt_ids = core.tokenize(PROMPT)

    def run(self, n: int, constraint: dict) -> float:
        params = SamplingParams(**SETTINGS, **constraint)
        self.core.worker.call(self._read_prompt)  # prompt reading is not part of the decode figure
        start = time.perf_counter()
        done = self.core.generate(
            GenerationRequest(prompt_ids=self.prompt_ids, max_new_tokens=n, sampling=params)
        )
        elapsed = time.perf_counter() - start
        assert done.usage.completion_tokens == n, (done.reason, done.usage, done.text[-200:])
        if constraint:
            assert done.text.lstrip().startswith("["), done.text[:80]
        return n / elapsed

    def _read_prompt(self) -> None:
        model = self.core.models.require()
        model._slots[0].reset()
        model.logits(self.prompt_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--no-extra-buffers", action="store_true", help=without_extra_buffers.__doc__)
    args = parser.parse_args()
    if args.no_extra_buffers:
        without_extra_buffers()
    path = build_model(args.vocab)
    loaders = collect_loaders(make_plugin_manager())
    worker = ModelWorker()  # one model thread, as in the app
    constraints = {"json_schema (llguidance)": {"json_schema": SCHEMA}, "plain": {}}
    gbnf = {
        "json_schema as GBNF (llama.cpp's grammar sampler)": {"grammar_string": json_schema_grammar(SCHEMA)}
    }
    for loader, label, runs in (
        ("llama.cpp", "native path", {**constraints, **gbnf}),
        ("llamacpp_HF", "Hearth's pipeline", constraints),
    ):
        manager = ModelManager(path.parent, loaders)
        manager.load(path.name, loader, {"n_ctx": 2048})
        side = Side(GenerationCore(manager, worker=worker))
        model = manager.require()
        if loader == "llama.cpp":  # the constraints must run natively here, not fall back to the pipeline
            assert all(not model.unsupported_native(SamplingParams(**SETTINGS, **c)) for c in runs.values())
        side.run(
            8, constraints["json_schema (llguidance)"]
        )  # warm: llguidance's view of the vocabulary is built once
        speeds = interleaved(
            {name: (lambda c=c, side=side: side.run(args.tokens, c)) for name, c in runs.items()}, args.rounds
        )
        for name in runs:
            if name != "plain":
                print(
                    report(
                        f"{label} ({loader}), vocab {args.vocab}: {args.tokens} tokens x {args.rounds} rounds",
                        (name, speeds[name]),
                        ("plain", speeds["plain"]),
                        0.90,
                    )
                )
        manager.unload()


if __name__ == "__main__":
    main()
