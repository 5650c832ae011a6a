"""HFGenerator on the tiny random Llama: shapes and order, prompt encoding, decoding, determinism per
chunk, resuming, greedy decoding, model state, PEFT, and the backend registry."""

from __future__ import annotations

import copy
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align.generation import (
    Generator,
    HFGenerator,
    SamplingConfig,
    available_generators,
    chunk_bounds,
    chunk_seed,
    encode_prompts,
    get_generator,
    sample_completions,
)
from tests.generation.common import PROMPTS, sampling_config


def load(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core machine a
    second spinning thread makes each decoding step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def full_run(tiny):
    """The reference run: all 7 prompts, 4 chunks, on_chunk calls recorded."""
    model, tok = tiny
    calls = []
    out = sample_completions(
        model, tok, PROMPTS, sampling_config(), on_chunk=lambda i, r: calls.append((i, r)), show_progress=False
    )
    return out, calls


class PrefillSpy:
    """Records every prefill: each forward call of ``model`` that starts from an empty KV cache (its
    keyword inputs), whether it comes from ``generate`` or from align's decoding loop."""

    def __init__(self):
        self.calls = []

    def __call__(self, module, args, kwargs):
        cache = kwargs.get("past_key_values")
        if cache is None or cache.get_seq_length() == 0:
            self.calls.append({"kwargs": kwargs})

    def fed_prompts(self) -> list[tuple[int, ...]]:
        """The unpadded prompt ids of every sequence prefilled."""
        rows = []
        for call in self.calls:
            ids = call["kwargs"]["input_ids"]
            for row, mask in zip(ids, call["kwargs"].get("attention_mask", torch.ones_like(ids))):
                rows.append(tuple(row[mask.bool()].tolist()))
        return rows


@contextmanager
def spy_on(model):
    spy = PrefillSpy()
    handle = model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        yield spy
    finally:
        handle.remove()


@contextmanager
def spy_on_generate(model):
    """Records every ``model.generate`` call (inputs and output) while passing it through."""
    calls, original = [], model.generate

    def spy(**kwargs):
        output = original(**kwargs)
        calls.append({"kwargs": kwargs, "output": output})
        return output

    model.generate = spy
    try:
        yield calls
    finally:
        del model.generate


# -- config and chunking --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [dict(num_samples=0), dict(max_new_tokens=0), dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5),
     dict(top_k=-1), dict(batch_size=0), dict(chunk_size=0), dict(seed=1.5)],
)  # fmt: skip
def test_config_rejects_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"SamplingConfig.{name}"):
        SamplingConfig(**bad)


def test_chunks_and_seeds():
    assert chunk_bounds(7, 2) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert chunk_bounds(0, 2) == []
    seeds = {chunk_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**63 for s in seeds)
    assert chunk_seed(0, 1) == chunk_seed(0, 1) == 1837805993257134495  # stable across processes and runs


# -- outputs --------------------------------------------------------------------------------------


def test_k_completions_per_prompt(full_run):
    out, _ = full_run
    assert len(out) == len(PROMPTS)
    assert all(len(samples) == 3 and all(isinstance(s, str) for s in samples) for samples in out)
    assert all(len(set(samples)) > 1 for samples in out), "sampled completions of a prompt should differ"


