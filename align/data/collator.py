"""Collate tokenized rows (a prompt with K completions) into one forward batch of every completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from align.data.formats import PER_COMPLETION_FIELDS, PER_EXAMPLE_FIELDS
from align.data.images import image_token_ids, vision_inputs

__all__ = ["PreferenceCollator"]


@dataclass
class PreferenceCollator:
    """Turn B tokenized rows into one batch holding all N = Σ_b K_b sequences prompt_b + completion_{b,k}.

    Rows come from :func:`tokenize_dataset`: ``prompt_ids`` (non-empty), ``completion_ids`` (K_b
    non-empty lists; K may differ between rows), optional float fields and optional
    ``assistant_masks`` (K lists aligned with ``completion_ids``; 1 on the tokens the model wrote, 0
    on user/tool turns inside a multi-turn completion; absent: all ones). Sequences are ordered
    row-major, (b, k) with b outer and k inner, over the valid entries only, so the trainer scatters
    per-sequence results back with ``out[group_mask] = per_sequence``.

    Always returned (K = max_b K_b):

    - ``group_mask`` (B, K) bool, True where row b has a completion k
    - ``completion_token_counts`` (B, K) long, the trained tokens of y_bk (its assistant tokens; 0
      where masked)
    - ``labels``, ``scores``, ``win_rates``, ``returns``, ``ref_logps``: (B, K) float32, each one
      present in the rows (0 where masked)
    - ``pair_prob`` (B,) float32, if present

    Padded layout (``padding_free=False``), L = longest sequence:

    - ``input_ids`` (N, L) long, right-padded with ``pad_token_id``
    - ``attention_mask`` (N, L) long, 1 on real tokens
    - ``completion_mask`` (N, L) long, 1 exactly on trained completion tokens

    Packed layout (``padding_free=True``), T = Σ sequence lengths, no padding at all:

    - ``input_ids`` (1, T) long, the N sequences concatenated
    - ``position_ids`` (1, T) long, restarting at 0 for each sequence
    - ``completion_mask`` (1, T) long
    - ``seq_lens`` (N,) long
    - no ``attention_mask``: with ``attention_mask=None`` and ``position_ids`` given, transformers
      builds the block-diagonal causal mask from the position restarts (flash-attention and SDPA).

    Shared prompts (``share_prompt=True``, packed layout, rows without images): a row's prompt is
    packed once, before its first completion; each further completion follows as a sequence of
    its own whose ``position_ids`` start at the prompt length P (not 0), ``seq_lens`` counting its
    completion tokens only. Such a sequence continues the first P tokens of the latest sequence
    that starts at 0, which only :mod:`align.attention`'s varlen attention and
    :func:`align.logps.packed_completion_index` read that way (prefix sharing, Wang et al. 2024,
    "Accelerating Direct Preference Optimization with Prefix Sharing"): K completions of a P-token
    prompt cost P + Σ n_k tokens instead of K·P + Σ n_k.

    Rows with images (``images``, ``completion_images``; a ``processor`` is then required): sequence (b, k)
    shows ``images_b + completion_images_bk`` in placeholder order, and ``vision`` holds the model's image
    inputs for the N sequences in (b, k) order (:func:`align.data.images.vision_inputs`, e.g. LLaVA's
    ``pixel_values`` (N_img, 3, H, W)), the same for both layouts, since models fill image features into
    image tokens in row-major order. No image in the batch: no ``vision`` key. An image token marked as
    trained is an error.

    Log-probs of completion tokens come from the logits one position earlier
    (``logits[:, :-1]`` against ``input_ids[:, 1:]`` where ``completion_mask[:, 1:]``). Every
    sequence starts with a prompt token, so in the packed layout no counted target ever sits
    across a sequence boundary.
    """

    pad_token_id: int
    padding_free: bool = False
    processor: Any = None
    share_prompt: bool = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PreferenceCollator got an empty batch")
        batch_size, k_max = len(rows), max(len(row["completion_ids"]) for row in rows)
        group_mask = torch.zeros(batch_size, k_max, dtype=torch.bool)
        counts = torch.zeros(batch_size, k_max, dtype=torch.long)
        sequences, targets = [], []  # targets: per sequence, 0/1 per token (1 = trained completion token)
        shared = []  # per sequence, the length of the prompt it shares with the sequence before it (0: none)
        images = []  # per sequence, its image values in placeholder order
        image_ids = set(image_token_ids(self.processor))
        for b, row in enumerate(rows):
            prompt = list(row["prompt_ids"])
            if not prompt or not row["completion_ids"]:
                raise ValueError(f"batch row {b}: needs non-empty prompt_ids and at least one completion")
            masks = row.get("assistant_masks") or [None] * len(row["completion_ids"])
            completion_images = row.get("completion_images") or [[] for _ in row["completion_ids"]]
            for k, (completion, mask) in enumerate(zip(row["completion_ids"], masks, strict=True)):
                if not completion:
                    raise ValueError(f"batch row {b}: completion {k} has no tokens")
                mask = [1] * len(completion) if mask is None else list(mask)
                if len(mask) != len(completion) or not any(mask):
                    raise ValueError(
                        f"batch row {b}: completion {k}: assistant_masks needs one value per token and at least one 1; "
                        f"got {len(mask)} values (sum {sum(mask)}) for {len(completion)} tokens"
                    )
                if any(m and t in image_ids for m, t in zip(mask, completion)):
                    raise ValueError(f"batch row {b}: completion {k}: image placeholder tokens are marked as trained")
                group_mask[b, k], counts[b, k] = True, sum(mask)
                sequences.append(prompt + list(completion))
                shared.append(len(prompt) if k > 0 else 0)
                targets.append([0] * len(prompt) + mask)
                images.append(list(row.get("images") or []) + list(completion_images[k] or []))
        if any(images) and self.processor is None:
            b = next(b for b, row in enumerate(rows) if row.get("images") or any(row.get("completion_images") or []))
            raise ValueError(f"batch row {b} has images but the collator has no processor to make model inputs of them")

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
            if not (self.share_prompt and not any(images)):
                shared = [0] * len(sequences)
            out["input_ids"] = torch.tensor([t for s, p in zip(sequences, shared) for t in s[p:]], dtype=torch.long)[None]
            out["position_ids"] = torch.cat([torch.arange(p, n) for n, p in zip(lens, shared)])[None]
            out["completion_mask"] = torch.tensor([t for m, p in zip(targets, shared) for t in m[p:]], dtype=torch.long)[None]
            out["seq_lens"] = torch.tensor([n - p for n, p in zip(lens, shared)], dtype=torch.long)
        else:
            n_seq, width = len(sequences), max(lens)
            input_ids = torch.full((n_seq, width), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros(n_seq, width, dtype=torch.long)
            completion_mask = torch.zeros(n_seq, width, dtype=torch.long)
            for i, (seq, target) in enumerate(zip(sequences, targets)):
                input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention_mask[i, : len(seq)] = 1
                completion_mask[i, : len(seq)] = torch.tensor(target, dtype=torch.long)
            out.update(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask)
        if any(images):
            out["vision"] = vision_inputs(self.processor, images, out["input_ids"])
        return out
