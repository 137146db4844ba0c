"""Structured output as a sampling stage: a GBNF grammar or a JSON schema that the reply must follow.

The grammar library is llguidance (the one llama.cpp links for its own `%llguidance` grammars), chosen by
measurement (bench/bench_constrained_mask.py, median per token at a 32k / 152k vocabulary): llguidance
0.02 / 0.02 ms with 2 ms to build a schema's grammar, xgrammar 0.04 / 0.13 ms with 12 / 33 ms to build,
outlines-core 0.6 / 2.8 ms with 0.2 / 1 s to build. JSON schemas are compiled by llguidance itself, GBNF through its Lark
conversion; nothing here parses a schema by hand.

Where it runs: Hearth's pipeline masks the scores with a `Constraint` before its sampler picks. The native
llama.cpp loop keeps llama.cpp's own grammar sampler for GBNF, and masks with the same `Constraint` for a
JSON schema or a `%llguidance` grammar, as llama.cpp does when built with llguidance: its GBNF sampler
costs ~4 ms per token at a 32k vocabulary, 30 times llguidance's. `framed_json_grammar` writes the
llguidance grammar of a forced tool call (through `grammar_string`), which both paths run;
`json_schema_grammar` is a schema as GBNF (llama-cpp-python's converter), for comparison in the bench.

The per-model part, llguidance's view of the vocabulary, costs about a second at 152k tokens: it is built
once per model (`model_tokenizer`) and shared by every request.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import torch

from webui.errors import GenerationError
from webui.input_errors import InvalidGrammar, InvalidInput, InvalidSchema

if TYPE_CHECKING:
    from webui.loader_api import Model
    from webui.sampling.params import SamplingParams
    from webui.sampling.vocabulary import Vocabulary

#: What response_format {"type": "json_object"} means: any JSON object. (An empty schema, {}, means no
#: schema at all: SillyTavern sends it for "none".)
ANY_JSON_OBJECT: Mapping[str, Any] = {"type": "object"}
#: How the pipeline lays out JSON: one line, with json.dumps' separators. Free whitespace would let a model
#: pad a reply forever; a schema's "x-guidance" options override this.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: A grammar_string in llguidance's Lark syntax starts so (llama.cpp's convention); any other is GBNF.
LLGUIDANCE_PREFIX = "%llguidance"
#: llama-cpp-python 0.3's converter lets a JSON string hold raw control characters, which JSON forbids;
#: llama.cpp's own converter (common/json-schema-to-grammar.cpp) excludes them, as this does.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


# -- grammars as text ----------------------------------------------------------------------------------
def check_json_schema(schema: Mapping[str, Any]) -> None:
    """ValueError saying why `schema` cannot constrain a reply (not a schema, or a feature llguidance
    cannot enforce); SamplingParams calls it, so a bad schema is refused where it is typed."""
    try:
        error = llguidance.LLMatcher.validate_grammar(_schema_grammar(schema))
    except (TypeError, RuntimeError, RecursionError) as exc:  # what llguidance cannot even read
        error = str(exc) or type(exc).__name__
    if error:
        raise ValueError(error)


def _schema_grammar(schema: Mapping[str, Any]) -> str:
    """llguidance's grammar for `schema` (ValueError when it is not a JSON object)."""
    return llguidance.LLMatcher.grammar_from_json_schema(dict(schema), defaults=JSON_LAYOUT)  # type: ignore[arg-type]


def _gbnf_grammar(text: str) -> str:
    """llguidance's grammar for grammar_string: GBNF, or Lark after `LLGUIDANCE_PREFIX` (InvalidGrammar when
    it does not parse)."""
    from llguidance.gbnf_to_lark import gbnf_to_lark

    try:
        lark = text if text.lstrip().startswith(LLGUIDANCE_PREFIX) else gbnf_to_lark(text)
    except Exception as exc:  # noqa: BLE001 - whatever the converter trips on, the grammar is the cause
        raise InvalidGrammar(f"grammar_string is not a valid GBNF grammar: {exc}", "grammar_string") from None
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise InvalidGrammar(f"grammar_string is not a valid grammar: {error}", "grammar_string")
    return grammar


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """GBNF (root rule `root`) for one JSON value of `schema`, by llama-cpp-python's converter.

    InvalidSchema naming json_schema when the converter cannot take the schema."""
    return _converted(json.dumps(schema), "")[0]


def framed_json_grammar(schema: Mapping[str, Any], prefix: str, suffix: str, repeat: bool = False) -> str:
    """An llguidance Lark grammar (for grammar_string) whose start is the literal `prefix`, one JSON value of
    `schema`, the literal `suffix`; one or more times in a row when `repeat`. The JSON part is llguidance's
    own `%json`, so every schema keyword holds (integer bounds, string lengths by character) on both
    paths, at llguidance's speed. A forced tool call is written by it."""
    check_json_schema(schema)
    frame = " ".join(part for part in (json.dumps(prefix) if prefix else "", "value",
                                       json.dumps(suffix) if suffix else "") if part)
    start = f"({frame})+" if repeat else frame
    return f"{LLGUIDANCE_PREFIX} {{}}\nstart: {start}\nvalue: %json {json.dumps(schema)}\n"


