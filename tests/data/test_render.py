"""One prompt renderer: the ids the generator feeds to ``generate`` are the ids training puts in front
of the completion, on SmolLM2's tokenizer and on a Llama-3-style one (a chat template that writes
``<|begin_of_text|>`` itself and a tokenizer that also adds it by default: the double-BOS trap)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from align.data import DataValidationError, load_preference_dataset, prompt_ids, tokenize_dataset, tokenize_row
from align.data.render import adds_bos
from align.generation import SamplingConfig, sample_completions
from tests.generation.test_hf import spy_on
from tests.tiny import CORPUS, build_tokenizer, tiny_llama_config

# Meta-Llama-3-8B-Instruct's chat template, verbatim.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CONVERSATION = [{"role": "user", "content": "What is 7 times 8?"}]
WITH_SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "9 + 4?"}]
PLAIN = "Natalia sold 48 clips in April and half as many in May."


def build_llama3_tokenizer(*, appends_eos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE with Llama 3's special tokens and chat template; like Llama 3's own tokenizer
    it puts ``<|begin_of_text|>`` in front by default (and, with ``appends_eos``, ``<|eot_id|>`` after)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=LLAMA3_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE
    )
    special = [(t, tok.token_to_id(t)) for t in ("<|begin_of_text|>", "<|eot_id|>")]
    single = "<|begin_of_text|> $A" + (" <|eot_id|>" if appends_eos else "")
    tokenizer._tokenizer.post_processor = TemplateProcessing(single=single, special_tokens=special)
    return tokenizer


@pytest.fixture(scope="module")
def llama3():
    tokenizer = build_llama3_tokenizer()
    assert adds_bos(tokenizer)  # the trap is armed: the tokenizer adds the BOS the template also writes
    return tokenizer


@pytest.fixture(scope="module")
def smollm2():
    """The built-in SmolLM2's tokenizer, read from its GGUF (no weights converted)."""
    from align.models import BUILTIN_MODELS, _gguf_tokenizer

    return _gguf_tokenizer(BUILTIN_MODELS["builtin:smollm2-135m-instruct"])


def rendered(tokenizer, messages) -> str:
    """A prompt stored as the text its chat template renders (as many datasets ship them)."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tiny_model(tokenizer) -> LlamaForCausalLM:
    """A seeded random one-layer Llama over ``tokenizer``'s vocabulary, to sample from."""
    config = tiny_llama_config(tokenizer)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


# -- the renderer ---------------------------------------------------------------------------------


def test_llama3_conversation_has_one_bos(llama3):
    bos = llama3.bos_token_id
    ids = prompt_ids(llama3, CONVERSATION)
    assert ids == list(llama3.apply_chat_template(CONVERSATION, add_generation_prompt=True)["input_ids"])
    assert ids[0] == bos and ids.count(bos) == 1
    assert llama3(rendered(llama3, CONVERSATION))["input_ids"][:2] == [bos, bos]  # what the trap would feed
    assert llama3.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_prompt_stored_rendered_gets_the_ids_of_the_conversation(name, request):
    tokenizer = request.getfixturevalue(name)
    for messages in (CONVERSATION, WITH_SYSTEM):
        assert prompt_ids(tokenizer, rendered(tokenizer, messages)) == prompt_ids(tokenizer, messages)


def test_string_gets_bos_once_and_never_eos():
    tokenizer = build_llama3_tokenizer(appends_eos=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    plain = tokenizer(PLAIN, add_special_tokens=False)["input_ids"]
    assert tokenizer(PLAIN)["input_ids"] == [bos, *plain, eos]  # what the tokenizer adds by default
    assert prompt_ids(tokenizer, PLAIN) == prompt_ids(tokenizer, "<|begin_of_text|>" + PLAIN) == [bos, *plain]


def test_smollm2_strings_stay_as_they_are(smollm2):
    """SmolLM2 has a BOS token (``<|im_start|>``) but does not add it: a string is used as is."""
    assert smollm2.bos_token_id is not None and not adds_bos(smollm2)
    assert prompt_ids(smollm2, PLAIN) == smollm2(PLAIN, add_special_tokens=False)["input_ids"]


def test_bad_prompts_name_where_they_come_from(llama3):
    with pytest.raises(TypeError, match=r"^train\.jsonl row 3 must be a string or a non-empty list .* got int"):
        prompt_ids(llama3, 42, name="train.jsonl row 3")
    with pytest.raises(TypeError, match="got list"):
        prompt_ids(llama3, [])
    no_bos = build_tokenizer()
    with pytest.raises(ValueError, match="^prompt is empty after tokenization"):
        prompt_ids(no_bos, "")
    with pytest.raises(DataValidationError, match=r"^d\.jsonl: row 4: field 'prompt' is empty after tokenization"):
        tokenize_row({"prompt": "", "completions": ["a"]}, no_bos, 4, "d.jsonl")


# -- sampling and training agree ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_completions_are_trained_after_the_ids_they_were_sampled_after(name, request):
    """Sample K=2 completions of conversational, plain and pre-rendered prompts, tokenize the samples
    as a training set: each prompt's training ids are the ids the model was prefilled with, and every training
    sequence is exactly those ids followed by the completion (the chat template's rendering of prompt +
    answer for conversations; the completion's tokens and EOS for strings)."""
    tokenizer = request.getfixturevalue(name)
    model = tiny_model(tokenizer)
    prompts = [CONVERSATION, WITH_SYSTEM, PLAIN, rendered(tokenizer, CONVERSATION)]
    # seed 1: no sample of the random model is empty (an empty completion is refused as training data)
    config = SamplingConfig(num_samples=2, max_new_tokens=8, seed=1, batch_size=2, chunk_size=1)
    with spy_on(model) as spy:
        samples = sample_completions(model, tokenizer, prompts, config, show_progress=False)
    fed = spy.fed_prompts()  # one prefill per prompt (chunks of 1 prompt; its cache serves its 2 samples)
    assert len(fed) == len(prompts)

    rows = []
    for prompt, completions in zip(prompts, samples):
        if isinstance(prompt, list):
            completions = [[{"role": "assistant", "content": c}] for c in completions]
        rows.append({"prompt": prompt, "completions": completions, "returns": [1.0, 0.0]})
    # Conversational and string rows are different kinds of data: one training set each.
    trained = []
    for part in (rows[:2], rows[2:]):
        dataset, _ = tokenize_dataset(load_preference_dataset(Dataset.from_list(part)), tokenizer, max_length=None)
        trained.extend(dataset)

    eos = tokenizer.eos_token_id
    for i, (prompt, completions, row) in enumerate(zip(prompts, samples, trained)):
        assert tuple(row["prompt_ids"]) == fed[i], f"prompt {i}: trained after other ids than sampled after"
        for completion, completion_ids in zip(completions, row["completion_ids"]):
            sequence = row["prompt_ids"] + completion_ids
            if isinstance(prompt, list):
                conversation = [*prompt, {"role": "assistant", "content": completion}]
                assert sequence == list(tokenizer.apply_chat_template(conversation)["input_ids"])
            else:
                assert completion_ids == tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
            assert tuple(sequence[: len(fed[i])]) == fed[i]
    if name == "llama3":
        assert all(ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id for ids in fed)