@pytest.mark.parametrize("use_generate", [False, True], ids=["align-decode", "generate"])
def test_prompt_ids_fed_to_the_model(tiny, use_generate):
    """Conversations get the chat template with the generation prompt; strings are used as is; the
    prompts are prefilled left-padded, in batches of at most batch_size sequences: each prompt once
    by align's decoding loop (its cache then serves the K samples), K times by ``generate``."""
    model, tok = tiny
    expected = []
    for prompt in PROMPTS:
        if isinstance(prompt, str):
            expected.append(tuple(tok(prompt, add_special_tokens=False)["input_ids"]))
        else:
            expected.append(
                tuple(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"])
            )
    assert [tuple(ids) for ids in encode_prompts(tok, PROMPTS)] == expected
    assert tok.decode(list(expected[0])).endswith("<|im_start|>assistant\n")

    with spy_on(model) as spy:
        sample_completions(model, tok, PROMPTS, sampling_config(), show_progress=False, use_generate=use_generate)
    copies = 3 if use_generate else 1
    assert Counter(spy.fed_prompts()) == Counter({ids: copies for ids in expected})
    # chunks of 2, 2, 2, 1 prompts: × 3 copies in batches of 4 sequences: 2 + 2 + 2 + 1 calls;
    # align-decode: 4 // 3 = 1 prompt per batch, 7 calls
    assert len(spy.calls) == 7
    for call in spy.calls:
        mask = call["kwargs"].get("attention_mask", torch.ones_like(call["kwargs"]["input_ids"]))  # None: no padding
        assert mask.shape[0] <= 4 and bool(mask[:, -1].all()), "prompts must be left-padded"
        assert call["kwargs"]["use_cache"] is True
    assert tok.padding_side == "right"  # the tokenizer is left as it was


def test_completions_are_the_decoded_new_tokens(tiny, monkeypatch):
    model, tok = tiny
    with spy_on_generate(model) as calls:
        out = sample_completions(model, tok, PROMPTS, sampling_config(), show_progress=False, use_generate=True)
    decoded = Counter()
    for call in calls:
        width = call["kwargs"]["input_ids"].shape[1]
        decoded.update(tok.batch_decode(call["output"][:, width:], skip_special_tokens=True))
    assert decoded == Counter(text for samples in out for text in samples)
    # align's decoding loop: its new tokens, decoded, in the order of the prompts and their copies
    import align.generation.hf as hf

    tokens, decode = [], hf.decode
    monkeypatch.setattr(hf, "decode", lambda *a, **k: tokens.append(decode(*a, **k)) or tokens[-1])
    out = sample_completions(model, tok, PROMPTS, sampling_config(), show_progress=False)
    assert Counter(tok.batch_decode([row for batch in tokens for row in batch], skip_special_tokens=True)) == Counter(
        text for samples in out for text in samples
    )
    for prompt, samples in zip(PROMPTS, out):
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        assert all(text not in sample for sample in samples)


def test_completion_stops_at_generation_config_eos(tiny_model_dir):
    """An EOS known only to the model's generation config ends the completion too."""
    model, tok = load(tiny_model_dir)
    config = sampling_config(temperature=0.0, num_samples=1, max_new_tokens=8)
    ids = torch.tensor([encode_prompts(tok, PROMPTS[:1])[0]])
    greedy = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
    new = greedy[0, ids.shape[1] :].tolist()
    stop = new[3]
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    [[text]] = sample_completions(model, tok, PROMPTS[:1], config, show_progress=False)
    assert text == tok.decode(new[: new.index(stop)], skip_special_tokens=True)


def test_greedy_equals_one_prompt_at_a_time(tiny):
    """temperature 0: every sample is the argmax continuation, the same as generating each prompt
    alone (no padding); reversing the prompts reverses the outputs (prompt order is kept)."""
    model, tok = tiny
    config = sampling_config(temperature=0.0, num_samples=2, max_new_tokens=12, chunk_size=3, batch_size=3)
    out = sample_completions(model, tok, PROMPTS, config, show_progress=False)
    for prompt, samples in zip(PROMPTS, out):
        ids = torch.tensor([encode_prompts(tok, [prompt])[0]])
        alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
        new = alone[0, ids.shape[1] :].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert samples == [tok.decode(new, skip_special_tokens=True)] * 2
    reversed_out = sample_completions(model, tok, PROMPTS[::-1], config, show_progress=False)
    assert reversed_out == out[::-1]


# -- determinism and resuming ---------------------------------------------------------------------


def test_same_seed_same_samples_and_caller_rng_untouched(tiny, full_run):
    model, tok = tiny
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = sample_completions(model, tok, PROMPTS, sampling_config(), show_progress=False)
    assert torch.equal(torch.rand(3), expected_next), "sampling must restore the caller's RNG state"
    assert again == full_run[0]


def test_different_seed_different_samples(tiny, full_run):
    model, tok = tiny
    other = sample_completions(model, tok, PROMPTS, sampling_config(seed=1), show_progress=False)
    assert all(a != b for a, b in zip(other, full_run[0]))


def test_on_chunk_called_once_per_chunk_in_order(full_run):
    out, calls = full_run
    assert [index for index, _ in calls] == [0, 1, 2, 3]
    assert [samples for _, results in calls for samples in results] == out


def test_done_chunks_are_not_regenerated_and_a_chunk_alone_matches_the_full_run(tiny, full_run):
    """Only chunk 1 is pending: it is sampled alone, yet equals chunk 1 of the full run, and the
    done chunks come back exactly as given (even when they hold text this model never produced)."""
    model, tok = tiny
    out, _ = full_run
    done = {0: [["done a"] * 3, ["done b"] * 3], 2: out[4:6], 3: out[6:7]}
    calls = []
    with spy_on(model) as spy:
        resumed = sample_completions(model, tok, PROMPTS, sampling_config(), on_chunk=lambda i, r: calls.append(i),
                                     done_chunks=done, show_progress=False)  # fmt: skip
    assert calls == [1]
    assert len(spy.calls) == 2  # chunk 1 only: 2 prompts, one per batch (4 sequences // 3 copies)
    assert set(spy.fed_prompts()) == {tuple(ids) for ids in encode_prompts(tok, PROMPTS[2:4])}
    assert resumed == done[0] + out[2:4] + out[4:]


def test_all_chunks_done_runs_nothing(tiny, full_run):
    model, tok = tiny
    out, _ = full_run
    done = {i: out[a:b] for i, (a, b) in enumerate(chunk_bounds(len(PROMPTS), 2))}
    with spy_on(model) as spy:
        assert sample_completions(model, tok, PROMPTS, sampling_config(), done_chunks=done, show_progress=False) == out
    assert spy.calls == []


@pytest.mark.parametrize(
    "done, match",
    [({4: [["x"] * 3]}, "makes? 4 chunks"), ({0: [["x"] * 3]}, r"done_chunks\[0\] must hold 2 prompts"),
     ({3: [["x"] * 2]}, r"× 3 completions")],
)  # fmt: skip
def test_done_chunks_that_do_not_fit_are_refused(tiny, done, match):
    model, tok = tiny
    with pytest.raises(ValueError, match=match):
        sample_completions(model, tok, PROMPTS, sampling_config(), done_chunks=done, show_progress=False)


# -- model state, wrappers, prompts ---------------------------------------------------------------


def test_training_mode_and_gradient_checkpointing(tiny_model_dir, full_run):
    """A model in training mode with gradient checkpointing on (which turns use_cache off) samples
    the same as in eval mode, and is left in training mode with checkpointing still on."""
    model, tok = load(tiny_model_dir)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    out = sample_completions(model, tok, PROMPTS, sampling_config(), show_progress=False)
    assert out == full_run[0]
    assert model.training and model.is_gradient_checkpointing


def test_peft_model(tiny_model_dir, full_run):
    """A LoRA-wrapped model works; with LoRA B = 0 at init it samples exactly like the base model."""
    from peft import LoraConfig, get_peft_model

    model, tok = load(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft_model.train()
    out = sample_completions(peft_model, tok, PROMPTS, sampling_config(), show_progress=False)
    assert out == full_run[0]
    assert peft_model.training


def test_string_prompt_gets_bos_once(tiny):
    """With a tokenizer that adds BOS, a string prompt gets it once, also when the text already has it."""
    from tokenizers.processors import TemplateProcessing

    from tests.tiny import build_tokenizer

    tok = build_tokenizer()
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    tok.bos_token = "<|endoftext|>"
    plain = tok("hello", add_special_tokens=False)["input_ids"]
    assert encode_prompts(tok, ["hello", "<|endoftext|>hello"]) == [[bos, *plain], [bos, *plain]]
    assert encode_prompts(tiny[1], ["hello"]) == [plain]  # no BOS token: nothing added


def test_bad_prompts_are_refused(tiny):
    _, tok = tiny
    with pytest.raises(TypeError, match="prompt 1 must be a string or a non-empty list"):
        encode_prompts(tok, ["ok", 42])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        encode_prompts(tok, [""])
    no_template = copy.deepcopy(tok)
    no_template.chat_template = None
    with pytest.raises(ValueError, match="prompt 0 is a conversation but the tokenizer has no chat template"):
        encode_prompts(no_template, PROMPTS[:1])


def test_empty_prompt_list(tiny):
    model, tok = tiny
    calls = []
    assert sample_completions(model, tok, [], sampling_config(), on_chunk=lambda *a: calls.append(a)) == []
    assert calls == []


# -- registry -------------------------------------------------------------------------------------


def test_get_generator(tiny, full_run):
    model, tok = tiny
    generator = get_generator("hf", model, tok, show_progress=False)
    assert isinstance(generator, HFGenerator) and isinstance(generator, Generator)
    assert generator.generate(PROMPTS, sampling_config()) == full_run[0]
    assert available_generators() == ["hf"]
    with pytest.raises(ValueError, match="unknown generation backend 'vllm'; known backends: hf"):
        get_generator("vllm", model, tok)
