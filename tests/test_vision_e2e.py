"""Images end to end on real parts: the official `openai` client sends an OpenAI image_url part to Hearth's
API, and the tiny random Gemma 3 vision model answers through each loader that sees: Transformers on the
Hugging Face folder, llama.cpp on the same weights converted to a GGUF + mmproj. The whole chain runs: the
chat prompt built from the model's own template with the image marker, the loader's image tokens, the prefix
cache, the sampler pipeline (logprobs) and the native sampler (plain greedy on llama.cpp)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import openai
import pytest

from tests.test_api_server import API_KEY, serve_api
from tests.vision_models import IMAGE_SIZE

pytestmark = pytest.mark.slow


def data_url(seed: int) -> str:
    """A patterned PNG of the model's own size, as a data URL."""
    import base64

    from PIL import Image as PILImage

    img = PILImage.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    img.putdata([((x * 9 + seed * 70) % 256, (y * 13 + seed * 40) % 256, (x * y + seed * 25) % 256)
                 for y in range(IMAGE_SIZE) for x in range(IMAGE_SIZE)])
    out = io.BytesIO()
    img.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def ask(seed: int, text: str = "What is in the picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(seed)}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def models(vlm_dir: Path, vlm_gguf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision-e2e")
    shutil.copytree(vlm_dir, root / "tiny-vlm")
    shutil.copytree(vlm_gguf_dir / "tiny-vlm-gguf", root / "tiny-vlm-gguf")
    return root


@pytest.mark.parametrize(("model", "loader", "params"), [
    ("tiny-vlm", "Transformers", {"device": "cpu"}),
    ("tiny-vlm-gguf", "llama.cpp", {"n_ctx": 1024}),
])
def test_an_image_reaches_the_model_through_the_api(models: Path, tmp_path: Path, model: str, loader: str,
                                                    params: dict) -> None:
    with serve_api(models, tmp_path / "user", model=None, api_key=API_KEY) as served:
        served.app.models.load(model, loader, params)
        client = openai.OpenAI(base_url=served.base + "/v1", api_key=API_KEY, max_retries=0)

        def first_token(seed: int) -> dict[str, float]:
            reply = client.chat.completions.create(
                model=model, messages=ask(seed), max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
            top = reply.choices[0].logprobs.content[0].top_logprobs
            return {t.token: round(t.logprob, 3) for t in top}

        red, again, green = first_token(1), first_token(1), first_token(2)
        assert red == again and red != green  # the image decides the answer; the same image, the same answer

        greedy = dict(model=model, messages=ask(1), max_tokens=8, temperature=0,
                      extra_body={"ban_eos_token": True})
        first, second = (client.chat.completions.create(**greedy) for _ in range(2))
        reply = first.choices[0].message.content
        assert reply and reply == second.choices[0].message.content
        # a second turn reads only what is new: the first turn's prompt, image included, stays cached
        before = served.app.models.model.evaluated_tokens
        follow = [*ask(1), {"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
        turn2 = client.chat.completions.create(model=model, messages=follow, max_tokens=1, temperature=0)
        evaluated = served.app.models.model.evaluated_tokens - before
        assert 0 < evaluated <= turn2.usage.prompt_tokens - first.usage.prompt_tokens

        with pytest.raises(openai.BadRequestError, match="truncated"):  # cut short: nothing reaches the model
            client.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(1)[:200]}}]}])
