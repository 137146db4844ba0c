"""Instruction templates: shipped files render each family's real format; detection; model templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webui.errors import HearthError
from webui.prompts.templates import (
    DEFAULT_TEMPLATE,
    MODEL_TEMPLATE_NAME,
    TemplateError,
    TemplateLibrary,
    detect_template,
    list_templates,
    load_template,
    read_model_chat_template,
    render,
    user_templates_dir,
)
from webui.safe_files import UnsafeNameError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
]
EXPECTED = {
    "ChatML": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "Llama-v3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "Mistral": "<s>[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nCapital of France?[/INST]",
    "Alpaca": (
        "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n"
        "### Instruction:\nCapital of France?\n\n### Response:\n"
    ),
    "Llama-v2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Capital of France? [/INST]",
    "Gemma": (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "Vicuna-v1.1": "Be brief. USER: Hi ASSISTANT: Hello!</s>USER: Capital of France? ASSISTANT:",
    "Phi-3": (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nCapital of France?<|end|>\n<|assistant|>\n"
    ),
    "DeepSeek": (
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜>"
        "<｜User｜>Capital of France?<｜Assistant｜>"
    ),
}
BOS = {
    "Llama-v3": "<|begin_of_text|>",
    "Gemma": "<bos>",
    "DeepSeek": "<｜begin▁of▁sentence｜>",
    "Command-R": "<BOS_TOKEN>",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_template_matches_family_format(name: str) -> None:
    text = load_template(TEMPLATES, name)
    bos = BOS.get(name, "<s>")
    assert (
        render(text, CONVERSATION, True, bos_token=bos, eos_token="</s>", template_name=name)
        == EXPECTED[name]
    )


@pytest.mark.parametrize("name", list_templates(TEMPLATES))
def test_every_template_renders_like_transformers(name: str) -> None:
    """Our sandbox must agree with transformers' own chat-template renderer on every shipped file."""
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    text = load_template(TEMPLATES, name)
    for add_generation_prompt in (True, False):
        ours = render(text, CONVERSATION, add_generation_prompt, bos_token="<s>", eos_token="</s>")
        theirs = chat_template_utils.render_jinja_template(
            conversations=[CONVERSATION],
            chat_template=text,
            add_generation_prompt=add_generation_prompt,
            bos_token="<s>",
            eos_token="</s>",
        )
        theirs = theirs[0][0] if isinstance(theirs, tuple) else theirs
        theirs = theirs[0] if isinstance(theirs, list) else theirs
        assert ours == theirs
        assert "Capital of France?" in ours


def test_shipped_families_are_listed() -> None:
    names = list_templates(TEMPLATES)
    for family in ("Alpaca", "ChatML", "Command-R", "DeepSeek", "Gemma", "Llama-v2", "Llama-v3", "Mistral"):
        assert family in names
    assert {"Phi-3", "Qwen", "Vicuna-v1.1", "Zephyr", "Metharme"} <= set(names)


def test_default_system_messages_apply_without_a_system_turn() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert render(load_template(TEMPLATES, "Qwen"), messages, True).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    )
    assert render(load_template(TEMPLATES, "Alpaca"), messages, True).startswith("Below is an instruction")


def test_syntax_error_names_template_and_line() -> None:
    with pytest.raises(TemplateError, match=r"'Broken', line 3"):
        render("ok\nstill ok\n{% if %}", [], True, template_name="Broken")


def test_runtime_errors_name_the_line_and_are_hearth_errors() -> None:
    strict = "{% for m in messages %}\n{% if m['role'] == 'system' %}\n{{ raise_exception('no system role') }}\n{% endif %}{% endfor %}"
    with pytest.raises(HearthError, match=r"'Strict', line 3: no system role"):
        render(strict, [{"role": "system", "content": "x"}], True, template_name="Strict")
    with pytest.raises(TemplateError, match="TypeError"):
        render("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}], True)


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(TemplateError):
        render("{{ messages.__class__.__mro__[1].__subclasses__() }}", [], True)


def test_template_helpers_match_transformers_conventions() -> None:
    text = "{{ strftime_now('%Y') }}|{{ {'a': 'é'} | tojson }}|{% generation %}kept{% endgeneration %}"
    year, json_part, generated = render(text, [], False).split("|")
    assert year.isdigit() and json_part == '{"a": "é"}' and generated == "kept"


def test_load_template_errors_and_safe_names(tmp_path: Path) -> None:
    (tmp_path / "Mine.jinja").write_text("{{ 'x' }}", encoding="utf-8")
    (tmp_path / "secret.jinja").write_text("outside", encoding="utf-8")
    inner = tmp_path / "templates"
    inner.mkdir()
    with pytest.raises(UnsafeNameError, match="instruction template '../secret' is not allowed"):
        load_template(inner, "../secret")
    with pytest.raises(TemplateError, match="no instruction template named"):
        load_template(inner, "secret")
    assert load_template(tmp_path, "Mine") == "{{ 'x' }}"


def test_detect_prefers_the_models_own_template() -> None:
    own = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    detected = detect_template(own, "Meta-Llama-3-8B-Instruct", TEMPLATES)
    assert detected == (MODEL_TEMPLATE_NAME, own, "model")


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama-v3"),
        ("llama-2-13b-chat.Q5_K_M.gguf", "Llama-v2"),
        ("Mistral-7B-Instruct-v0.3", "Mistral"),
        ("mixtral-8x7b-instruct", "Mistral"),
        ("zephyr-7b-beta (a Mistral fine-tune)", "Zephyr"),
        ("Qwen2.5-7B-Instruct", "Qwen"),
        ("DeepSeek-R1-Distill-Qwen-7B", "DeepSeek"),
        ("gemma-2-9b-it", "Gemma"),
        ("Phi-3-mini-4k-instruct", "Phi-3"),
        ("vicuna-13b-v1.5", "Vicuna-v1.1"),
        ("alpaca-native-7b", "Alpaca"),
        ("c4ai-command-r-v01", "Command-R"),
        ("OpenHermes-2.5-Mistral-7B", "ChatML"),
    ],
)
def test_detect_by_model_name_rules(model_name: str, expected: str) -> None:
    name, text, source = detect_template(None, model_name, TEMPLATES)
    assert (name, source) == (expected, "rules")
    assert text == load_template(TEMPLATES, expected)


