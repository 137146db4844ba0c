"""Per-token cost of a JSON-schema constraint in three constrained-decoding libraries: llguidance,
xgrammar and outlines-core, at a 32k and a 152k vocabulary. This is the measurement that chose the
library of `webui/sampling/constraints.py`.

Run: .venv/bin/python bench/bench_constrained_mask.py [--rounds 5] [--vocab 32000 152000]
(pip install llguidance xgrammar outlines-core; a library that is not installed is skipped.)

Tokenizers are built here, no download: a byte-level BPE trained on the Python standard library's
source text (the local interpreter's), padded with token pairs when the text runs out of merges, then
cached in bench/.cache. Every library gets the same token bytes, the same schema and the same token
sequence (a valid instance of the schema, tokenized by the BPE), and does the same work per token: fill
the next-token bitmask, then advance by the token. Figures per library: the tokenizer's one-off build,
the per-request grammar build (compile + matcher), and the per-token step (mask + advance) as
min / median / max. Rounds run the libraries in turn, the order alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import interleaved, spread  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
SPECIALS = ["<unk>", "<s>", "</s>"]
EOS = 2
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "city": {"type": "string"},
                "zip": {"type": "string"},
            },
            "required": ["street", "city"],
        },
        "score": {"type": "number"},
    },
    "required": ["name", "age", "role", "tags", "address"],
}
INSTANCE = {
    "name": "Ada Lovelace, first programmer of the Analytical Engine",
    "age": 36,
    "role": "editor",
    "tags": ["mathematics", "poetry of science", "notes on the engine", "Bernoulli numbers"],
    "address": {"street": "St James's Square, number twelve", "city": "London", "zip": "SW1Y 4JH"},
    "score": 99.5,
}


def _corpus(limit: int = 24 << 20) -> list[str]:
    """Up to `limit` characters of the standard library's own source files (sorted, so stable)."""
    texts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        size += len(text)
        if size >= limit:
            break
    return texts


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


class BenchTokenizer:
    """A trained byte-level BPE with `size` tokens; its token bytes, padded to size with token pairs."""

    def __init__(self, size: int):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        path = CACHE / f"bpe-{size}.json"
        if path.is_file():
            self.bpe = Tokenizer.from_file(str(path))
        else:
            bpe = Tokenizer(models.BPE())
            bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            bpe.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=size,
                special_tokens=SPECIALS,
                show_progress=False,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            )
            bpe.train_from_iterator(_corpus(), trainer=trainer)
            CACHE.mkdir(parents=True, exist_ok=True)
            bpe.save(str(path))
            self.bpe = bpe
        decoder = _byte_decoder()
        trained = {i: t for t, i in self.bpe.get_vocab().items()}
        tokens = [
            t.encode() if t in SPECIALS else bytes(decoder[c] for c in t) for _, t in sorted(trained.items())
        ]
        seen, words = set(tokens), tokens[len(SPECIALS) :]
        pairs = (a + b for a in words[256:] for b in words[256:])  # padding: plausible multi-piece tokens
        while len(tokens) < size:
            candidate = next(pairs)
            if candidate not in seen:
                seen.add(candidate)
                tokens.append(candidate)
        self.tokens: list[bytes] = tokens
        self.trained = len(trained)

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids


# -- one adapter per library: build(tokenizer) once; then per request grammar(schema) -> stepper --------------
Step = Callable[[int], None]


