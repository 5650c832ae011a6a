"""lm_judge: a local causal LM's next-token P("A") vs P("B") as a pairwise judge.

On the tiny seeded Llama (its output layer scaled up so the next-token distribution is far from
uniform): batched = one-by-one, the formula against a hand-rolled softmax over one unpadded
forward, both orders, truncation; then the real built-in SmolLM2 on three pairs."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align.rewards import LMJudge, RewardError, checked_pair_probs, load_reward, reward_kind
from align.rewards.lm_judge import letter_token_ids
from align.rewards.openai_judge import SYSTEM_PROMPT, USER_TEMPLATE

PROMPTS = [
    "What is 7 times 8?",
    [{"role": "user", "content": "How many clips did Natalia sell?"}],
    "Say hi",
    "Weng earns $12 an hour. How much for 50 minutes?",
    "x" * 50,
]
A = ["7 * 8 = 56.", "She sold 72 clips. #### 72", "hello there friend", "$10", "y"]
B = ["54", "I dunno", "no", "She earns 10 dollars in 50 minutes, since 12 / 60 * 50 = 10.", "zzz " * 30]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():  # a random tiny model is nearly uniform; sharpen it so pairs differ clearly
        model.lm_head.weight.mul_(40.0)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def manual_prob_a(model, tokenizer, prompt, a, b) -> float:
    """p_A / (p_A + p_B) from one unpadded forward on the chat-templated judge prompt."""
    text = prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(prompt=text, a=a, b=b)},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n") and "[Response A]\n" + a in rendered
    ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
    vocab = tokenizer.get_vocab()
    p = {x: sum(probs[vocab[t]].item() for t in (x, "Ġ" + x) if t in vocab) for x in "AB"}
    return p["A"] / (p["A"] + p["B"])


def test_letter_tokens_are_the_ones_that_read_a_and_b(model_and_tokenizer, tiny_tokenizer):
    _, tokenizer = model_and_tokenizer
    vocab = tokenizer.get_vocab()
    for letter in "AB":
        expected = sorted(vocab[t] for t in (letter, "Ġ" + letter) if t in vocab)
        assert sorted(letter_token_ids(tokenizer, letter)) == expected and expected
        assert all(tokenizer.decode([i]).strip() == letter for i in expected)


def test_one_order_is_the_next_token_softmax(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    judge = LMJudge.from_model(model, tokenizer, both_orders=False, batch_size=2)
    got = judge.judge_pairs(PROMPTS, A, B)
    expected = [manual_prob_a(model, tokenizer, p, a, b) for p, a, b in zip(PROMPTS, A, B)]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert max(got) > 2 * min(got)  # the pairs really get different probabilities


def test_both_orders_average_cancels_the_position(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    judge = LMJudge.from_model(model, tokenizer, batch_size=3)
    got = judge.judge_pairs(PROMPTS, A, B)
    ab = [manual_prob_a(model, tokenizer, p, a, b) for p, a, b in zip(PROMPTS, A, B)]
    ba = [manual_prob_a(model, tokenizer, p, b, a) for p, a, b in zip(PROMPTS, A, B)]
    assert got == pytest.approx([0.5 * (x + 1 - y) for x, y in zip(ab, ba)], rel=1e-5, abs=1e-7)
    # swapping the responses gives the complement (up to rounding: the batches differ)
    swapped = judge.judge_pairs(PROMPTS, B, A)
    assert [1 - s for s in swapped] == pytest.approx(got, abs=1e-7)
    assert all(0.0 <= p <= 1.0 for p in got)


@pytest.mark.parametrize("both_orders", [False, True])
def test_batched_equals_one_by_one(model_and_tokenizer, both_orders):
    model, tokenizer = model_and_tokenizer
    lengths = [len(LMJudge.from_model(model, tokenizer)._encode(i, *job)) for i, job in enumerate(zip(PROMPTS, A, B))]
    assert len(set(lengths)) == len(lengths)  # every batch really pads
    one = LMJudge.from_model(model, tokenizer, batch_size=1, both_orders=both_orders).judge_pairs(PROMPTS, A, B)
    for batch_size in (2, 4, 16):
        batched = LMJudge.from_model(model, tokenizer, batch_size=batch_size, both_orders=both_orders)
        assert batched.judge_pairs(PROMPTS, A, B) == pytest.approx(one, rel=1e-5, abs=1e-9)


def test_long_responses_are_truncated_to_max_response_tokens(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    judge = LMJudge.from_model(model, tokenizer, max_response_tokens=6, both_orders=False)
    head = "The quick brown fox jumps over the lazy dog. "
    long_a, other_a = head * 20, head * 3 + "Natalia sold clips to 48 of her friends."
    assert (
        tokenizer(head, add_special_tokens=False)["input_ids"][:6]
        == tokenizer(long_a, add_special_tokens=False)["input_ids"][:6]
    )
    cut = judge.truncate(long_a)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 6 and long_a.startswith(cut)
    assert judge.truncate("short") == "short"
    # responses that agree on their first 6 tokens are judged the same
    assert judge.judge_pairs(["q"], [long_a], ["no"]) == judge.judge_pairs(["q"], [other_a], ["no"])
    full = LMJudge.from_model(model, tokenizer, both_orders=False)
    assert full.judge_pairs(["q"], [long_a], ["no"]) != judge.judge_pairs(["q"], [long_a], ["no"])


def test_registered_plugin_loads_a_model_folder(tiny_model_dir):
    judge = load_reward("lm_judge", model=str(tiny_model_dir), batch_size=2)
    assert reward_kind(judge) == "pairwise" and judge.name == "lm_judge" and judge.model_name == str(tiny_model_dir)
    assert (
        judge.both_orders and judge.max_response_tokens == 768 and next(judge.model.parameters()).dtype == torch.float32
    )
    probs = checked_pair_probs(judge, PROMPTS, A, B)
    assert probs.shape == (5,) and ((probs >= 0) & (probs <= 1)).all()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        load_reward("lm_judge", model=str(tiny_model_dir), batch_size=0)
    with pytest.raises(TypeError, match="it takes options.*max_response_tokens"):
        load_reward("lm_judge", model=str(tiny_model_dir), temperature=0.5)


def test_a_tokenizer_without_chat_template_is_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        LMJudge.from_model(model, bare)


def test_a_bad_prompt_is_a_reward_error_naming_it(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    judge = LMJudge.from_model(model, tokenizer)
    with pytest.raises(RewardError, match="'lm_judge' failed on prompt 7.*cannot render the prompt") as err:
        checked_pair_probs(judge, ["ok", 42], ["a", "b"], ["c", "d"], prompt_ids=[6, 7])
    assert err.value.index == 7


def test_builtin_smollm2_judge_runs_and_prefers_sense_on_average():
    """The real default judge on three (right, absurd) pairs, each order once. SmolLM2-135M is a
    weak judge: one order alone mostly says "A" whatever it is shown (the position bias that
    ``both_orders`` cancels), and the averaged verdicts are barely above chance; only their mean is
    asserted (the averaging formula itself is checked exactly on the tiny model above)."""
    judge = load_reward("lm_judge", both_orders=False)
    assert judge.model_name == "builtin:smollm2-135m-instruct" and judge.token_ids["A"] and judge.token_ids["B"]
    prompts = ["What is the capital of France?", "What is 2 + 2?", "Name a primary colour."]
    good = ["The capital of France is Paris.", "2 + 2 = 4.", "Red is a primary colour."]
    bad = ["Bananas are a kind of car that swims in the ocean.", "2 + 2 = 17.", "Tuesday."]
    ab, ba = judge.judge_pairs(prompts, good, bad), judge.judge_pairs(prompts, bad, good)
    assert all(0.0 <= p <= 1.0 for p in ab + ba)
    averaged = [0.5 * (x + 1 - y) for x, y in zip(ab, ba)]
    assert math.fsum(averaged) / 3 > 0.5


def test_a_template_that_refuses_system_messages_gets_one_user_message(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    strict = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    strict.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + strict.chat_template
    )
    with pytest.raises(Exception, match="System role not supported"):
        strict.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)
    judge = LMJudge.from_model(model, strict, both_orders=False)
    [got] = judge.judge_pairs(["What is 7 times 8?"], ["56"], ["54"])
    user = SYSTEM_PROMPT + "\n\n" + USER_TEMPLATE.format(prompt="What is 7 times 8?", a="56", b="54")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].double()
    vocab = tokenizer.get_vocab()
    lse = {x: torch.logsumexp(logits[[vocab[t] for t in (x, "Ġ" + x) if t in vocab]], 0) for x in "AB"}
    assert got == pytest.approx(torch.sigmoid(lse["A"] - lse["B"]).item(), rel=1e-5)
