"""The visual judges: the synthetic task's answer checker on hand-written answers, and
openai_vision_judge against a real local HTTP server speaking /v1/chat/completions."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from align.data.boxes import BOX_PROMPT
from align.data.images import fill_images
from align.rewards import OpenAIVisionJudge, RewardError, checked_scores, checked_verdicts, load_reward
from align.data.boxes import box_question
from tests.rewards.test_openai_judge import KEY, Handler
from tests.rewards.test_openai_judge import server as judge_server  # noqa: F401 (a fixture)

QUESTION = "Which pattern is inside the red box?"


def test_visual_answer_checker():
    checker = load_reward("visual_answer_checker")
    completions = ["vertical", "Vertical.", "**checkerboard**", "It is vertical", "horizontally", ""]
    references = ["vertical", "vertical", "checkerboard", "vertical", "horizontal", "vertical"]
    assert checker.verify(["q"] * 6, completions, references) == [True, True, True, False, False, False]
    with pytest.raises(RewardError, match=r"'visual_answer_checker' failed on prompt 1 .*the answer word, got ''"):
        checked_verdicts(checker, ["q", "q"], ["vertical", "vertical"], ["vertical", ""])


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def prompt_with(image) -> list[dict]:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION + BOX_PROMPT}]}]
    return fill_images(prompt, [image])


class VisionHandler(Handler):
    """A fake vision judge model: the answer is right when the image is red and the answer says
    "horizontal", or the image is blue and it says "vertical" (it reads the image it was sent).

    The answer is spelled as ``server.style`` says; an answer holding "MALFORMED" gets "maybe", one
    holding "NOCHOICES" a reply without choices."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            fail = server.fail_first > 0
            server.fail_first -= fail
        if fail:
            return self._send(500, {"error": "overloaded"})
        image_part, text_part = body["messages"][-1]["content"]
        url = image_part["image_url"]["url"]
        pixel = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))[0, 0]
        answer = text_part["text"].split("Answer:", 1)[1].split("Is the answer right?", 1)[0]
        colour = {(255, 0, 0): "red", (0, 0, 255): "blue"}[tuple(int(v) for v in pixel)]
        right = (colour, answer) in {("red", "horizontal"), ("blue", "vertical")}
        reply = server.style[right]
        if "MALFORMED" in answer:
            reply = "maybe"
        if "NOCHOICES" in answer:
            return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice]})


@pytest.fixture
def server(judge_server):
    """openai_judge's test server (a thread), answering as a vision judge."""
    judge_server.RequestHandlerClass = VisionHandler
    judge_server.style = {True: "Yes", False: "No"}
    return judge_server


@pytest.fixture
def make_judge(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    defaults = {"model": "vision-1", "base_url": server.base_url, "backoff": 0.0}
    return lambda **options: load_reward("openai_vision_judge", **{**defaults, **options})


def test_scores_from_the_original_image_and_the_request(server, make_judge, tmp_path):
    red_path = tmp_path / "red.png"
    red_path.write_bytes(png_bytes((255, 0, 0)))
    red, blue = prompt_with(str(red_path)), prompt_with(png_bytes((0, 0, 255)))  # a path and raw bytes
    judge = make_judge()
    scores = judge.score([red, red, blue, blue], ["horizontal", "vertical", "horizontal", "vertical"])
    assert scores == [0.0, -1.0, -1.0, 0.0]  # -(false claims), one claim per answer
    assert len(server.requests) == 4
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {KEY}"
    body = judge.request(red, "horizontal")
    assert body["model"] == "vision-1" and body["temperature"] == 0 and body["max_tokens"] == 8
    (message,) = body["messages"]
    image_part, text_part = message["content"]
    assert message["role"] == "user" and image_part["type"] == "image_url"
    prefix, data = image_part["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    assert sent.shape == (6, 8, 3) and (sent == (255, 0, 0)).all()  # the original image, as PNG
    # the official direct check, joined with no spaces, on the question without the box request
    expected = "Question:" + QUESTION + "Answer:horizontal" + "Is the answer right? Please answer yes or no."
    assert text_part == {"type": "text", "text": expected}
    assert any(r["body"] == body for r in server.requests)


def test_box_question():
    assert box_question(prompt_with(png_bytes((255, 0, 0)))) == QUESTION
    assert box_question(QUESTION + BOX_PROMPT) == QUESTION
    assert box_question([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]) == "Why?"


@pytest.mark.parametrize("right, wrong", [("**YES**", "no."), ("Yes, it is right.", "No"), (" yes", "\nNO!")])
def test_answer_spellings(server, make_judge, right, wrong):
    server.style = {True: right, False: wrong}
    red = prompt_with(png_bytes((255, 0, 0)))
    assert make_judge(max_workers=1).score([red, red], ["horizontal", "vertical"]) == [0.0, -1.0]


def test_malformed_replies_and_imageless_prompts_name_the_prompt(server, make_judge):
    judge = make_judge()
    red = prompt_with(png_bytes((255, 0, 0)))
    bad = r"'openai_vision_judge' failed on prompt 1 \(.*\): the judge's answer 'maybe' is neither 'yes' \(right\)"
    with pytest.raises(RewardError, match=bad):
        judge.score([red, red, red], ["horizontal", "MALFORMED", "horizontal"])
    with pytest.raises(RewardError, match=r"on prompt 2 \(.*\): malformed reply \(no choices\[0\]"):
        judge.score([red, red, red], ["horizontal", "vertical", "NOCHOICES"])
    unfilled = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    with pytest.raises(RewardError, match=r"on prompt 4 .*the prompt carries no image: its image parts need"):
        checked_scores(judge, [red, unfilled], ["horizontal", "vertical"], prompt_ids=[3, 4])
    with pytest.raises(RewardError, match=r"on prompt 0 .*the prompt carries no image"):
        judge.score([QUESTION], ["horizontal"])


def test_retries_then_gives_up(server, make_judge):
    red = prompt_with(png_bytes((255, 0, 0)))
    server.fail_first = 1
    assert make_judge(max_retries=2).score([red], ["horizontal"]) == [0.0]
    assert len(server.requests) == 2
    server.fail_first = 10
    with pytest.raises(RewardError, match=r"on prompt 0 .*HTTP 500.*gave up after 2 attempts"):
        make_judge(max_retries=1).score([red], ["horizontal"])


def test_options_are_checked(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"openai_vision_judge: the environment variable 'OPENAI_API_KEY'"):
        load_reward("openai_vision_judge", model="vision-1", base_url=server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(ValueError, match="openai_vision_judge needs model="):
        load_reward("openai_vision_judge", base_url=server.base_url)
    with pytest.raises(ValueError, match=r"template must hold \{question\} and \{answer\}"):
        load_reward("openai_vision_judge", model="vision-1", template="Is {answer} right?")
    judge = load_reward("openai_vision_judge", model="vision-1", base_url=server.base_url + "/")
    assert isinstance(judge, OpenAIVisionJudge) and judge.name == "openai_vision_judge"
    assert judge.url == server.base_url + "/chat/completions" and KEY not in repr(judge)