class Library:
    name: str

    def __init__(self, tok: BenchTokenizer):
        self.size = len(tok.tokens)
        self.mask = torch.zeros((1, (self.size + 31) // 32), dtype=torch.int32)

    def matcher(self, schema: str) -> Step: ...


class LLGuidance(Library):
    name = "llguidance"

    def __init__(self, tok: BenchTokenizer):
        import llguidance

        super().__init__(tok)

        class Wrapped:
            eos_token_id, bos_token_id, special_token_ids = EOS, 1, [0, 1, 2]
            tokens = [b"\xff" + t if i < len(SPECIALS) else t for i, t in enumerate(tok.tokens)]

            def __call__(self, data: bytes) -> list[int]:
                return tok.encode(data.decode("utf-8", errors="replace"))

        self.llg = llguidance
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(Wrapped()))

    def matcher(self, schema: str) -> Step:
        m = self.llg.LLMatcher(
            self.tokenizer, self.llg.LLMatcher.grammar_from_json_schema(schema), log_level=0
        )
        assert not m.is_error(), m.get_error()
        ptr, nbytes = self.mask.data_ptr(), self.mask.numel() * 4

        def step(token: int) -> None:
            m.unsafe_compute_mask_ptr(ptr, nbytes)
            assert m.consume_token(token), m.get_error()

        return step


class XGrammar(Library):
    name = "xgrammar"

    def __init__(self, tok: BenchTokenizer):
        import xgrammar

        super().__init__(tok)
        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo(
            tok.tokens, xgrammar.VocabType.RAW, vocab_size=self.size, stop_token_ids=[EOS]
        )
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def matcher(self, schema: str) -> Step:
        m = self.xgr.GrammarMatcher(self.compiler.compile_json_schema(schema))
        mask = self.mask

        def step(token: int) -> None:
            m.fill_next_token_bitmask(mask)
            assert m.accept_token(token)

        return step


class OutlinesCore(Library):
    name = "outlines-core"

    def __init__(self, tok: BenchTokenizer):
        import outlines_core

        super().__init__(tok)
        self.oc = outlines_core
        pieces: dict[bytes, list[int]] = {}
        for i, t in enumerate(tok.tokens[len(SPECIALS) :], len(SPECIALS)):
            pieces.setdefault(t, []).append(i)
        self.vocabulary = outlines_core.Vocabulary(EOS, pieces)

    def matcher(self, schema: str) -> Step:
        index = self.oc.Index(self.oc.json_schema.build_regex_from_schema(schema), self.vocabulary)
        guide = self.oc.Guide(index)
        mask = self.mask

        def step(token: int) -> None:
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            guide.advance(token)

        return step


LIBRARIES: tuple[type[Library], ...] = (LLGuidance, XGrammar, OutlinesCore)


def _installed(cls: type[Library]) -> bool:
    module = {"llguidance": "llguidance", "xgrammar": "xgrammar", "outlines-core": "outlines_core"}[cls.name]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def bench_vocab(size: int, rounds: int) -> None:
    start = time.perf_counter()
    tok = BenchTokenizer(size)
    print(
        f"\n== vocabulary {size} ({tok.trained} trained BPE tokens + {size - tok.trained} pairs; "
        f"tokenizer ready in {time.perf_counter() - start:.1f} s)"
    )
    text = json.dumps(INSTANCE)
    ids = tok.encode(text)
    schema = json.dumps(SCHEMA)
    libs, setup = {}, {}
    for cls in LIBRARIES:
        if not _installed(cls):
            print(f"  {cls.name}: not installed, skipped")
            continue
        t0 = time.perf_counter()
        libs[cls.name] = cls(tok)
        setup[cls.name] = time.perf_counter() - t0
    builds: dict[str, list[float]] = {name: [] for name in libs}
    steps: dict[str, list[float]] = {name: [] for name in libs}

    def run(name: str) -> float:
        t0 = time.perf_counter()
        step = libs[name].matcher(schema)
        builds[name].append((time.perf_counter() - t0) * 1e3)
        total = 0.0
        for token in ids:
            t1 = time.perf_counter()
            step(token)
            took = time.perf_counter() - t1
            steps[name].append(took * 1e3)
            total += took
        return total

    interleaved({name: (lambda name=name: run(name)) for name in libs}, rounds)
    print(f"  schema instance: {len(text)} chars, {len(ids)} tokens; {rounds} rounds, order alternating")
    for name in libs:
        per = steps[name]
        print(
            f"  {name:14s} tokenizer {setup[name]:7.2f} s | grammar build (ms) {spread(builds[name])} | "
            f"per token (ms) {spread(per, 3)}  (mean {statistics.fmean(per):.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 152000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for size in args.vocab:
        bench_vocab(size, args.rounds)


if __name__ == "__main__":
    main()
