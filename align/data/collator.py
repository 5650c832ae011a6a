"""Collate tokenized rows (a prompt with K completions) into one forward batch of every completion."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align.data.formats import PER_COMPLETION_FIELDS, PER_EXAMPLE_FIELDS

__all__ = ["PreferenceCollator"]


@dataclass
class PreferenceCollator:
    """Turn B tokenized rows into one batch holding all N = Σ_b K_b sequences prompt_b + completion_{b,k}.

    Rows come from :func:`tokenize_dataset`: ``prompt_ids`` (non-empty), ``completion_ids`` (K_b
    non-empty lists; K may differ between rows) and optional float fields. Sequences are ordered
    row-major, (b, k) with b outer and k inner, over the valid entries only, so the trainer scatters
    per-sequence results back with ``out[group_mask] = per_sequence``.

    Always returned (K = max_b K_b):

    - ``group_mask`` (B, K) bool, True where row b has a completion k
    - ``completion_token_counts`` (B, K) long, |y_bk| (0 where masked)
    - ``labels``, ``scores``, ``win_rates``, ``returns``, ``ref_logps``: (B, K) float32, each one
      present in the rows (0 where masked)
    - ``pair_prob`` (B,) float32, if present

    Padded layout (``padding_free=False``), L = longest sequence:

    - ``input_ids`` (N, L) long, right-padded with ``pad_token_id``
    - ``attention_mask`` (N, L) long, 1 on real tokens
    - ``completion_mask`` (N, L) long, 1 exactly on completion tokens

    Packed layout (``padding_free=True``), T = Σ sequence lengths, no padding at all:

    - ``input_ids`` (1, T) long, the N sequences concatenated
    - ``position_ids`` (1, T) long, restarting at 0 for each sequence
    - ``completion_mask`` (1, T) long
    - ``seq_lens`` (N,) long
    - no ``attention_mask``: with ``attention_mask=None`` and ``position_ids`` given, transformers
      builds the block-diagonal causal mask from the position restarts (flash-attention and SDPA).

    Log-probs of completion tokens come from the logits one position earlier
    (``logits[:, :-1]`` against ``input_ids[:, 1:]`` where ``completion_mask[:, 1:]``). Every
    sequence starts with a prompt token, so in the packed layout no counted target ever sits
    across a sequence boundary.
    """

    pad_token_id: int
    padding_free: bool = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PreferenceCollator got an empty batch")
        batch_size, k_max = len(rows), max(len(row["completion_ids"]) for row in rows)
        group_mask = torch.zeros(batch_size, k_max, dtype=torch.bool)
        counts = torch.zeros(batch_size, k_max, dtype=torch.long)
        sequences, prompt_lens = [], []
        for b, row in enumerate(rows):
            prompt = list(row["prompt_ids"])
            if not prompt or not row["completion_ids"]:
                raise ValueError(f"batch row {b}: needs non-empty prompt_ids and at least one completion")
            for k, completion in enumerate(row["completion_ids"]):
                if not completion:
                    raise ValueError(f"batch row {b}: completion {k} has no tokens")
                group_mask[b, k], counts[b, k] = True, len(completion)
                sequences.append(prompt + list(completion))
                prompt_lens.append(len(prompt))

        out = {"group_mask": group_mask, "completion_token_counts": counts}
        for name in PER_COMPLETION_FIELDS:
            if name in rows[0]:
                values = torch.zeros(batch_size, k_max, dtype=torch.float32)
                for b, row in enumerate(rows):
                    if len(row[name]) != len(row["completion_ids"]):
                        raise ValueError(
                            f"batch row {b}: {name} has {len(row[name])} values for "
                            f"{len(row['completion_ids'])} completions"
                        )
                    values[b, : len(row[name])] = torch.tensor(row[name], dtype=torch.float32)
                out[name] = values
        for name in PER_EXAMPLE_FIELDS:
            if name in rows[0]:
                out[name] = torch.tensor([row[name] for row in rows], dtype=torch.float32)

        lens = [len(s) for s in sequences]
        if self.padding_free:
            out["input_ids"] = torch.tensor([t for s in sequences for t in s], dtype=torch.long)[None]
            out["position_ids"] = torch.cat([torch.arange(n) for n in lens])[None]
            out["completion_mask"] = torch.cat([(torch.arange(n) >= p).long() for n, p in zip(lens, prompt_lens)])[None]
            out["seq_lens"] = torch.tensor(lens, dtype=torch.long)
        else:
            n_seq, width = len(sequences), max(lens)
            input_ids = torch.full((n_seq, width), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros(n_seq, width, dtype=torch.long)
            completion_mask = torch.zeros(n_seq, width, dtype=torch.long)
            for i, (seq, p) in enumerate(zip(sequences, prompt_lens)):
                input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention_mask[i, : len(seq)] = 1
                completion_mask[i, p : len(seq)] = 1
            out.update(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask)
        return out
