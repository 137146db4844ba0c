"""Builds a tiny random vision-language model (Gemma 3 architecture) for tests, with no download.

Saved with transformers' own classes: config, random weights, a byte-level BPE tokenizer with Gemma 3's
special tokens, and the processor (image processor + chat template), so `AutoProcessor` and
`AutoModelForImageTextToText` load it as they would a real checkpoint. Head dimension 64 (llama.cpp needs
it); images are 56 px so one costs four tokens. Gemma 3 rather than Qwen2-VL: Qwen2-VL's processor needs
torchvision (its video processor), which Hearth does not install.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.model_factory import CORPUS

VISION_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                   "<end_of_image>", "<image_soft_token>"]

#: Gemma 3's chat template, shortened (image and text parts, generation prompt): what its processor ships.
VLM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

#: Images are resized to 56 x 56: 16 patches of 14 px, pooled to 4 image tokens.
IMAGE_SIZE = 56
IMAGE_TOKENS = 4


def _tokenizer(vocab: int, specials: list[str] = VISION_SPECIALS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 20, trainer=trainer)
    return tok


def build_tiny_vlm(path: Path, seed: int = 1234, vocab: int = 512) -> Path:
    """A tiny random Gemma 3 vision model at `path` (built once; an existing folder is returned as is)."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        PreTrainedTokenizerFast,
    )

    tok = _tokenizer(vocab)
    ids = {name: tok.token_to_id(name) for name in VISION_SPECIALS}
    text = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64, "vocab_size": tok.get_vocab_size(),
            "max_position_embeddings": 2048, "sliding_window": 512, "rms_norm_eps": 1e-6,
            "bos_token_id": ids["<bos>"], "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
            "pad_token_id": ids["<pad>"]}
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": IMAGE_SIZE, "patch_size": 14, "vision_use_head": False}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=IMAGE_TOKENS,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).to(torch.float32).eval()
    with torch.no_grad():  # a large init so greedy choices are decisive, as in model_factory
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.05 if "vision" in name else 0.2)
    model.save_pretrained(path)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    fast.chat_template = VLM_CHAT_TEMPLATE
    images = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    Gemma3Processor(image_processor=images, tokenizer=fast, chat_template=VLM_CHAT_TEMPLATE,
                    image_seq_length=IMAGE_TOKENS).save_pretrained(path)
    fast.save_pretrained(path)
    return path


QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def build_tiny_qwen2vl(path: Path, seed: int = 7) -> Path:
    """A tiny random Qwen2-VL as a Hugging Face folder (model, tokenizer, image preprocessor settings, and the
    chat template where Qwen2-VL repos keep the processor's: chat_template.json, the tokenizer has none).
    Its processor needs torchvision in transformers; the Transformers loader builds it without."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = _tokenizer(512, QWEN_SPECIALS)
    ids = {name: tok.token_to_id(name) for name in QWEN_SPECIALS}
    text = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "rope_parameters": {"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 10000.0},
    }
    # depth 3: the converter maps the merger's mlp.0 / mlp.2 by block index, so it needs at least 3 blocks
    vision = {
        "depth": 3,
        "embed_dim": 64,
        "hidden_size": 128,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.05 if "visual" in name else 0.2)
    model.save_pretrained(path)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    ).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {  # CLIP's mean/std, as Qwen2-VL's processor
                "image_processor_type": "Qwen2VLImageProcessor",
                "patch_size": 14,
                "merge_size": 2,
                "temporal_patch_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    return path
