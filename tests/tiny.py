"""Tiny, seeded, fully local models and tokenizers for unit tests (no hub, seconds to build)."""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Step 1: 48 / 2 = 24 clips in May. Step 2: 48 + 24 = 72 clips. #### 72",
    "You are a helpful assistant. What is 7 times 8? 7 * 8 = 56. The final answer is 56.",
    "The quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 , . ! ? $ % #",
] * 4


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on a few sentences, with a ChatML chat template.

    Byte-level means any text encodes (no unknown tokens), like the GPT-2/Llama-3 family."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
    )


def tiny_llama_config(tokenizer, **overrides):
    """A one-layer, 32-wide Llama config over ``tokenizer``'s vocabulary and special tokens."""
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LlamaConfig(**{**settings, **overrides})


def build_tiny_model_dir(path: Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Save a seeded random Llama-shaped causal LM and its tokenizer to ``path``; return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llava(*, seed: int = 0, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32):
    """A seeded random LLaVA (tiny CLIP vision tower + projector + one-layer Llama) and its processor.

    Each image becomes (image_size / patch_size)² = 16 ``<image>`` tokens; the image processor is the
    PIL (torchvision-free) CLIP one, resizing and centre-cropping to ``image_size``."""
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)  # fmt: skip

    from align.models import VISION_CHATML_TEMPLATE  # renders content parts: image parts as <image>

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = VISION_CHATML_TEMPLATE
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=VISION_CHATML_TEMPLATE,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=1, num_attention_heads=4, projection_dim=hidden_size,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=tiny_llama_config(tokenizer, hidden_size=hidden_size, bos_token_id=None),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config), processor


def build_tiny_llava_dir(path: Path, *, seed: int = 0) -> Path:
    """Save :func:`build_tiny_llava`'s model and processor to ``path``; return it."""
    model, processor = build_tiny_llava(seed=seed)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
