"""An example Hearth loader plugin: a character bigram model counted from a text file.

A bigram model is the smallest thing that still predicts a next token: it counts, in a corpus, which
byte follows which, and its next-token logits after a text are the log of those counts for the text's
last byte. It needs no weights file and no engine, so everything here is the plugin contract itself.

A model is a folder in Hearth's models folder holding ``config.json`` with ``{"model_type": "bigram"}``
and the corpus as ``corpus.txt``. ``docs/loaders.md`` walks through this file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from webui.loader_api import Loader, LoaderError, LoaderParam, Model, ModelInfo
from webui.plugins import hookimpl

#: Tokens 0..255 are the bytes; two special tokens follow.
BOS, EOS = 256, 257
VOCAB_SIZE = 258


def read_config(path: Path) -> dict[str, Any] | None:
    """The folder's config.json when it describes a bigram model, else None."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("model_type") == "bigram" else None


class BigramModel(Model):
    """Next-token logits from bigram counts: log(count(last, next) + smoothing)."""

    def __init__(self, info: ModelInfo, counts: torch.Tensor, n_ctx: int, smoothing: float):
        self.info = info
        self._log_counts = torch.log(counts + smoothing)
        self._n_ctx = n_ctx

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({EOS})

    @property
    def bos_token_id(self) -> int | None:
        return BOS

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return ([BOS] if add_bos else []) + list(text.encode("utf-8"))

    def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else b""

    def token_text(self, token_id: int) -> bytes:
        return {BOS: b"<s>", EOS: b"</s>"}.get(token_id) or bytes([token_id])

    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        # Only the last token matters, so there is no cache to reuse: every call reads one token.
        self.evaluated_tokens += 1
        return self._log_counts[ids[-1]].clone()

    def unload(self) -> None:
        del self._log_counts


class BigramLoader(Loader):
    name = "bigram"
    description = "a folder with config.json (model_type bigram) and corpus.txt"
    params = (
        LoaderParam("n_ctx", "int", 2048, "Context window in tokens.", minimum=16, maximum=1 << 20),
        LoaderParam(
            "smoothing",
            "float",
            0.01,
            "Added to every count, so unseen pairs stay possible.",
            minimum=1e-6,
            maximum=10.0,
        ),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        return 100 if path.is_dir() and read_config(path) is not None else 0

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        corpus = path / "corpus.txt"
        if not corpus.is_file():
            raise LoaderError(f"{path.name} has no corpus.txt: a bigram model is counted from it")
        tokens = torch.tensor([BOS, *corpus.read_bytes(), EOS])
        pairs = tokens[:-1] * VOCAB_SIZE + tokens[1:]  # one number per (token, next token)
        counts = torch.bincount(pairs, minlength=VOCAB_SIZE * VOCAB_SIZE).view(VOCAB_SIZE, VOCAB_SIZE).float()
        info = ModelInfo(
            name=path.name,
            loader=self.name,
            path=str(path),
            architecture="bigram",
            parameters=VOCAB_SIZE * VOCAB_SIZE,
            context_length=params["n_ctx"],
            vocab_size=VOCAB_SIZE,
            bos_token="<s>",
            eos_token="</s>",
        )
        return BigramModel(info, counts, params["n_ctx"], params["smoothing"])


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [BigramLoader]
