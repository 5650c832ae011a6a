"""Multi-turn completions: only the assistant turns are trained and counted.

On the built-in SmolLM2 template (ChatML with a default system prompt), on Meta's Llama-3 template
and on Qwen2.5's (both verbatim, over small local tokenizers), untagged (the per-turn prefix rule)
and with TRL's ``{% generation %}`` training templates (transformers' assistant mask)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trl
from datasets import Dataset

from align.data import DataValidationError, PreferenceCollator, load_preference_dataset, tokenize_dataset, tokenize_row
from align.logps import completion_logps
from tests.data.test_render import build_llama3_tokenizer, smollm2  # noqa: F401 (fixture)
from tests.tiny import build_tokenizer, tiny_llama_config

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
PROMPT = [{"role": "user", "content": "What is 7 times 8?"}]
COMPLETION = [
    {"role": "assistant", "content": "7 * 8 = 56."},
    {"role": "user", "content": "And half of that?"},
    {"role": "assistant", "content": "Half of 56 is 28."},
]


def qwen25_tokenizer(template: str = "qwen2_5.jinja"):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (TRL_TEMPLATES / template).read_text()
    return tokenizer


def llama3_tokenizer(template: str | None = None):
    tokenizer = build_llama3_tokenizer()
    if template is not None:
        tokenizer.chat_template = (TRL_TEMPLATES / template).read_text()
    return tokenizer


def trained_text(tokenizer, completion=COMPLETION, prompt=PROMPT) -> list[str]:
    """The decoded runs of trained tokens, in order."""
    _, (ids,), (mask,) = tokenize_row({"prompt": prompt, "completions": [completion]}, tokenizer, masks=True)
    assert len(mask) == len(ids)
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_smollm2_trains_each_assistant_turn_with_its_end_of_turn(smollm2):  # noqa: F811
    assert trained_text(smollm2) == ["7 * 8 = 56.<|im_end|>\n", "Half of 56 is 28.<|im_end|>\n"]


def test_qwen25_template_with_its_default_system_prompt():
    assert trained_text(qwen25_tokenizer()) == ["7 * 8 = 56.<|im_end|>\n", "Half of 56 is 28.<|im_end|>\n"]


def test_llama3_template_trims_content_and_trains_eot():
    assert trained_text(llama3_tokenizer()) == ["7 * 8 = 56.<|eot_id|>", "Half of 56 is 28.<|eot_id|>"]


def test_tagged_llama3_template_gives_the_prefix_rule_mask():
    """TRL's llama3_training.jinja wraps content|trim + <|eot_id|>: transformers' mask equals the
    untagged template's per-turn prefix mask token for token."""
    row = {"prompt": PROMPT, "completions": [COMPLETION]}
    plain, tagged = llama3_tokenizer(), llama3_tokenizer("llama3_training.jinja")
    assert tokenize_row(row, plain, masks=True) == tokenize_row(row, tagged, masks=True)


def test_tagged_qwen25_template_also_trains_the_header_newline():
    """qwen2_5_training.jinja puts the "\\n" after "<|im_start|>assistant" inside its block: the
    template's mask is what is used, and it differs from the prefix rule by exactly that token on the
    second turn (the first turn's header is the prompt's generation prompt, never trained)."""
    assert trained_text(qwen25_tokenizer("qwen2_5_training.jinja")) == [
        "7 * 8 = 56.<|im_end|>\n",
        "\nHalf of 56 is 28.<|im_end|>\n",
    ]


def test_single_turn_completions_get_no_mask_column(smollm2):  # noqa: F811
    rows = Dataset.from_list([{"prompt": PROMPT, "completions": [[COMPLETION[0]]], "labels": [1.0]}])
    tokenized, _ = tokenize_dataset(rows, smollm2, max_length=None)
    assert "assistant_masks" not in tokenized.column_names
    multi = Dataset.from_list([
        {"prompt": PROMPT, "completions": [[COMPLETION[0]]], "labels": [1.0]},
        {"prompt": PROMPT, "completions": [COMPLETION], "labels": [0.0]},
    ])  # fmt: skip
    tokenized, _ = tokenize_dataset(multi, smollm2, max_length=None)
    masks = tokenized["assistant_masks"]
    assert masks[0] == [[1] * len(tokenized["completion_ids"][0][0])]
    assert 0 < sum(masks[1][0]) < len(masks[1][0])


THINK_STRIPPING = (  # Qwen3-style: an earlier assistant turn loses its reasoning once a later turn follows
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not loop.last %}"
    "{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_rewrites_earlier_turns_is_refused_naming_row_field_and_message(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = THINK_STRIPPING
    thinking = [{"role": "assistant", "content": "<think>7 eights</think>56."}, *COMPLETION[1:]]
    path = tmp_path / "chats.jsonl"
    rows = [{"prompt": PROMPT, "completion": COMPLETION, "label": 1}, {"prompt": PROMPT, "completion": thinking, "label": 0}]
    path.write_text("\n".join(__import__("json").dumps(r) for r in rows))
    data = load_preference_dataset(path, kind="single")
    with pytest.raises(DataValidationError) as err:
        tokenize_dataset(data, tokenizer, max_length=None, name=str(path))
    message = str(err.value)
    assert f"{path}: row 1: field 'completions[0]': message 0:" in message
    assert "renders the conversation up to its end differently" in message


