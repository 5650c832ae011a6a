"""HFGenerator on the tiny LLaVA with its processor: image prompts (UV-CoT's two turns) sample what a
manual ``model.generate`` on the processor's output samples, batching and left-padding keep each
sequence with its own images, chunked resume holds, and mismatched image prompts fail naming the prompt."""

from __future__ import annotations

import io
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from align.data.boxes import ANSWER_PROMPT, BOX_PROMPT
from align.generation import HFGenerator, SamplingConfig, sample_completions
from tests.tiny import build_tiny_llava

GREEDY = dict(num_samples=1, max_new_tokens=8, temperature=0.0, batch_size=8, chunk_size=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as in test_hf.py: the tiny model gains nothing from more on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llava():
    model, processor = build_tiny_llava()
    return model.eval(), processor


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    """Four plain images of different sizes and colours, saved as PNG (the loop hands the generator
    paths). Plain colours, unlike noise, move the random tiny model's greedy answers apart."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    kinds = [((48, 40), "white"), ((32, 32), "red"), ((40, 64), "blue"), ((60, 36), "black")]
    for index, (size, colour) in enumerate(kinds):
        path = folder / f"image-{index}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(str(path))
    return paths


def turn1(image, question: str) -> list[dict]:
    """UV-CoT's first turn: the image and the question with the box request."""
    content = [{"type": "image", "image": image}, {"type": "text", "text": question + BOX_PROMPT}]
    return [{"role": "user", "content": content}]


def turn2(image, crop, question: str, box: str = "[0.25, 0.25, 0.75, 0.75]") -> list[dict]:
    """UV-CoT's second turn: the first turn, the proposed box, then the crop with the answer request."""
    content = [{"type": "image", "image": crop}, {"type": "text", "text": ANSWER_PROMPT + question}]
    return [*turn1(image, question), {"role": "assistant", "content": box}, {"role": "user", "content": content}]


def manual_greedy(model, processor, prompt, max_new_tokens: int = 8) -> str:
    """The reference: the processor's own chat rendering and ``model.generate`` on one prompt, no padding."""
    tok = processor.tokenizer
    inputs = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")  # fmt: skip
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
    return tok.decode(new, skip_special_tokens=True)


@contextmanager
def spy_on(model):
    """Records the keyword arguments of every ``model.generate`` call."""
    original, calls = model.generate, []

    def generate(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    model.generate = generate
    try:
        yield calls
    finally:
        del model.generate


def greedy(model, processor, prompts, **overrides) -> list[str]:
    config = SamplingConfig(**{**GREEDY, **overrides})
    return [samples[0] for samples in sample_completions(model, processor, prompts, config, show_progress=False)]


def test_greedy_equals_manual_generate_with_the_processor(llava, image_paths):
    """One left-padded batch of image prompts (one image, two images, none) gives what the processor +
    ``model.generate`` give on each prompt alone; the images reach the model in sequence order."""
    model, processor = llava
    a, b, c, d = image_paths
    prompts = [
        turn1(a, "What is in the box?"),
        turn2(b, c, "Which pattern is inside the coloured frame of this picture?"),
        [{"role": "user", "content": "Text only: what is 7 times 8?"}],
        turn1(d, "Colour?"),
    ]
    with spy_on(model) as calls:
        out = greedy(model, processor, prompts)
    assert out == [manual_greedy(model, processor, prompt) for prompt in prompts]
    assert len({out[0], out[1], out[3]}) == 3, "image prompts must answer differently, or mixing would go unseen"
    [call] = calls
    assert call["pixel_values"].shape == (4, 3, 32, 32)  # 1 + 2 + 0 + 1 images
    assert not call["attention_mask"].all() and call["attention_mask"][:, -1].all(), "left-padded"
    # reversed prompts: reversed outputs (images follow their sequence through the length sort)
    assert greedy(model, processor, prompts[::-1]) == out[::-1]


def test_images_in_one_batch_do_not_mix(llava, image_paths):
    """The same question on two images in one batch: each output is what that image gives alone, and
    swapping the images swaps the outputs."""
    model, processor = llava
    a, b = image_paths[:2]
    question = "What is in the box?"
    together = greedy(model, processor, [turn1(a, question), turn1(b, question)])
    alone = [greedy(model, processor, [turn1(image, question)])[0] for image in (a, b)]
    assert together == alone and alone[0] != alone[1]
    assert greedy(model, processor, [turn1(b, question), turn1(a, question)]) == alone[::-1]


def test_image_values_path_pil_bytes_agree(llava, image_paths):
    model, processor = llava
    path = image_paths[2]
    pil = Image.open(path)
    raw = io.BytesIO()
    pil.save(raw, format="PNG")
    values = (path, pil, raw.getvalue(), {"bytes": None, "path": path})
    prompts = [turn1(value, "What is in the box?") for value in values]
    out = greedy(model, processor, prompts)
    assert out == [out[0]] * 4


def test_text_prompts_through_the_processor_equal_its_tokenizer(llava):
    """A processor without image prompts samples exactly as its tokenizer does (no image inputs added)."""
    model, processor = llava
    prompts = ["The quick brown fox", [{"role": "user", "content": "What is 9 plus 4?"}],
               [{"role": "user", "content": [{"type": "text", "text": "What is 100 minus 1?"}]}]]  # fmt: skip
    config = SamplingConfig(num_samples=2, max_new_tokens=6, temperature=1.0, seed=3, batch_size=4, chunk_size=2)
    with spy_on(model) as calls:
        through_processor = sample_completions(model, processor, prompts, config, show_progress=False)
    assert all("pixel_values" not in call for call in calls)
    assert through_processor == sample_completions(model, processor.tokenizer, prompts, config, show_progress=False)


def test_chunked_resume_with_image_prompts(llava, image_paths):
    """Sampled (temperature 1) image prompts: a resumed run samples only the pending chunk and equals
    the full run; the chunk results are text only."""
    model, processor = llava
    a, b, c, d = image_paths
    prompts = [turn1(a, "Shape?"), turn2(a, b, "Shape?"), turn1(c, "What colour is the frame?"),
               turn2(c, d, "What colour is the frame?"), turn1(d, "Stripes?")]  # fmt: skip
    config = SamplingConfig(num_samples=2, max_new_tokens=6, temperature=1.0, seed=0, batch_size=3, chunk_size=2)
    chunks = {}
    full = sample_completions(model, processor, prompts, config, on_chunk=chunks.__setitem__, show_progress=False)
    assert sorted(chunks) == [0, 1, 2]
    assert all(isinstance(text, str) for result in chunks.values() for samples in result for text in samples)
    assert len({text for samples in full for text in samples}) > 5, "samples should vary"
    resumed_calls = []
    with spy_on(model) as calls:
        resumed = sample_completions(model, processor, prompts, config, done_chunks={0: chunks[0], 2: chunks[2]},
                                     on_chunk=lambda i, r: resumed_calls.append(i), show_progress=False)  # fmt: skip
    assert resumed == full and resumed_calls == [1]
    assert sum(call["pixel_values"].shape[0] for call in calls) == 2 * (1 + 2)  # chunk 1: 3 images × 2 copies


def test_image_prompts_that_do_not_fit_are_refused(llava, image_paths):
    """Placeholder/image count mismatches and images without a processor fail before any generate
    call, naming the prompt."""
    model, processor = llava
    no_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Shape?"}]}]
    literal = turn1(image_paths[0], "Is <image> a token?")
    cases = [
        (processor, no_image, r"prompt 1 has 1 image parts but 0 images.*fill_images"),
        (processor, literal, r"prompt 1\b.*<image>"),
        (processor.tokenizer, turn1(image_paths[0], "Shape?"), r"prompt 1 has 1 image\(s\) but .* not a processor"),
    ]
    for processing_class, bad, match in cases:
        with spy_on(model) as calls, pytest.raises(ValueError, match=match):
            HFGenerator(model, processing_class, show_progress=False).generate(["text", bad], SamplingConfig(**GREEDY))
        assert calls == []


def test_loaded_through_align_models_in_training_mode_and_with_lora(llava, image_paths, tmp_path):
    """The loop's path: a saved VLM loaded by ``align.models`` (for training: KV cache off, training
    mode), its processor as the processing class, and a LoRA wrapper (B = 0 at init) all sample as
    the model built in memory; training mode is restored."""
    from peft import LoraConfig, get_peft_model
    from trl import ModelConfig

    from align.models import load_model, load_processing_class
    from tests.tiny import build_tiny_llava_dir

    model, processor = llava
    prompts = [turn1(image_paths[0], "What is in the box?"), turn2(image_paths[1], image_paths[2], "Colour?")]
    expected = greedy(model, processor, prompts)
    args = ModelConfig(model_name_or_path=str(build_tiny_llava_dir(tmp_path / "llava")))
    loaded, loaded_processor = load_model(args, for_training=True), load_processing_class(args)
    loaded.train()
    assert greedy(loaded, loaded_processor, prompts) == expected and loaded.training
    peft_model = get_peft_model(loaded, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert greedy(peft_model, loaded_processor, prompts) == expected and peft_model.training


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from tests.tiny import build_tiny_llava_dir

    return build_tiny_llava_dir(tmp_path_factory.mktemp("tiny-llava"))


def launch_vision(model_dir, image_dir, tmp_path, launch_args) -> dict:
    """Run dist_generate_vision.py under accelerate (one thread per process, its own port)."""
    import json
    import os
    import subprocess
    import sys

    from tests.generation.test_distributed import ROOT, free_port

    tmp_path.mkdir()
    out = tmp_path / "samples.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--mixed_precision", "no",
           "--main_process_port", str(free_port()), str(ROOT / "tests" / "generation" / "dist_generate_vision.py"),
           str(model_dir), str(image_dir), str(out)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_match_one_with_images(llava_dir, image_paths, tmp_path):
    """Image prompts sampled by 2 processes (DDP, and ZeRO-3 with partitioned parameters) equal 1
    process, full and resumed, on every process."""
    from pathlib import Path

    from tests.generation.test_distributed import LAUNCHES

    image_dir = Path(image_paths[0]).parent
    single = launch_vision(llava_dir, image_dir, tmp_path / "one", ["--num_processes", "1", "--dynamo_backend", "no"])
    [reference] = single["ranks"]
    assert reference["resumed"] == reference["full"] and len(reference["full"]) == 5
    for name, args in LAUNCHES.items():
        run = launch_vision(llava_dir, image_dir, tmp_path / name, args)
        assert run["world_size"] == 2
        for view in run["ranks"]:
            assert view["full"] == view["resumed"] == reference["full"], (name, view["rank"])
            assert view["partitioned"] == (name == "zero3")
