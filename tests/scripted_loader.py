"""A scripted fake model and its loader: a loader plugin written the way a third party writes one.

Tests register it through the real ``hearth_loaders`` hook (``conftest.py``: ``scripted_plugins``) or
through a ``hearth.loaders`` entry point (``test_loader_contract.py``), so the generation core is
driven through the same contract as llama.cpp or Transformers, only fast and deterministic.

A scripted model is a folder of the models folder whose ``config.json`` holds the script:
``{"model_type": "hearth-scripted", "replies": [["Hel", "lo", " world"], ...], "n_ctx": 256}``. Each
reply is a list of tokens (the vocabulary is the 256 bytes, BOS, EOS and every multi-byte piece of the
replies). The model continues the reply the text so far follows furthest (its longest suffix that is
a start of a reply); the first reply is the most likely, later ones rank below it (so banning a token
of one reply makes the model say the next one), and a finished reply ends with EOS. With EOS banned
the model says the filler token and then its reply again, for as long as the generation lets it.
A prompt that ends with the opening tokens of a reply counts them as already said.

``"vision": N`` in the script makes a model that takes up to N images per prompt: each image becomes
``"image_cost"`` (default 1) ``<image>`` tokens, and the model records the SHA-256 of the images of every
prompt (`seen_images`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from webui.errors import LoaderError
from webui.loader_api import MEDIA_MARKER, Image, Loader, LoaderParam, Model, ModelInfo, common_prefix_length
from webui.plugins import hookimpl
from webui.sampling import SamplingParams

MODEL_TYPE = "hearth-scripted"
BOS, EOS = 0, 1
_FIRST_BYTE = 2  # byte b is token b + 2
#: Scores of a step's candidates, most likely first; every other token scores 0.
_SCORES = (20.0, 12.0, 6.0, 3.0)


def write_script(
    models_dir: Path, name: str, *replies: Sequence[str], n_ctx: int = 256, filler: str = " ", vision: int = 0,
    image_cost: int = 1,
) -> Path:
    """A scripted model folder in `models_dir` that says `replies` (lists of token texts); `vision`: the
    most images a prompt may carry (0: none)."""
    if not replies or not all(replies) or not all(piece for reply in replies for piece in reply):
        raise ValueError("give at least one reply, each a list of non-empty token texts")
    folder = models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": MODEL_TYPE,
        "replies": [list(r) for r in replies],
        "n_ctx": n_ctx,
        "filler": filler,
        "vision": vision,
        "image_cost": image_cost,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def read_script(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("model_type") == MODEL_TYPE else None


def _said(ids: Sequence[int], reply: Sequence[int]) -> int:
    """How many of `reply`'s first tokens `ids` ends with."""
    for k in range(min(len(ids), len(reply)), 0, -1):
        if list(ids[-k:]) == list(reply[:k]):
            return k
    return 0


