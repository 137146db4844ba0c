"""Exact answers for evaluation clients (issue 14, items 3 and 4), through the real API server and loaders.

- Chat completions in instruct mode send exactly what the model's own chat template (transformers'
  `apply_chat_template`) makes of the messages, and return the reply as generated; chat modes keep characters.
- The llama.cpp loader's f32 KV cache scores as the f32 Transformers model does; its memory estimate doubles.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.test_api_server import Served, serve_api
from webui.chat_service import ChatOptions, ChatService
from webui.errors import LoaderError
from webui.generation import GenerationRequest
from webui.memory_estimate import estimate
from webui.models import ModelManager

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a story."},
]
WITH_SYSTEM = [{"role": "system", "content": "You are terse."}, *CONVERSATION]
#: A template with a default system text of its own (as Qwen's), used only when no system message is sent.
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ bos_token + 'system\\nYou are a tiny test model.' + eos_token + '\\n' }}{% endif %}"
    "{% for message in messages %}{{ bos_token + message['role'] + '\\n' + message['content'] + eos_token + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}{% endif %}"
)
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def gguf(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    user_data = tmp_path_factory.mktemp("user_data")
    (user_data / "characters").mkdir()
    (user_data / "characters" / "Aria.yaml").write_text("name: Aria\ncontext: Aria is a pirate.\ngreeting: Ahoy!\n")
    with serve_api(models_dir, user_data) as served:
        yield served


@pytest.fixture(scope="module")
def hf_folder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama (HF folder) again, with a chat template that has a default system text."""
    root = tmp_path_factory.mktemp("chat_models")
    shutil.copytree(models_dir / "tiny-llama", root / "tiny-chat")
    (root / "tiny-chat" / "chat_template.jinja").write_text(DEFAULT_SYSTEM_TEMPLATE)
    return root / "tiny-chat"


@pytest.fixture(scope="module")
def hf(hf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(hf_folder.parent, tmp_path_factory.mktemp("user_data"), model=hf_folder.name) as served:
        yield served


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key="none", max_retries=0)


# -- faithful chat completions ----------------------------------------------------------------------
@pytest.mark.parametrize("messages", [CONVERSATION, WITH_SYSTEM], ids=["no-system", "system"])
@pytest.mark.parametrize("which", ["gguf", "hf"])
def test_instruct_prompt_is_the_model_template(request: pytest.FixtureRequest, models_dir: Path, which: str,
                                               messages: list[dict[str, str]]):
    served: Served = request.getfixturevalue(which)
    folder = models_dir / "tiny-llama" if which == "gguf" else request.getfixturevalue("hf_folder")
    tokenizer = _tokenizer(folder)
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    with served.client() as c:
        built = c.post("/v1/internal/chat-prompt", json={"messages": messages}).json()
    assert built["prompt"] == expected and built["length"] == len(expected_ids)
    assert ("You are a tiny test model." in expected) == (which == "hf" and messages is CONVERSATION)
    reply = _client(served).chat.completions.create(model="", messages=messages, max_tokens=1, extra_body=GREEDY)
    assert reply.usage.prompt_tokens == len(expected_ids)


def test_reply_is_returned_as_generated(gguf: Served):
    """A grammar forces a reply wrapped in whitespace: the API returns it whole, streamed or not."""
    generated = "\n Hello world \n"
    body = {"grammar_string": 'root ::= "\\n Hello world \\n"', "max_tokens": 32, **GREEDY}
    client = _client(gguf)
    whole = client.chat.completions.create(model="", messages=CONVERSATION, extra_body=body)
    assert whole.choices[0].message.content == generated and whole.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="", messages=CONVERSATION, stream=True, extra_body=body)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == generated
    chat = ChatService(gguf.app)  # the Chat tab's finish trims for display
    plan = chat.plan_reply_to_messages(CONVERSATION, ChatOptions(mode="instruct"), GenerationRequest(prompt=""))
    assert chat.finish_reply(plan, generated) == "Hello world"
    assert chat.finish_reply(plan, generated, trim=False) == generated