def test_truncation_inside_a_later_turn_keeps_the_mask_aligned(smollm2):  # noqa: F811
    row = {"prompt": PROMPT, "completions": [COMPLETION]}
    prompt_ids, (ids,), (mask,) = tokenize_row(row, smollm2, masks=True)
    first_turn = mask.index(0)  # the first user-turn token
    max_length = len(prompt_ids) + first_turn + 3
    tokenized, stats = tokenize_dataset(Dataset.from_list([row]), smollm2, max_length=max_length)
    assert stats["completions_truncated"] == 1
    assert tokenized["completion_ids"][0][0] == ids[: first_turn + 3]
    assert tokenized["assistant_masks"][0][0] == mask[: first_turn + 3]


def test_collated_masks_count_and_score_only_assistant_tokens():
    """Padded and packed batches give the same counts and log-probs, and the summed log-prob equals
    a direct forward summed by hand over the assistant targets only."""
    tokenizer = build_tokenizer()
    rows = Dataset.from_list([
        {"prompt": PROMPT, "completions": [COMPLETION], "labels": [1.0]},
        {"prompt": PROMPT, "completions": [COMPLETION[:1]], "labels": [0.0]},
    ])  # fmt: skip
    tokenized, _ = tokenize_dataset(rows, tokenizer, max_length=None)
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = LlamaForCausalLM(tiny_llama_config(tokenizer)).eval()
    add_fused_lm_head(model)  # the padded training path
    rows = tokenized.to_list()
    padded = PreferenceCollator(tokenizer.pad_token_id)(rows)
    packed = PreferenceCollator(tokenizer.pad_token_id, padding_free=True)(rows)
    masks = [m[0] for m in tokenized["assistant_masks"]]
    assert padded["completion_token_counts"][:, 0].tolist() == [sum(m) for m in masks]
    assert padded["completion_mask"].sum() == packed["completion_mask"].sum() == sum(map(sum, masks))
    with torch.no_grad():
        a, b = completion_logps(model, padded), completion_logps(model, packed)
        torch.testing.assert_close(a["logps_sum"], b["logps_sum"], rtol=1e-5, atol=1e-5)
        assert a["token_counts"].tolist() == [sum(m) for m in masks]
        for n, row in enumerate(rows):
            ids = row["prompt_ids"] + row["completion_ids"][0]
            logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            start = len(row["prompt_ids"])
            expected = sum(
                logits[start + j - 1, ids[start + j]] for j, m in enumerate(row["assistant_masks"][0]) if m
            )
            torch.testing.assert_close(a["logps_sum"][n], expected, rtol=1e-5, atol=1e-5)


def test_collator_refuses_a_mask_that_does_not_fit():
    with pytest.raises(ValueError, match="batch row 0: completion 0: assistant_masks needs one value per token"):
        PreferenceCollator(0)([{"prompt_ids": [1], "completion_ids": [[2, 3]], "assistant_masks": [[1]]}])
    with pytest.raises(ValueError, match=r"at least one 1; got 2 values \(sum 0\)"):
        PreferenceCollator(0)([{"prompt_ids": [1], "completion_ids": [[2, 3]], "assistant_masks": [[0, 0]]}])


def test_multi_turn_dpo_pairs_train_on_assistant_turns(tiny_model_dir, tmp_path):
    """A pair whose chosen and rejected are both multi-turn conversations trains with DPO: the
    collated token counts are the assistant tokens only, and a few steps widen the margin."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.trainers import RPOConfig, RPOTrainer

    follow_up = {"role": "user", "content": "Are you sure?"}
    rows = [
        {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": right}, follow_up, {"role": "assistant", "content": "Yes, " + right}],
         "rejected": [{"role": "assistant", "content": wrong}, follow_up, {"role": "assistant", "content": "Yes, " + wrong}]}
        for right, wrong in (("7 * 8 = 56.", "7 * 8 = 54."), ("It is 56.", "It is 45."))
    ]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = RPOConfig(output_dir=str(tmp_path), alpha=0.0, per_device_train_batch_size=2, max_steps=5, learning_rate=0.5,
                     optim="sgd", lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                     max_length=128, seed=0, disable_tqdm=True)  # fmt: skip
    trainer = RPOTrainer(model, args, Dataset.from_list(rows), None, tok)
    data = trainer.train_dataset
    batch = trainer.data_collator([data[0], data[1]])
    for b in range(2):
        masks = data[b]["assistant_masks"]
        assert batch["completion_token_counts"][b].tolist() == [sum(m) for m in masks]
        assert all(sum(m) < len(ids) for m, ids in zip(masks, data[b]["completion_ids"]))
    trainer.train()
    margins = [e["rewards/margins"] for e in trainer.state.log_history if "rewards/margins" in e]
    assert margins[-1] > margins[0] + 0.01
