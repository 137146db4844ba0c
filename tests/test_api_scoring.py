"""Scores compared, not just run: /v1/completions' echo logprobs against the tiny model's own logits
computed directly (torch on the Transformers folder, llama-cpp-python with every position's logits on the
GGUF), in the request shapes lm-evaluation-harness sends; prompt batches against the same prompts one by one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loaders.llamacpp import CACHE_TYPES
from tests.test_api_server import Served, assert_error, serve_api

TEXT = "Once upon a time there was a little village by the sea"
BOS, EOS = 1, 2
GREEDY = {"temperature": 0, "seed": 1234}
#: The GGUF is read with an f32 KV cache where the loader offers one: then its scores are the reference's.
GGUF_PARAMS = {"cache_type": "f32"} if "f32" in CACHE_TYPES else {}
TOLERANCE = {"tiny-llama": 1e-4, "tiny-llama.gguf": 1e-4 if GGUF_PARAMS else 5e-2}


class Reference:
    """log_softmax of the model's logits at every position of a token sequence, computed directly."""

    def __init__(self, name: str, models_dir: Path):
        self.name = name
        if name.endswith(".gguf"):
            import llama_cpp

            kv = {"type_k": 0, "type_v": 0} if GGUF_PARAMS else {}
            self._llm = llama_cpp.Llama(str(models_dir / name), n_ctx=1024, logits_all=True, verbose=False, **kv)
        else:
            import transformers

            self._hf = transformers.AutoModelForCausalLM.from_pretrained(models_dir / name, dtype="float32").eval()

    def logprobs(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab]: row i is the distribution of the token after ids[: i + 1]."""
        if self.name.endswith(".gguf"):
            self._llm.reset()
            self._llm.eval(ids)
            logits = np.array(self._llm.scores[: len(ids)], dtype=np.float64)
        else:
            import torch

            with torch.no_grad():
                logits = self._hf(torch.tensor([ids])).logits[0].double().numpy()
        logits -= logits.max(axis=-1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))

    def scores(self, ids: list[int]) -> list[float]:
        """Each of ids[1:] given the ids before it."""
        table = self.logprobs(ids)
        return [float(table[i - 1, ids[i]]) for i in range(1, len(ids))]


@pytest.fixture(scope="module", params=["tiny-llama.gguf", "tiny-llama"])
def setup(request: pytest.FixtureRequest, models_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Reference]]:
    name = request.param
    params = GGUF_PARAMS if name.endswith(".gguf") else None
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), model=name, params=params) as served:
        yield served, Reference(name, models_dir)


def complete(served: Served, **body: Any) -> dict[str, Any]:
    with served.client() as c:
        response = c.post("/v1/completions", json={**GREEDY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def encode(served: Served, text: str, add_bos: bool = True) -> list[int]:
    return served.app.models.require().tokenize(text, add_bos)


def assert_scores(got: list[float | None], want: list[float], tolerance: float) -> float:
    """Compares and returns the largest difference (printed with -s: the measured agreement)."""
    assert len(got) == len(want)
    assert all(g is not None for g in got)
    worst = max(abs(g - w) for g, w in zip(got, want, strict=True))  # type: ignore[operator]
    assert worst <= tolerance
    return worst


# -- one entry per token ----------------------------------------------------------------------------
def test_text_prompt_leaves_out_only_the_bos_hearth_added(setup: tuple[Served, Reference]):
    served, ref = setup
    ids = encode(served, TEXT)  # Hearth adds BOS: it gets no entry, every text token does
    lp = complete(served, prompt=TEXT, echo=True, logprobs=1, max_tokens=1)["choices"][0]["logprobs"]
    assert ids[0] == BOS and len(lp["tokens"]) == len(ids) - 1 + 1
    worst = assert_scores(lp["token_logprobs"][: len(ids) - 1], ref.scores(ids), TOLERANCE[ref.name])
    print(f"{ref.name}: text prompt, {len(ids) - 1} tokens, max |diff| {worst:.2e}")
    assert "".join(lp["tokens"][: len(ids) - 1]) == TEXT
    assert lp["text_offset"][: len(ids)] == [len("".join(lp["tokens"][:i])) for i in range(len(ids))]


def test_text_prompt_with_its_own_bos_keeps_it(setup: tuple[Served, Reference]):
    served, ref = setup
    text = "<s>" + TEXT
    ids = encode(served, text)
    assert ids == encode(served, TEXT)  # the same tokens; this time the client sent the BOS
    choice = complete(served, prompt=text, echo=True, logprobs=1, max_tokens=1)["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1 and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert_scores(lp["token_logprobs"][1: len(ids)], ref.scores(ids), TOLERANCE[ref.name])
    assert choice["text"].startswith(text) and lp["text_offset"][len(ids)] == len(text)


@pytest.mark.parametrize("with_bos", [True, False])
def test_token_id_prompt_has_one_entry_per_id(setup: tuple[Served, Reference], with_bos: bool):
    served, ref = setup
    ids = ([BOS] if with_bos else []) + [100, 200, 300, 17, 42]
    result = complete(served, prompt=[ids], echo=True, logprobs=1, max_tokens=1)
    lp = result["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
    worst = assert_scores(lp["token_logprobs"][1: len(ids)], ref.scores(ids), TOLERANCE[ref.name])
    print(f"{ref.name}: ids {'with' if with_bos else 'without'} BOS, max |diff| {worst:.2e}")
    table = ref.logprobs(ids)
    assert lp["token_logprobs"][-1] == pytest.approx(float(table[-1].max()), abs=TOLERANCE[ref.name])  # greedy
    assert result["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}


def test_lm_eval_loglikelihood_slice(setup: tuple[Served, Reference]):
    """lm-evaluation-harness sends context + continuation ids with echo, logprobs 1, max_tokens 1, and sums
    token_logprobs[ctxlen:-1]; rolling (perplexity) windows start with BOS as their one context token."""
    served, ref = setup
    context = [BOS, *encode(served, "The quick brown fox", add_bos=False)]
    for continuation in (encode(served, " jumps over the lazy dog.", add_bos=False), [*encode(served, " ok", add_bos=False), EOS]):
        ids = context + continuation
        body = {"prompt": [ids], "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0, "seed": 1234}
        lp = complete(served, **body)["choices"][0]["logprobs"]
        got = sum(lp["token_logprobs"][len(context):-1])
        want = sum(ref.scores(ids)[len(context) - 1:])
        assert got == pytest.approx(want, abs=TOLERANCE[ref.name] * len(continuation))
        print(f"{ref.name}: lm-eval slice of {len(continuation)} tokens: {got:.6f} vs {want:.6f}")


def test_generated_eos_has_its_entry(setup: tuple[Served, Reference]):
    served, ref = setup
    ids = encode(served, TEXT)
    forced = {"logit_bias": {str(EOS): 100}}  # the reply is EOS; its logprob is the model's own (raw)
    result = complete(served, prompt=TEXT, echo=True, logprobs=2, max_tokens=5, **forced)
    choice, lp = result["choices"][0], result["choices"][0]["logprobs"]
    assert choice["finish_reason"] == "stop" and choice["text"] == TEXT
    assert result["usage"]["completion_tokens"] == 1 and len(lp["tokens"]) == len(ids) - 1 + 1
    assert lp["tokens"][-1] == "" and lp["text_offset"][-1] == len(TEXT)
    assert lp["token_logprobs"][-1] == pytest.approx(float(ref.logprobs(ids)[-1, EOS]), abs=TOLERANCE[ref.name])
    with served.client() as c:
        chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                                                    "logprobs": True, "top_logprobs": 1, **GREEDY, **forced}).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert chat["usage"]["completion_tokens"] == len(content) == 1 and content[0]["token"] == ""


def test_streamed_eos_entry_and_prompt_only(setup: tuple[Served, Reference]):
    served, _ = setup
    body = {"prompt": TEXT, "logprobs": 1, "max_tokens": 3, "logit_bias": {str(EOS): 100}, "stream": True, **GREEDY}
    with served.client() as c, c.stream("POST", "/v1/completions", json=body) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    entries = [t for ch in chunks if (lp := ch["choices"][0]["logprobs"]) for t in lp["tokens"]]
    assert entries == [""] and chunks[-1]["usage"]["completion_tokens"] == 1
    only = complete(served, prompt=TEXT, echo=True, logprobs=1, max_tokens=0)  # score the prompt, generate nothing
    assert only["usage"]["completion_tokens"] == 0 and only["choices"][0]["text"] == TEXT
    assert len(only["choices"][0]["logprobs"]["tokens"]) == len(encode(served, TEXT)) - 1


def test_scored_prompt_longer_than_the_context_is_a_400(setup: tuple[Served, Reference]):
    served, _ = setup
    n_ctx = served.app.models.require().n_ctx
    with served.client() as c:
        response = c.post("/v1/completions", json={"prompt": [[7] * (n_ctx + 1)], "echo": True, "logprobs": 1})
    assert assert_error(response, 400)["code"] == "context_length_exceeded"


# -- prompt batches ---------------------------------------------------------------------------------
def test_batch_equals_prompts_one_by_one(setup: tuple[Served, Reference]):
    served, _ = setup
    prompts = ["Hello, world!", TEXT, "<s>The model reads tokens"]
    body = {"echo": True, "logprobs": 2, "max_tokens": 6}
    batch = complete(served, prompt=prompts, **body)
    alone = [complete(served, prompt=p, **body) for p in prompts]
    assert [c["index"] for c in batch["choices"]] == [0, 1, 2]
    for got, single in zip(batch["choices"], alone, strict=True):
        want = single["choices"][0]
        assert got["text"] == want["text"] and got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
        assert got["logprobs"]["text_offset"] == want["logprobs"]["text_offset"]
        assert got["logprobs"]["token_logprobs"] == pytest.approx(want["logprobs"]["token_logprobs"], abs=1e-5)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert batch["usage"][field] == sum(s["usage"][field] for s in alone)


def test_batch_of_token_ids_streamed_by_index(setup: tuple[Served, Reference]):
    served, _ = setup
    prompts = [encode(served, "Hello, world!"), encode(served, TEXT, add_bos=False)]
    whole = complete(served, prompt=prompts, max_tokens=5, logprobs=1)
    with served.client() as c, c.stream("POST", "/v1/completions", json={**GREEDY, "prompt": prompts, "max_tokens": 5,
                                                                         "logprobs": 1, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    for choice in whole["choices"]:
        mine = [ch["choices"][0] for ch in chunks if ch["choices"][0]["index"] == choice["index"]]
        assert "".join(m["text"] for m in mine) == choice["text"] and mine[-1]["finish_reason"] == choice["finish_reason"]
    indexes = [ch["choices"][0]["index"] for ch in chunks]
    assert indexes == sorted(indexes)  # one choice after the other
    assert [ch["usage"] for ch in chunks if ch["usage"]] == [whole["usage"]]  # once, at the end: the sum


def test_n_samples_per_prompt(setup: tuple[Served, Reference]):
    served, _ = setup
    result = complete(served, prompt=["Hello", TEXT], max_tokens=4, n=2)
    texts = [c["text"] for c in result["choices"]]
    assert [c["index"] for c in result["choices"]] == [0, 1, 2, 3]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: the samples agree
    prompt_tokens = len(encode(served, "Hello")) + len(encode(served, TEXT))  # each prompt counted once
    assert result["usage"]["prompt_tokens"] == prompt_tokens and result["usage"]["completion_tokens"] == 16
    sampled = complete(served, prompt="Hello", max_tokens=8, n=3, temperature=1.0, seed=7)
    assert sampled["choices"][0]["text"] == complete(served, prompt="Hello", max_tokens=8, temperature=1.0, seed=7)["choices"][0]["text"]
    assert len({c["text"] for c in sampled["choices"]}) > 1
