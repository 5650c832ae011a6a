"""An LLM-as-a-judge over any OpenAI-compatible chat-completions server (``openai_judge``).

The judge is shown the prompt and two responses, A and B, and asked to answer with one letter.
From one request (response a shown as A, b as B):

- with token log-probabilities (requested as ``logprobs=true, top_logprobs=5``; OpenAI, vLLM and
  others return them): P(A ≻ B) = p_A / (p_A + p_B), where p_X = Σ exp(logprob) over the top
  first-token candidates that read "X" once stripped of spaces (a letter missing from the top 5
  counts 0). If neither letter is among them, the answer text decides as below;
- otherwise from the answer text: "A" → 1.0, "B" → 0.0; any other answer is a :class:`RewardError`.

With ``both_orders=True`` (the default) every pair is also asked with the responses swapped, and

    P(a ≻ b) = ½ · [ P_{a,b}(A ≻ B) + 1 − P_{b,a}(A ≻ B) ],

which cancels a constant preference for a position (LLM judges tend to favour the first response).

HTTP: ``POST {base_url}/chat/completions`` with the key from the ``api_key_env`` environment
variable as a Bearer token (stdlib ``urllib``, no SDK). Connection errors, timeouts, HTTP 429 and
5xx are retried ``max_retries`` times, waiting ``backoff · 2^attempt`` seconds; other HTTP errors
and malformed replies fail at once.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from align.rewards.base import Prompt, RewardError
from align.rewards.registry import register_reward

__all__ = ["JudgeFailure", "OpenAIJudge", "YesNoJudge", "render_prompt"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SYSTEM_PROMPT = (
    "You are a careful, impartial judge. You compare two responses to the same instruction and "
    "decide which one is better: more helpful, correct, honest and clear. Length is not quality."
)
USER_TEMPLATE = (
    "[Instruction]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\n"
    "Which response is better? Answer with a single letter: A or B."
)


class JudgeFailure(Exception):
    """One request failed for good (after retries, or not retryable, or an unusable reply)."""


class _Retryable(Exception):
    pass


@register_reward("openai_judge")
class OpenAIJudge:
    """Pairwise LLM judge over an OpenAI-compatible server; see the module docstring for P(A ≻ B).

    Options: ``model`` (required), ``base_url`` (default ``$OPENAI_BASE_URL``, else OpenAI's),
    ``api_key_env`` (the environment variable holding the key), ``temperature``, ``timeout``
    (seconds per request), ``max_retries``, ``backoff`` (seconds), ``both_orders``, ``logprobs``
    (False for servers that reject the logprobs fields), ``max_tokens``, ``max_workers``
    (concurrent requests), ``system_prompt``.
    """

    name = "openai_judge"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        both_orders: bool = True,
        logprobs: bool = True,
        max_tokens: int = 1,
        max_workers: int = 4,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        if not model:
            raise ValueError("openai_judge needs model=<the judge model's name on the server>")
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(
                f"openai_judge: the environment variable {api_key_env!r} holding the API key is not set "
                f"(set it, or pass api_key_env= naming the variable that holds the key)"
            )
        if max_retries < 0 or max_workers < 1 or timeout <= 0 or backoff < 0:
            raise ValueError("openai_judge: need max_retries >= 0, max_workers >= 1, timeout > 0, backoff >= 0")
        self.model = model
        self.url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self._key = key
        self.temperature, self.timeout, self.max_retries, self.backoff = temperature, timeout, max_retries, backoff
        self.both_orders, self.logprobs, self.max_tokens, self.max_workers = (
            both_orders,
            logprobs,
            max_tokens,
            max_workers,
        )
        self.system_prompt = system_prompt

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIJudge(model={self.model!r}, url={self.url!r}, both_orders={self.both_orders})"

    # -- the protocol ------------------------------------------------------------------------------

    def judge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        jobs = [(i, p, a, b) for i, (p, a, b) in enumerate(zip(prompts, completions_a, completions_b, strict=True))]
        orders = list(jobs)
        if self.both_orders:
            orders += [(i, p, b, a) for i, p, a, b in jobs]
        probs = self._run(orders)
        if not self.both_orders:
            return probs
        n = len(jobs)
        return [0.5 * (probs[i] + 1.0 - probs[n + i]) for i in range(n)]

    def _run(self, requests: list[tuple[int, Prompt, str, str]]) -> list[float]:
        """P(A ≻ B) of each (index, prompt, A, B); the first failure (in request order) is raised."""
        if self.max_workers == 1 or len(requests) <= 1:
            return [self._checked(*request) for request in requests]
        executor = ThreadPoolExecutor(max_workers=self.max_workers)
        try:
            futures = [executor.submit(self._checked, *request) for request in requests]
            return [future.result() for future in futures]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _checked(self, index: int, prompt: Prompt, a: str, b: str) -> float:
        try:
            return self._prob_a(prompt, a, b)
        except JudgeFailure as err:
            raise RewardError(self.name, str(err), index=index, prompt=prompt) from err

    # -- one request -------------------------------------------------------------------------------

    def _prob_a(self, prompt: Prompt, a: str, b: str) -> float:
        user = USER_TEMPLATE.format(prompt=render_prompt(prompt), a=a, b=b)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return _prob_from_reply(self.post(body))

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat-completions request (``body``) to the server, retried with exponential backoff on
        connection errors, 429 and 5xx; the parsed reply, or :class:`JudgeFailure` once it gives up.
        Other judges on the same server (``openai_safety_judge``) send their requests through it."""
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"}
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(data, headers)
            except _Retryable as err:
                if attempt == self.max_retries:
                    raise JudgeFailure(f"{err} (gave up after {self.max_retries + 1} attempts)") from err
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _post_once(self, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:  # before URLError: HTTPError is a subclass
            detail = err.read()[:300].decode("utf-8", "replace")
            message = f"HTTP {err.code} from {self.url}: {detail}"
            if err.code == 429 or err.code >= 500:
                raise _Retryable(message) from err
            raise JudgeFailure(message) from err
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as err:
            raise _Retryable(f"cannot reach {self.url}: {type(err).__name__}: {err}") from err
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise JudgeFailure(f"reply is not JSON: {raw[:200]!r}") from err


class YesNoJudge:
    """Base of the judges that ask an OpenAI-compatible server one yes/no question per completion
    (``openai_safety_judge``, ``openai_vision_judge``): the checked options, :class:`OpenAIJudge` as the
    transport (URL, key, retries, timeouts), completions judged in parallel in order, a failure raised
    as the plug-in's ``RewardError`` naming the prompt, and the reply's first word."""

    name = ""

    def __init__(self, model: str | None, *, base_url: str | None, api_key_env: str, temperature: float,
                 timeout: float, max_retries: int, backoff: float, max_tokens: int, max_workers: int) -> None:  # fmt: skip
        if not model:
            raise ValueError(f"{self.name} needs model=<the judge model's name on the server>")
        if not os.environ.get(api_key_env):
            raise ValueError(
                f"{self.name}: the environment variable {api_key_env!r} holding the API key is not set "
                f"(set it, or pass api_key_env= naming the variable that holds the key)"
            )
        if max_tokens < 1:
            raise ValueError(f"{self.name}: max_tokens must be >= 1, got {max_tokens}")
        self._client = OpenAIJudge(model, base_url=base_url, api_key_env=api_key_env, timeout=timeout,
                                   max_retries=max_retries, backoff=backoff, max_workers=max_workers)  # fmt: skip
        self.model, self.url = model, self._client.url
        self.temperature, self.max_tokens, self.max_workers = temperature, max_tokens, max_workers

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self.model!r}, url={self.url!r})"

    def _judge_each(self, judge_one, prompts, *columns) -> list:
        """``judge_one(reply, ...)`` of the server's reply to ``self.request(prompt, *row)`` for every row,
        in parallel, in order; the first failure is raised as a RewardError naming its prompt."""

        def checked(index, prompt, *row):
            try:
                return judge_one(self._client.post(self.request(prompt, *row)))
            except JudgeFailure as err:
                raise RewardError(self.name, str(err), index=index, prompt=prompt) from err

        pool = ThreadPoolExecutor(max_workers=self.max_workers)
        try:  # map yields in order and raises the first failure in order
            return list(pool.map(checked, range(len(prompts)), prompts, *columns))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def render_prompt(prompt: Prompt) -> str:
    """A prompt as judge-readable text: a string as it is, a conversation as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def _prob_from_reply(reply: dict[str, Any]) -> float:
    """P(A ≻ B) from a chat-completions reply (see the module docstring)."""
    try:
        choice = reply["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise JudgeFailure(f"malformed reply (no choices[0].message): {json.dumps(reply)[:200]}") from None
    from_logprobs = _prob_from_logprobs(choice.get("logprobs"))
    if from_logprobs is not None:
        return from_logprobs
    letter = content.strip().lstrip("*[(\"' ").rstrip(")]*.\"' \n")
    if letter in ("A", "B"):
        return 1.0 if letter == "A" else 0.0
    raise JudgeFailure(f"the judge's answer {content[:80]!r} is neither 'A' nor 'B'")


def _prob_from_logprobs(logprobs: Any) -> float | None:
    """p_A / (p_A + p_B) from the first token's top log-probs, or None when unavailable."""
    try:
        candidates = logprobs["content"][0]["top_logprobs"]
        mass = {"A": 0.0, "B": 0.0}
        for candidate in candidates:
            token = str(candidate["token"]).strip()
            if token in mass:
                mass[token] += math.exp(float(candidate["logprob"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None