class ScriptedModel(Model):
    """Says its replies. Records what the core asks of it (`calls`) and lets a test act at a step
    (`on_logits`, called on the evaluating thread with the ids before their logits are computed)."""

    def __init__(
        self, info: ModelInfo, replies: list[list[str]], n_ctx: int, filler: str, native_greedy: bool,
        vision: int = 0, image_cost: int = 1,
    ):
        self.info = info
        pieces = dict.fromkeys(p.encode("utf-8") for reply in [*replies, [filler]] for p in reply)
        self.vocab: list[bytes] = [b"<s>", b"</s>", *(bytes([b]) for b in range(256))]
        self.vocab += [p for p in pieces if len(p) > 1]
        self.image_token = len(self.vocab)
        self.vocab.append(b"<image>")
        self.max_images, self.image_cost = vision, image_cost
        #: The SHA-256 of the images of each prompt given to `tokenize_media`, in order.
        self.seen_images: list[list[str]] = []
        self._ids = {text: i for i, text in enumerate(self.vocab) if i >= _FIRST_BYTE}
        self._pieces = sorted((p for p in self._ids if len(p) > 1), key=len, reverse=True)
        self.replies = [[self._ids[p.encode("utf-8")] for p in reply] for reply in replies]
        self.filler = self._ids[filler.encode("utf-8")]
        self._n_ctx = n_ctx
        self.native_greedy = native_greedy
        self.native_sampler = "scripted" if native_greedy else None
        #: Generations served by `native_generate` (the rest went through Hearth's pipeline).
        self.native_runs = 0
        self.calls: list[list[int]] = []
        self.on_logits: Callable[[list[int]], None] | None = None
        self._last: dict[int, list[int]] = {}
        self._handed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.unloaded = False

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
        return len(self.vocab)

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Longest piece first, else one byte per token."""
        data, ids, i = text.encode("utf-8"), [BOS] if add_bos else [], 0
        while i < len(data):
            piece = next((p for p in self._pieces if data.startswith(p, i)), data[i : i + 1])
            ids.append(self._ids[piece])
            i += len(piece)
        return ids

    def tokenize_media(self, text: str, images: Sequence[Image], add_bos: bool = True) -> list[int]:
        """`image_cost` ``<image>`` tokens per image, in the marker's place."""
        self.seen_images.append([image.sha256 for image in images])
        first, *rest = text.split(MEDIA_MARKER)
        ids = self.tokenize(first, add_bos)
        for piece in rest:
            ids += [self.image_token] * self.image_cost + self.tokenize(piece, add_bos=False)
        return ids

    def image_tokens(self, image: Image) -> int:
        return self.image_cost

    def detokenize(self, ids: Sequence[int]) -> str:
        return b"".join(self.vocab[i] for i in ids if i >= _FIRST_BYTE and i != self.image_token).decode(
            "utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id] if token_id >= _FIRST_BYTE else b""

    def token_text(self, token_id: int) -> bytes:
        return self.vocab[token_id]

    def next_tokens(self, ids: Sequence[int]) -> list[int]:
        """The candidates after `ids`, most likely first."""
        said = [_said(ids, reply) for reply in self.replies]
        furthest = max(said)
        ranked = [
            reply[k] if k < len(reply) else EOS
            for reply, k in zip(self.replies, said, strict=True)
            if k == furthest
        ]
        return list(dict.fromkeys([*ranked, EOS, self.filler]))

    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        if self.unloaded:
            raise RuntimeError("the scripted model was unloaded")
        if self._handed is not None and not torch.equal(*self._handed):
            raise AssertionError(
                "the logits this model handed out were changed in place (a backend may reuse them)"
            )
        ids = list(ids)
        self.calls.append(ids)
        if self.on_logits is not None:
            self.on_logits(ids)
        self.evaluated_tokens += len(ids) - common_prefix_length(ids, self._last.get(slot, []))
        self._last[slot] = ids
        scores = torch.zeros(self.vocab_size)
        for token, score in zip(self.next_tokens(ids), _SCORES, strict=False):
            scores[token] = score
        self._handed = (scores, scores.clone())
        return scores

    def native_generate(self, ids: Sequence[int], params: SamplingParams, seed: int) -> Iterator[int] | None:
        """With `native_greedy`, plain greedy requests (nothing but ban_eos_token and a seed set) come
        from here instead of Hearth's pipeline, as a llama.cpp request would; any other is refused."""
        plain = {"seed", "ban_eos_token"}
        if not self.native_greedy or params.model_dump(exclude=plain) != SamplingParams(
            do_sample=False
        ).model_dump(exclude=plain):
            return None
        self.native_runs += 1
        return self._greedy(list(ids), params.ban_eos_token)

    def _greedy(self, ids: list[int], ban_eos: bool) -> Iterator[int]:
        while True:
            scores = self.logits(ids).clone()
            if ban_eos:
                scores[EOS] = float("-inf")
            token = int(scores.argmax())
            ids.append(token)
            yield token

    def unload(self) -> None:
        self.unloaded = True


class ScriptedLoader(Loader):
    name = "scripted"
    description = f"a folder whose config.json is a script (model_type {MODEL_TYPE})"
    params = (
        LoaderParam(
            "n_ctx", "int", 0, "Context window in tokens; 0 = the script's.", minimum=0, maximum=1 << 20
        ),
        LoaderParam("native_greedy", "bool", False, "Serve plain greedy requests from native_generate."),
    )

    @classmethod
    def score(cls, path: Path) -> int:
        return 100 if path.is_dir() and read_script(path) is not None else 0

    def load(self, path: Path, params: dict[str, Any]) -> Model:
        script = read_script(path)
        if script is None or not script.get("replies"):
            raise LoaderError(f"{path.name}: config.json is not a script with replies")
        n_ctx = params["n_ctx"] or int(script.get("n_ctx", 256))
        info = ModelInfo(
            name=path.name,
            loader=self.name,
            path=str(path),
            architecture="scripted",
            context_length=n_ctx,
            bos_token="<s>",
            eos_token="</s>",
        )
        model = ScriptedModel(
            info, script["replies"], n_ctx, script.get("filler", " "), params["native_greedy"],
            int(script.get("vision", 0)), int(script.get("image_cost", 1)),
        )
        info.vocab_size = model.vocab_size
        return model


@hookimpl
def hearth_loaders() -> list[type[Loader]]:
    return [ScriptedLoader]