def test_detect_falls_back_to_default() -> None:
    assert detect_template("", "totally-unknown-model", TEMPLATES)[::2] == (DEFAULT_TEMPLATE, "default")
    # A model template that does not compile is skipped instead of breaking the model.
    assert detect_template("{% if %}", "gemma-7b-it", TEMPLATES)[::2] == ("Gemma", "rules")


def test_rules_file_is_user_editable(tmp_path: Path) -> None:
    (tmp_path / "Mine.jinja").write_text("mine", encoding="utf-8")
    (tmp_path / "ChatML.jinja").write_text("chatml", encoding="utf-8")
    (tmp_path / "model_rules.yaml").write_text("rules:\n  - {pattern: 'my-?model', template: Mine}\n")
    assert detect_template(None, "MY-MODEL-7b", tmp_path) == ("Mine", "mine", "rules")
    assert detect_template(None, "other", tmp_path) == ("ChatML", "chatml", "default")


def test_read_chat_template_from_hf_folder(tmp_path: Path) -> None:
    assert read_model_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from-config"}))
    assert read_model_chat_template(tmp_path) == "from-config"
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]}
        )
    )
    assert read_model_chat_template(tmp_path) == "d"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "from-json"}))
    assert read_model_chat_template(tmp_path) == "from-json"
    (tmp_path / "chat_template.jinja").write_text("from-jinja")
    assert read_model_chat_template(tmp_path) == "from-jinja"


def test_read_chat_template_from_gguf(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_chat_template("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    template = read_model_chat_template(path)
    assert template == "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert detect_template(template, "tiny", TEMPLATES).source == "model"

    bare = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(bare), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_model_chat_template(bare) is None
    (tmp_path / "corrupt.gguf").write_bytes(b"GGUF\x03\x00")
    assert read_model_chat_template(tmp_path / "corrupt.gguf") is None


# -- issue 13: user templates saved under user_data/templates, beside the shipped ones ------------------
def shipped_copy(tmp_path: Path) -> Path:
    shipped = tmp_path / "templates"
    shipped.mkdir()
    (shipped / "ChatML.jinja").write_text("shipped chatml", encoding="utf-8")
    return shipped


def test_user_templates_are_listed_loaded_and_saved_beside_the_shipped_ones(tmp_path: Path) -> None:
    library = TemplateLibrary(shipped_copy(tmp_path), user_templates_dir(tmp_path / "user_data"))
    assert library.names() == ["ChatML"]  # no user folder yet: nothing to list, nothing created
    path, replaced = library.save("  My pirate  ", "{% for m in messages %}Arr {{ m['content'] }}{% endfor %}")
    assert path == tmp_path / "user_data" / "templates" / "My pirate.jinja" and not replaced
    assert library.names() == ["ChatML", "My pirate"]
    assert render(library.load("My pirate"), [{"role": "user", "content": "hi"}], True) == "Arr hi"
    assert library.load("ChatML") == "shipped chatml"
    _, replaced = library.save("My pirate", "{{ 'v2' }}")
    assert replaced and library.load("My pirate") == "{{ 'v2' }}"
    with pytest.raises(TemplateError, match=r"no instruction template named 'Nope' \(available: ChatML, My pirate\)"):
        library.load("Nope")


def test_saving_never_touches_a_shipped_template_or_a_broken_one(tmp_path: Path) -> None:
    shipped = shipped_copy(tmp_path)
    library = TemplateLibrary(shipped, user_templates_dir(tmp_path / "user_data"))
    for name in ("ChatML", "chatml"):  # case-insensitive file systems would clash too
        with pytest.raises(TemplateError, match="shipped template; save yours under another name"):
            library.save(name, "{{ 'mine' }}")
    with pytest.raises(TemplateError, match=r"template 'Broken', line 1"):
        library.save("Broken", "{% for m in messages %}")
    with pytest.raises(UnsafeNameError, match="template name"):
        library.save("../ChatML", "{{ 'x' }}")
    with pytest.raises(UnsafeNameError):
        library.save("", "{{ 'x' }}")
    assert (shipped / "ChatML.jinja").read_text(encoding="utf-8") == "shipped chatml"
    assert not (tmp_path / "user_data" / "templates").exists() or not any((tmp_path / "user_data" / "templates").iterdir())
    # a user file under a shipped name (put there by hand) does not shadow the shipped one
    user = tmp_path / "user_data" / "templates"
    user.mkdir(parents=True, exist_ok=True)
    (user / "ChatML.jinja").write_text("user chatml", encoding="utf-8")
    assert library.load("ChatML") == "shipped chatml" and library.names() == ["ChatML"]
