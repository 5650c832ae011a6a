"""A multi-step arithmetic task whose every step is checkable: the implicit PRM's default task.

A problem is a start value and two to four operations, "Start with 7. Multiply by 3, add 2, then
subtract 5.", with every intermediate value between 1 and ``max_value``. A row is::

    {"prompt": [...two worked examples as chat turns..., {"role": "user", "content": "Start with 7. ..."}],
     "answer": "18",
     "solution": "7 * 3 = 21\\n21 + 2 = 23\\n23 - 5 = 18\\n#### 18",   # one equation per line, then #### N
     "steps": [{"a": 7, "op": "*", "b": 3, "result": 21}, ...]}       # the gold chain

The prompt shows two solved problems as earlier user/assistant turns (:data:`MULTISTEP_EXAMPLES`):
SmolLM2-135M-Instruct then answers in the same format, one equation a line, and ends its turn
after ``#### N``, so its steps can be read back and checked. Train and test are disjoint by problem
(a hash of the canonical problem fixes its split, as in :mod:`align.data.tasks`); the seed picks
which problems are drawn. ``builtin:multistep`` (:func:`builtin_multistep`) is 512 train / 128 test
problems with seed 0; ``data/multistep_task.py`` writes them as JSONL and measures the built-in
model on them.

Steps (the rule a PRM scorer must split by too, :func:`step_spans`): the completion is cut at every
``separator`` (``"\\n"`` for this task: one equation a line); a piece that is empty after
``str.strip()`` is dropped; if the last remaining piece starts with ``####`` it is the answer line,
not a step. Each step is judged by :func:`check_solution` (rules in its docstring).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from align.data.tasks import _MARKED, _NUMBER, _canonical_split

__all__ = [
    "MULTISTEP_EXAMPLES",
    "StepCheck",
    "builtin_multistep",
    "check_solution",
    "multistep_problems",
    "step_spans",
]

Problem = tuple[int, tuple[tuple[str, int], ...]]  # (start, ((op, operand), ...))

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_WORDS = {"+": "add {b}", "-": "subtract {b}", "*": "multiply by {b}"}
# Operand ranges (inclusive). Small on purpose: even here SmolLM2-135M's sampled steps are right about
# 52% of the time for a first addition (3 + 9 = 22), 76% for a first subtraction and 21% for a second
# one (16 - 5 = 8), so larger numbers would leave it almost never right.
OPERANDS = {"+": (2, 9), "-": (2, 9), "*": (2, 5)}
START = (2, 9)
MAX_VALUE = 50
# Problem i has N_OPS[i % 6] operations: two thirds two-operation chains, a sixth three, a sixth four.
# SmolLM2-135M-Instruct's samples are right on about 40% of the two-operation problems but on under 10%
# of the longer ones (it skips or merges an operation; more examples, one instruction a line or numbered
# steps did not help), and only the short ones give prompts with both a right and a wrong sample; with
# half two-operation chains its sample accuracy was 23%, near the 20% floor the PRM task asks for.
N_OPS = (2, 2, 2, 2, 3, 4)

# The two worked examples every prompt starts with (as earlier chat turns). Their numbers lie outside
# START / OPERANDS, so no drawn problem can equal one; drawing also skips them explicitly.
MULTISTEP_EXAMPLES: tuple[Problem, ...] = ((7, (("*", 3), ("+", 12))), (15, (("-", 6), ("+", 4), ("*", 2))))


def _chain(problem: Problem) -> list[dict]:
    value, steps = problem[0], []
    for op, b in problem[1]:
        result = _OPS[op](value, b)
        steps.append({"a": value, "op": op, "b": b, "result": result})
        value = result
    return steps


def _question(problem: Problem) -> str:
    words = [_WORDS[op].format(b=b) for op, b in problem[1]]
    text = ", ".join(words[:-1]) + ", then " + words[-1]
    return f"Start with {problem[0]}. {text[0].upper()}{text[1:]}."


def _solution(problem: Problem) -> str:
    steps = _chain(problem)
    return "\n".join(f"{s['a']} {s['op']} {s['b']} = {s['result']}" for s in steps) + f"\n#### {steps[-1]['result']}"


def _prompt(problem: Problem) -> list[dict]:
    turns = []
    for example in MULTISTEP_EXAMPLES:
        turns += [{"role": "user", "content": _question(example)}, {"role": "assistant", "content": _solution(example)}]
    return turns + [{"role": "user", "content": _question(problem)}]


def _row(problem: Problem) -> dict:
    steps = _chain(problem)
    answer = str(steps[-1]["result"])
    return {"prompt": _prompt(problem), "answer": answer, "solution": _solution(problem), "steps": steps}


def _split_of(problem: Problem, test_percent: int) -> str:
    """``"test"`` for about ``test_percent``% of problems, fixed by a hash of the problem ("7*3+2-5")."""
    key = f"{problem[0]}" + "".join(f"{op}{b}" for op, b in problem[1])
    digest = hashlib.sha256(key.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < test_percent else "train"


def _draw_problem(rng: random.Random, n_ops: int, max_value: int) -> Problem:
    """A start value, then ``n_ops`` times: an operation among those with a valid operand, then the operand."""
    start = value = rng.randint(*START)
    ops = []
    for _ in range(n_ops):
        valid = {
            op: [b for b in range(lo, hi + 1) if 1 <= _OPS[op](value, b) <= max_value]
            for op, (lo, hi) in OPERANDS.items()
        }
        # Choosing the operation first keeps "-" and "*" as likely as "+" wherever they fit.
        op = rng.choice([op for op, bs in valid.items() if bs])
        b = rng.choice(valid[op])
        ops.append((op, b))
        value = _OPS[op](value, b)
    return start, tuple(ops)


def multistep_problems(
    n: int,
    *,
    seed: int,
    split: str = "train",
    n_ops: Sequence[int] = N_OPS,
    max_value: int = MAX_VALUE,
    test_percent: int = 25,
) -> list[dict]:
    """``n`` distinct multi-step problems of ``split``, deterministic in ``seed``.

    Problem ``i`` has ``n_ops[i % len(n_ops)]`` operations (the defaults: two thirds two-operation
    chains), drawn with ``random.Random(f"{seed}:{i}:{attempt}")`` until one falls in ``split``, is
    new, and is not a worked example; then the list is shuffled with ``seed``. Start values and
    operands come from ``START`` and ``OPERANDS``; every intermediate value lies in ``[1, max_value]``
    (no zero, after which every product is 0). A problem's split depends only on the problem and
    ``test_percent``, so train and test never share one, whatever the seeds. Rows: ``prompt``,
    ``answer``, ``solution``, ``steps`` (module docstring).
    """
    split = _canonical_split(split)
    if not n_ops or any(k < 1 for k in n_ops):
        raise ValueError(f"n_ops must be counts of operations >= 1, got {tuple(n_ops)}")
    chosen: list[Problem] = []
    seen: set[Problem] = set(MULTISTEP_EXAMPLES)
    for i in range(n):
        for attempt in range(1000):
            rng = random.Random(f"{seed}:{i}:{attempt}")
            problem = _draw_problem(rng, n_ops[i % len(n_ops)], max_value)
            if problem not in seen and _split_of(problem, test_percent) == split:
                break
        else:
            raise ValueError(f"found no new {split} problem with {n_ops[i % len(n_ops)]} operations in 1000 draws")
        seen.add(problem)
        chosen.append(problem)
    random.Random(f"{seed}:order").shuffle(chosen)
    return [_row(p) for p in chosen]


def builtin_multistep(split: str = "train") -> list[dict]:
    """The ``builtin:multistep`` problems: 512 train / 128 test, seed 0, the default mix."""
    split = _canonical_split(split)
    return multistep_problems(512 if split == "train" else 128, seed=0, split=split)


# -- reading a solution back, step by step -----------------------------------------------------------

# "lhs = rhs" with one or more operations on the left: "21 + 2 = 23", "3x4=12", "7 + 5 + 4 = 16" (a chain).
_EQUATION = re.compile(r"(\d+(?:\s*[-+*×x−–]\s*\d+)+)\s*=\s*(-?\d+(?:\.\d+)?)")
_TERM = re.compile(r"\d+|[-+*×x−–]")
_SYMBOL = {"×": "*", "x": "*", "−": "-", "–": "-"}


@dataclass(frozen=True)
class StepCheck:
    """What :func:`check_solution` found: the steps, each right or wrong, the first wrong one, the answer.

    ``first_wrong`` is None when every step is right, also when the solution is still wrong (it
    stopped before the last operation, or its ``#### N`` line or its prose states a wrong number):
    then the error is in no step. ``equations`` counts the equations read (the operations done).
    """

    steps: list[str]
    step_correct: list[bool]
    first_wrong: int | None
    final_correct: bool
    equations: int


def step_spans(text: str, separator: str = "\n") -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the steps of ``text``, so that ``text[start:end]`` is a step.

    The rule (module docstring): cut ``text`` at every ``separator``; strip each piece of surrounding
    whitespace and drop it if nothing is left; drop the last piece if it starts with ``####`` (the
    answer line). A text without ``separator`` is one step; a ``####`` line that is not the last piece
    is a step. A PRM scorer that assigns tokens to steps by these spans splits exactly as the checker.
    """
    if not separator:
        raise ValueError("separator must be a non-empty string")
    spans, start = [], 0
    for piece in text.split(separator):
        stripped = piece.strip()
        if stripped:
            begin = start + piece.index(stripped)
            spans.append((begin, begin + len(stripped)))
        start += len(piece) + len(separator)
    if spans and text[spans[-1][0] : spans[-1][1]].startswith("####"):
        spans.pop()
    return spans


def _final_answer(text: str) -> str | None:
    """The number after the first ``####`` (as the GSM8K verifier that labels outcomes reads it), else the last one."""
    marked = _MARKED.search(text)
    if marked:
        return marked.group(1)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def check_solution(row: dict, completion: str, separator: str = "\n") -> StepCheck:
    """Split ``completion`` into steps (:func:`step_spans`) and judge each against ``row["steps"]``.

    The checker follows the chain as written: a running value ``v`` (the start value, then the
    stated result of the last equation read) and the index ``k`` of the operation due next. Every
    equation ``lhs = z`` in a step is read in order:

    - it is right iff ``lhs`` is one operation ``x op y`` that is operation ``k`` applied to ``v``
      (``x = v`` and ``y`` = its operand; ``y op x`` too for + and *), and ``z = x op y``;
    - a chain of several operations ("7 + 5 + 4 = 16") is wrong: the task asks for one a line;
    - an equation after the last operation (``k`` past the end) is wrong: an extra step;
    - a skipped operation shows as an equation that is not operation ``k``, so it is wrong there;
    - either way ``v`` becomes ``z`` and ``k`` moves on by one, so later steps are judged given
      the previous step's result (``step_correct`` after the first error says whether each step
      follows from the one before, which is what a step reward is about).

    A step is right iff every equation in it is right. A step with no equation (prose, "Solution:")
    is not checked and counts as right; it neither moves the chain nor breaks it. So
    ``first_wrong`` is the index of the first step holding a wrong equation, or None: then every
    equation was right, and a wrong solution stopped early (``equations < len(row["steps"])``) or
    stated a wrong number outside the equations (the ``#### N`` line, prose). ``final_correct``: the
    number after the first ``####``, else the last number of ``completion``, equals ``row["answer"]``.
    """
    gold = row["steps"]
    value, k = gold[0]["a"], 0
    steps = [completion[s:e] for s, e in step_spans(completion, separator)]
    correct = []
    for step in steps:
        right = True
        for match in _EQUATION.finditer(step):
            terms = [_SYMBOL.get(t, t) for t in _TERM.findall(match.group(1))]
            z = float(match.group(2))
            if len(terms) == 3 and k < len(gold):
                (x, op, y), due = (int(terms[0]), terms[1], int(terms[2])), gold[k]
                operands_ok = (x, y) == (value, due["b"]) or (op in "+*" and (y, x) == (value, due["b"]))
                right &= op == due["op"] and operands_ok and z == _OPS[op](x, y)
            else:
                right = False
            value, k = z, k + 1
        correct.append(right)
    first_wrong = next((i for i, ok in enumerate(correct) if not ok), None)
    found = _final_answer(completion)
    final = found is not None and abs(float(found.replace(",", "")) - float(row["answer"])) < 1e-9
    return StepCheck(steps, correct, first_wrong, final, k)

