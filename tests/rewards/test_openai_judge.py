"""openai_judge against a real local HTTP server speaking /v1/chat/completions."""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from align.rewards import OpenAIJudge, RewardError, load_reward, score_groups

KEY = "test-key-123"


class JudgeServer(ThreadingHTTPServer):
    """A fake judge model: the response containing "GOOD" is better than the one containing "BAD".

    Modes: "logprobs" (position-biased: P(A) = 0.9 when A is the good one, 0.4 when it is the bad
    one, given as top log-probs), "text" (answers the letter only), "always_a" (text, always "A"),
    "malformed" (like text, but answers "maybe" when the prompt holds "MALFORMED").
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "logprobs"
        self.fail_first = 0
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, code: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            fail = server.fail_first > 0
            server.fail_first -= fail
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if fail:
            return self._send(500, {"error": "overloaded"})
        user = body["messages"][-1]["content"]
        good, bad = user.find("GOOD"), user.find("BAD")
        a_is_good = good != -1 and (bad == -1 or good < bad)  # A is shown first
        letter = "A" if a_is_good else "B"
        if server.mode == "always_a":
            letter = "A"
        if server.mode == "malformed" and "MALFORMED" in user:
            letter = "maybe"
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "length"}
        if server.mode == "logprobs":
            p_a, p_b = (0.45, 0.05) if a_is_good else (0.2, 0.3)  # normalised: 0.9 and 0.4
            top = [
                {"token": "A", "logprob": math.log(p_a)},
                {"token": " B", "logprob": math.log(p_b)},
                {"token": "The", "logprob": math.log(0.4)},
            ]
            choice["logprobs"] = {
                "content": [{"token": letter, "logprob": math.log(max(p_a, p_b)), "top_logprobs": top}]
            }
        self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice]})


@pytest.fixture
def server():
    srv = JudgeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def judge_factory(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def make(**options) -> OpenAIJudge:
        options = {"model": "judge-1", "base_url": server.base_url, "backoff": 0.0, **options}
        return load_reward("openai_judge", **options)

    return make


def test_logprobs_both_orders_cancel_position_bias(server, judge_factory):
    judge = judge_factory()
    probs = judge.judge_pairs(["q1", "q2"], ["GOOD one", "BAD one"], ["BAD one", "GOOD one"])
    # ½·[P_ab(A) + 1 − P_ba(A)]: (0.9 + 1 − 0.4)/2 = 0.75, and its mirror 0.25.
    assert probs == pytest.approx([0.75, 0.25])
    assert len(server.requests) == 4
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert "q1" in body["messages"][-1]["content"] or "q2" in body["messages"][-1]["content"]


def test_logprobs_single_order(server, judge_factory):
    judge = judge_factory(both_orders=False, max_workers=1)
    assert judge.judge_pairs(["q"], ["GOOD"], ["BAD"]) == pytest.approx([0.9])
    assert len(server.requests) == 1


def test_text_only_replies(server, judge_factory):
    server.mode = "text"
    judge = judge_factory(logprobs=False)
    assert judge.judge_pairs(["q", "q"], ["GOOD", "BAD"], ["BAD", "GOOD"]) == [1.0, 0.0]
    assert "logprobs" not in server.requests[0]["body"]
    # A judge that always says "A" is pure position bias: both orders make it a coin flip.
    server.mode = "always_a"
    assert judge.judge_pairs(["q"], ["GOOD"], ["BAD"]) == [0.5]
    assert judge_factory(both_orders=False).judge_pairs(["q"], ["BAD"], ["GOOD"]) == [1.0]


def test_score_groups_with_conversational_prompt(server, judge_factory):
    prompt = [{"role": "user", "content": "Say something nice."}]
    out = score_groups(judge_factory(), [prompt], [["BAD answer", "GOOD answer"]])[0]
    np.testing.assert_allclose(out.preference, [[0.5, 0.25], [0.75, 0.5]])
    assert out.best_worst() == (1, 0)
    assert "user: Say something nice." in server.requests[0]["body"]["messages"][-1]["content"]


def test_retries_a_500_then_succeeds(server, judge_factory):
    server.fail_first = 1
    judge = judge_factory(max_retries=2, both_orders=False)
    assert judge.judge_pairs(["q"], ["GOOD"], ["BAD"]) == pytest.approx([0.9])
    assert len(server.requests) == 2


def test_gives_up_after_max_retries(server, judge_factory):
    server.fail_first = 10
    judge = judge_factory(max_retries=1, both_orders=False)
    with pytest.raises(
        RewardError, match=r"'openai_judge' failed on prompt 0 \('q'\): HTTP 500.*gave up after 2 attempts"
    ):
        judge.judge_pairs(["q"], ["GOOD"], ["BAD"])
    assert len(server.requests) == 2


def test_malformed_reply_names_the_prompt(server, judge_factory):
    server.mode = "malformed"
    judge = judge_factory(logprobs=False)
    prompts = ["First prompt", "Second prompt MALFORMED"]
    with pytest.raises(RewardError, match=r"on prompt 1 \('Second prompt MALFORMED'\).*'maybe' is neither 'A' nor 'B'"):
        judge.judge_pairs(prompts, ["GOOD", "GOOD"], ["BAD", "BAD"])
    # Through score_groups the index is the caller's prompt index, not the flattened pair index.
    groups = [["GOOD a", "BAD b", "BAD c"], ["GOOD d", "BAD e"]]
    with pytest.raises(RewardError, match=r"on prompt 1 \('Second prompt MALFORMED'\)"):
        score_groups(judge, prompts, groups)


def test_missing_api_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"environment variable 'OPENAI_API_KEY' holding the API key is not set"):
        load_reward("openai_judge", model="judge-1", base_url=server.base_url)
    with pytest.raises(ValueError, match=r"'MY_JUDGE_KEY'"):
        load_reward("openai_judge", model="judge-1", base_url=server.base_url, api_key_env="MY_JUDGE_KEY")
    monkeypatch.setenv("MY_JUDGE_KEY", "k")
    with pytest.raises(ValueError, match="needs model="):
        load_reward("openai_judge", base_url=server.base_url, api_key_env="MY_JUDGE_KEY")


def test_base_url_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    judge = load_reward("openai_judge", model="judge-1", both_orders=False)
    assert judge.url == server.base_url + "/chat/completions"
    assert judge.judge_pairs(["q"], ["GOOD"], ["BAD"]) == pytest.approx([0.9])
    assert KEY not in repr(judge)


def test_unreachable_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = load_reward(
        "openai_judge", model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.0, timeout=5
    )
    with pytest.raises(RewardError, match=r"prompt 0 .*cannot reach .*gave up after 2 attempts"):
        judge.judge_pairs(["q"], ["a"], ["b"])