@functools.lru_cache(maxsize=64)
def _converted(schema_json: str, name: str) -> tuple[str, str]:
    """(GBNF rules, the rule of the schema's value), cached: an API asks again for the same tool per request."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        schema = converter.resolve_refs(json.loads(schema_json), "stdin")
        rule = converter.visit(schema, name)
    except (AssertionError, AttributeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidSchema(
            f"json_schema: llama.cpp's schema converter cannot take it: {exc}", "json_schema"
        ) from None
    return converter.format_grammar().replace(_LOOSE_CHAR, _JSON_CHAR), rule


def runs_in_llguidance(params: SamplingParams) -> bool:
    """The constraint of `params` needs llguidance (a JSON schema, a Lark grammar), even natively."""
    return params.json_schema is not None or params.grammar_string.lstrip().startswith(LLGUIDANCE_PREFIX)


# -- the model's vocabulary as llguidance sees it ------------------------------------------------------
_TOKENIZERS: weakref.WeakKeyDictionary[Vocabulary, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()


def model_tokenizer(model: Model) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for `model`, built on first use and kept with its vocabulary."""
    vocabulary = model.vocabulary
    tokenizer = _TOKENIZERS.get(vocabulary)
    if tokenizer is None:
        tokenizer = _TOKENIZERS[vocabulary] = _build_tokenizer(model)
    return tokenizer


def _build_tokenizer(model: Model) -> llguidance.LLTokenizer:
    eos = sorted(t for t in model.eos_token_ids if 0 <= t < model.vocab_size)
    hf = _hf_fast_tokenizer(model)
    if hf is not None:  # its tokenizer.json holds the exact bytes (byte-level, sentencepiece, byte fallback)
        from llguidance.hf import from_tokenizer

        return from_tokenizer(hf, n_vocab=max(model.vocab_size, len(hf)), eos_token=eos or None)
    return llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(_VocabularyTokens(model, eos)), eos_token=eos or None
    )


def _hf_fast_tokenizer(model: Model) -> Any:
    """The Hugging Face fast tokenizer of a Transformers or ExLlamaV2 model (`HFTokenized`), else None."""
    tokenizer = getattr(model, "hf_tokenizer", None)
    if tokenizer is None:
        return None
    from transformers import PreTrainedTokenizerFast

    return tokenizer if isinstance(tokenizer, PreTrainedTokenizerFast) else None


class _VocabularyTokens:
    """What llguidance.TokenizerWrapper reads, from any model: each token's bytes (`Vocabulary.texts`).

    A token whose text never reaches the reply (detokenize skips it: control tokens, EOS, BOS) is special:
    llguidance marks those with a leading 0xFF and lets a grammar reach them only by name."""

    def __init__(self, model: Model, eos: list[int]):
        texts = model.vocabulary.texts
        skipped = {*eos, model.bos_token_id}
        self.tokens = [
            b"\xff" + (text or f"<special_{i}>".encode())
            if i in skipped or model.token_bytes(i) != text
            else text
            for i, text in enumerate(texts)
        ]
        self.special_token_ids = [i for i, text in enumerate(self.tokens) if text.startswith(b"\xff")]
        if not eos:  # llguidance needs an end token: one past the logits, never picked
            self.tokens.append(b"\xff<eos>")
            eos = [len(self.tokens) - 1]
        self.eos_token_id = eos[0]
        self.bos_token_id = model.bos_token_id
        self._encode = model.vocabulary.encode

    def __call__(self, text: str | bytes) -> list[int]:
        return self._encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


# -- one request's constraint --------------------------------------------------------------------------
class Constraint:
    """One request's grammar state: masks the scores before each pick, follows each picked token, and
    rewinds with the banned-strings rollback. `complete`: the grammar is satisfied and allows nothing more."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, field: str):
        self.field = field
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._matcher.is_error():
            error = InvalidSchema if field == "json_schema" else InvalidGrammar
            raise error(f"{field}: {self._matcher.get_error()}", field)
        self._bits = torch.zeros((tokenizer.vocab_size + 31) // 32, dtype=torch.int32)

    @property
    def complete(self) -> bool:
        return self._matcher.is_stopped() and not self._matcher.is_error()

    def allowed(self, width: int) -> np.ndarray:
        """1 for every token of the first `width` that the grammar allows next, else 0 (EOS is allowed only
        where the grammar accepts the reply as it stands)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.data_ptr(), self._bits.numel() * 4)
        allowed = np.unpackbits(self._bits.numpy().view(np.uint8), bitorder="little")
        if allowed.size < width:
            return np.concatenate([allowed, np.zeros(width - allowed.size, np.uint8)])
        return allowed[:width]

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """A copy of 1-D `scores` with -inf on every token the grammar does not allow next."""
        return scores.masked_fill(torch.from_numpy(self.allowed(scores.shape[-1])) == 0, float("-inf"))

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GenerationError(
                f"{self.field}: no token the grammar allows was left to pick (token {token} was chosen; "
                f"banned strings, token bans or ban_eos_token may forbid every way on): {self._matcher.get_error()}"
            )

    def rollback(self, n_tokens: int) -> None:
        """Forget the last `n_tokens` followed tokens."""
        if n_tokens:
            self._matcher.rollback(n_tokens)


def build_constraint(model: Model, params: SamplingParams) -> Constraint | None:
    """The constraint of `params` (grammar_string or json_schema) over `model`'s vocabulary; None when
    there is none. A grammar or schema that cannot be used raises InvalidInput naming its field, before
    any token is generated."""
    if params.json_schema is not None:
        try:
            grammar, field = _schema_grammar(params.json_schema), "json_schema"
        except ValueError as exc:
            raise InvalidSchema(f"json_schema: {exc}", "json_schema") from None
    elif params.grammar_string:
        grammar, field = _gbnf_grammar(params.grammar_string), "grammar_string"
    else:
        return None
    try:
        return Constraint(model_tokenizer(model), grammar, field)
    except InvalidInput:
        raise
    except (ValueError, RuntimeError) as exc:  # llguidance refuses the vocabulary or the grammar
        raise InvalidInput(f"{field}: {exc}", field) from None
