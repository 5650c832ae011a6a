"""hf_reward_model on a tiny random LlamaForSequenceClassification: batched scores = direct forwards."""

from __future__ import annotations

import pytest
import torch

from align.rewards import HFRewardModel, RewardError, load_reward, score_groups
from tests.tiny import build_tokenizer, tiny_llama_config

PROMPTS = [
    "How many clips did Natalia sell?",
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 7 times 8?"},
    ],
    "Weng earns $12 an hour.",
]
COMPLETIONS = ["She sold 72 clips. #### 72", "56", "In 50 minutes she earns $10, so the answer is 10 dollars."]


def _save_tiny_classifier(path, *, chat_template: bool = True):
    from transformers import LlamaForSequenceClassification

    tokenizer = build_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    config = tiny_llama_config(tokenizer, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return _save_tiny_classifier(tmp_path_factory.mktemp("tiny-rm"))


def _direct_score(path, prompt, completion) -> float:
    """One unpadded forward on the chat-templated conversation, logits[0, 0]."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": completion}], tokenize=False)
    assert text.endswith(f"<|im_start|>assistant\n{completion}<|im_end|>\n")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return float(model(**ids).logits[0, 0])


def test_batched_scores_equal_direct_forwards(classifier_dir):
    # batch_size=2 over 3 completions of different lengths: one padded batch and one single.
    model = load_reward(f"hf_reward_model:{classifier_dir}", batch_size=2, device="cpu")
    assert isinstance(model, HFRewardModel)
    assert model.name == f"hf_reward_model:{classifier_dir}"
    scores = model.score(PROMPTS, COMPLETIONS)
    expected = [_direct_score(classifier_dir, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert scores == pytest.approx(expected, abs=1e-5)
    # Random weights: the scores really differ, so equality above is not vacuous.
    assert max(expected) - min(expected) > 1e-4
    # One batch of 3 (more padding) gives the same scores.
    assert load_reward(f"hf_reward_model:{classifier_dir}", batch_size=3).score(PROMPTS, COMPLETIONS) == pytest.approx(
        expected, abs=1e-5
    )


def test_score_groups_with_the_reward_model(classifier_dir):
    model = load_reward(f"hf_reward_model:{classifier_dir}", batch_size=4)
    out = score_groups(model, PROMPTS[:2], [COMPLETIONS, COMPLETIONS[:2]])
    assert out[0].scores.tolist() == pytest.approx(model.score([PROMPTS[0]] * 3, COMPLETIONS), abs=1e-5)
    assert out[1].preference.shape == (2, 2)


def test_without_chat_template(tmp_path):
    path = _save_tiny_classifier(tmp_path, chat_template=False)
    model = load_reward(f"hf_reward_model:{path}")
    assert model.text("Q: 7 * 8? A: ", "56") == "Q: 7 * 8? A: 56"
    assert len(model.score(["Q: 7 * 8? A: "], ["56"])) == 1
    with pytest.raises(RewardError, match=r"failed on prompt 1 \('What is 7 times 8\?'\).*no chat template"):
        model.score(["Q: ", [{"role": "user", "content": "What is 7 times 8?"}]], ["56", "56"])


def test_bad_batch_size(classifier_dir):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        load_reward(f"hf_reward_model:{classifier_dir}", batch_size=0)