def test_user_content_is_rendered_verbatim(gguf: Served):
    messages = [{"role": "user", "content": "  spaced out \n"}]
    with gguf.client() as c:
        prompt = c.post("/v1/internal/chat-prompt", json={"messages": messages}).json()["prompt"]
    assert prompt == "<s>user\n  spaced out \n</s>\n<s>assistant\n"


def test_chat_modes_keep_the_character(gguf: Served):
    assistant_context = "The following is a conversation with an AI Large Language Model."
    with gguf.client() as c:
        def prompt(**fields: Any) -> str:
            return c.post("/v1/internal/chat-prompt", json={"messages": CONVERSATION, **fields}).json()["prompt"]

        assert assistant_context not in prompt()
        chat = prompt(mode="chat", user_name="Ann")
        assert chat.startswith(assistant_context) and chat.endswith("Ann: Tell me a story.\nAssistant:")
        assert assistant_context in prompt(mode="chat-instruct")
        assert prompt(mode="chat", character="Aria").startswith("Aria is a pirate.")
        # a character named in instruct mode is asked for: its context is the system message
        assert prompt(character="Aria").startswith("<s>system\nAria is a pirate.</s>\n<s>user\nHi there")
        assert prompt(character="Aria", messages=WITH_SYSTEM).startswith("<s>system\nYou are terse.</s>")


# -- f32 KV cache ----------------------------------------------------------------------------------
SCORED = "Once upon a time there was a little village by the sea, where fishermen told stories every night. " * 3


def _log_softmaxes(manager: ModelManager, name: str, params: dict[str, Any] | None, ids: list[int]) -> Any:
    import torch

    model = manager.load(name, params=params)
    try:
        return torch.stack([torch.log_softmax(model.logits(ids[:n]).float(), -1) for n in range(8, len(ids) + 1, 8)])
    finally:
        manager.unload()


def test_f32_kv_cache_scores_like_the_f32_reference(manager: ModelManager):
    ids = manager.load("tiny-llama.gguf").tokenize(SCORED)
    reference = _log_softmaxes(manager, "tiny-llama", None, ids)
    f16 = _log_softmaxes(manager, "tiny-llama.gguf", {"cache_type": "f16"}, ids)
    f32 = _log_softmaxes(manager, "tiny-llama.gguf", {"cache_type": "f32"}, ids)
    f16_gap, f32_gap = float((f16 - reference).abs().max()), float((f32 - reference).abs().max())
    print(f"max |log-prob difference| vs Transformers f32: f16 cache {f16_gap:.3g}, f32 cache {f32_gap:.3g}")
    assert f32_gap < 1e-4 and f32_gap * 10 < f16_gap
    with_flash = _log_softmaxes(manager, "tiny-llama.gguf", {"cache_type": "f32", "flash_attn": True}, ids)
    assert bool(with_flash.isfinite().all())  # accepted; on the CPU flash attention rounds to f16 anyway


def test_f32_cache_needs_no_flash_attn_and_doubles_the_kv_estimate(models_dir: Path, loaders: dict):
    llama = loaders["llama.cpp"]
    llama.validate(models_dir / "tiny-llama.gguf", llama.resolve_params({"cache_type": "f32"}))
    with pytest.raises(LoaderError, match="needs flash_attn"):
        llama.validate(models_dir / "tiny-llama.gguf", llama.resolve_params({"cache_type": "q8_0"}))
    params = {"n_ctx": 512, "n_gpu_layers": 0}
    f16 = estimate(models_dir / "tiny-llama.gguf", "llama.cpp", {**params, "cache_type": "f16"})
    f32 = estimate(models_dir / "tiny-llama.gguf", "llama.cpp", {**params, "cache_type": "f32"})
    assert f32.kv_cache == 2 * f16.kv_cache > 0
