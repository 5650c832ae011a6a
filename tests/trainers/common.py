"""Small shared builders for trainer tests and the multi-process script."""

from __future__ import annotations

from datasets import Dataset

QUESTIONS = [
    ("What is 7 times 8?", "7 * 8 = 56. #### 56", "7 * 8 = 54. #### 54"),
    ("Natalia sold 48 clips in April and half as many in May. How many in total?",
     "48 / 2 = 24. 48 + 24 = 72. #### 72", "48 / 2 = 24. 48 + 24 = 70. #### 70"),
    ("Weng earns $12 an hour. How much for 50 minutes?", "12 / 60 * 50 = 10. #### 10", "12 * 50 = 600. #### 600"),
    ("What is 9 plus 4?", "9 + 4 = 13. #### 13", "9 + 4 = 12. #### 12"),
    ("How many clips did she sell in May?", "She sold 24 clips. #### 24", "She sold 48 clips in May, the quick fox. #### 48"),
    ("What is 6 times 5?", "6 * 5 = 30. #### 30", "6 * 5 = 35. #### 35"),
    ("A dog has 4 legs. How many legs do 3 dogs have?", "3 * 4 = 12. #### 12", "3 + 4 = 7. #### 7"),
    ("What is 100 minus 1?", "100 - 1 = 99. #### 99", "100 - 1 = 98, the lazy dog. #### 98"),
]  # fmt: skip


def pair_dataset(n: int = 8, conversational: bool = True) -> Dataset:
    rows = []
    for i in range(n):
        question, chosen, rejected = QUESTIONS[i % len(QUESTIONS)]
        if conversational:
            rows.append({
                "prompt": [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            })  # fmt: skip
        else:
            rows.append({"prompt": question, "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(rows)
