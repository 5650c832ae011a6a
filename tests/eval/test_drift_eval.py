"""eval/drift.py: the same probes under several checkpoints (model folders and a LoRA adapter)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from align.callbacks import measure_pairs
from align.data import prepare_preference_dataset, write_jsonl
from tests.scripts import load_script
from tests.tiny import build_tiny_model_dir
from tests.trainers.common import pair_dataset

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


drift = load_script("eval/drift.py")


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, tmp_path_factory):
    """(base folder, a differently seeded folder, a LoRA adapter on base saved without a tokenizer, the in-memory adapter model)."""
    from peft import LoraConfig, get_peft_model

    other = build_tiny_model_dir(tmp_path_factory.mktemp("tiny-seed1"), seed=1)
    adapter_dir = tmp_path_factory.mktemp("tiny-lora")
    torch.manual_seed(3)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    return str(tiny_model_dir), str(other), str(adapter_dir), peft_model.eval()


@pytest.fixture(scope="module")
def probes(tiny_tokenizer):
    rows, _ = prepare_preference_dataset(pair_dataset(6), tiny_tokenizer, kind="pair", max_length=128)
    return list(rows)


def measure(model, rows, tok):
    return measure_pairs(model, rows, pad_token_id=tok.pad_token_id, batch_size=4)


def test_records_are_drift_against_the_first_checkpoint(checkpoints, probes, tiny_tokenizer):
    base, other, adapter, peft_model = checkpoints
    records = drift.drift_over_checkpoints([base, other, adapter], probes, tiny_tokenizer, beta=0.5, batch_size=4)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["checkpoint"] for r in records] == [base, other, adapter]
    assert records[2]["label"] == Path(adapter).name

    first = records[0]
    for key in ("chosen_change", "rejected_change", "margin_change", "rewards/margins", "displacement_rate"):
        assert first[key] == 0.0, key

    m_base = measure(AutoModelForCausalLM.from_pretrained(base), probes, tiny_tokenizer)
    m_other = measure(AutoModelForCausalLM.from_pretrained(other), probes, tiny_tokenizer)
    with torch.no_grad():
        m_adapter = measure(peft_model, probes, tiny_tokenizer)  # unmerged, in memory: independent of the loader
    assert first["chosen_logps"] == pytest.approx(m_base.chosen_logps.mean().item(), rel=1e-6)
    for record, m in ((records[1], m_other), (records[2], m_adapter)):
        assert record["chosen_logps"] == pytest.approx(m.chosen_logps.mean().item(), rel=1e-5)
        assert record["rejected_logps"] == pytest.approx(m.rejected_logps.mean().item(), rel=1e-5)
        change = (m.chosen_logps - m_base.chosen_logps).mean().item()
        assert record["chosen_change"] == pytest.approx(change, rel=1e-4, abs=1e-4)
        assert abs(record["chosen_change"]) > 1e-3  # the checkpoints really differ
        assert record["rewards/chosen"] == pytest.approx(0.5 * record["chosen_change"])
        # CHES is the baseline's, whatever checkpoint is measured
        assert record["ches"] == pytest.approx(m_base.ches.mean().item(), rel=1e-6)


def test_cli_writes_json_table_and_png(checkpoints, tmp_path, capsys):
    base, other, adapter, _ = checkpoints
    data = write_jsonl(pair_dataset(6).to_list(), tmp_path / "pairs.jsonl")
    out = tmp_path / "drift"
    records = drift.main([
        "--checkpoints", base, other, adapter, "--labels", "base", "seed1", "lora",
        "--dataset", str(data), "--num_probes", "4", "--max_length", "128", "--batch_size", "2",
        "--entanglement_pairs", "2", "--output_dir", str(out),
    ])  # fmt: skip
    saved = json.loads((out / "drift.json").read_text())
    assert saved["records"] == records
    assert saved["meta"]["probes"] == 4 and "--num_probes 4" in saved["meta"]["command"]
    assert [r["label"] for r in records] == ["base", "seed1", "lora"]
    assert all(-1.0 <= r["grad_cosine"] <= 1.0 for r in records)
    table = (out / "drift.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3  # header + one per checkpoint
    assert "grad cosine" in rows[0] and "displaced" in rows[0]
    assert rows[2].startswith("| 1 | seed1 | ") and f"{records[1]['chosen_logps_per_token']:.4f}" in rows[2]
    assert (out / "drift.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    assert "| 2 | lora |" in capsys.readouterr().out


def test_an_adapter_without_tokenizer_files_uses_its_base_models_tokenizer(checkpoints, tiny_tokenizer):
    _, _, adapter, _ = checkpoints
    assert not (Path(adapter) / "tokenizer.json").exists()
    tok = drift.load_checkpoint_tokenizer(adapter)
    text = "What is 7 times 8? #### 56"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"] and tok.pad_token == tiny_tokenizer.pad_token


def test_a_missing_checkpoint_is_named_before_anything_is_measured(checkpoints, probes, tiny_tokenizer, tmp_path, capsys):
    base = checkpoints[0]
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint.*no such folder"):
        drift.drift_over_checkpoints([base, missing], probes, tiny_tokenizer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*neither config.json"):
        drift.drift_over_checkpoints([base, str(tmp_path / "empty")], probes, tiny_tokenizer)
    with pytest.raises(SystemExit):
        drift.main(["--checkpoints", base, missing, "--output_dir", str(tmp_path / "out")])
    assert missing in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
