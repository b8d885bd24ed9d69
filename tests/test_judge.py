"""`JudgeReward` against a real OpenAI-compatible HTTP server on 127.0.0.1, backed by the project's tiny model.

The server implements `GET /v1/models` and `POST /v1/chat/completions` like `vllm serve` does, and can be told to
fail (HTTP 500), to stall, or to answer with a fixed text. Every wait in these tests is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import dipod_trl
from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer
from reward_models import JudgeReplyError, JudgeReward, JudgeUnavailableError, parse_score

MODEL_NAME = "tiny-judge"
GEN_LENGTH = 16
TEMPLATE = "Rate 0-10.\nQ: {prompt}\nA: {completion}\nScore:"


# ---------------------------------------------------------------------------------------------------------------------
# The test server
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_lm():
    """The project's tiny masked diffusion LM (random weights, fixed seed) and its tokenizer."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = TinyMDLMConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return TinyMDLMForMaskedDiffusion(config).eval(), tokenizer


class JudgeServer:
    """A threaded OpenAI-compatible chat server; attributes steer its next answers and record what it saw."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.stopping = threading.Event()
        self.fail_next = 0  # answer this many requests with HTTP 500 first
        self.delay = 0.0  # stall this long before answering
        self.fixed_reply: str | None = None  # answer with this text instead of generating
        self.requests: list[dict] = []
        self.replies: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def generate(self, messages: list[dict]) -> str:
        """The tiny model's greedy reply to a chat, as `vllm serve` would produce it for a real judge."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        limit = self.model.config.max_position_embeddings - GEN_LENGTH
        batch = self.tokenizer(
            [text], add_special_tokens=False, padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        with self.model_lock:
            ids, mask = dipod_trl.generate(
                self.model,
                batch["input_ids"],
                batch["attention_mask"],
                gen_length=GEN_LENGTH,
                block_length=GEN_LENGTH,
                steps=4,
                tokenizer=self.tokenizer,
            )
        return self.tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _handler_for(server: JudgeServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_json(self, status: int, body: dict):
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the answer came

        def do_GET(self):
            if self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
            else:
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.requests.append(payload)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                fail = server.fail_next > 0
                server.fail_next -= fail
            try:
                status, body = self.answer(payload, fail)
            finally:
                # Out of flight before the reply is written: once the client has it, it may send the next request
                # at once, and counting that one while this handler is still finishing would overstate concurrency.
                with server.lock:
                    server.in_flight -= 1
            self.send_json(status, body)

        def answer(self, payload: dict, fail: bool) -> tuple[int, dict]:
            if fail:
                return 500, {"error": {"message": "internal server error"}}
            if payload.get("model") != MODEL_NAME:
                return 404, {"error": {"message": f"The model `{payload.get('model')}` does not exist."}}
            if server.delay:
                server.stopping.wait(server.delay)
            text = server.fixed_reply if server.fixed_reply is not None else server.generate(payload["messages"])
            with server.lock:
                server.replies.append(text)
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return 200, {"object": "chat.completion", "model": MODEL_NAME, "choices": [choice]}

    return Handler


@pytest.fixture
def server(judge_lm):
    judge_server = JudgeServer(*judge_lm)
    yield judge_server
    judge_server.stop()


def free_port_url() -> str:
    """A 127.0.0.1 URL where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def judge(url: str, **kwargs) -> JudgeReward:
    options = {"prompt_template": TEMPLATE, "timeout": 10.0, "max_retries": 2, "backoff": 0.05}
    return JudgeReward(url, MODEL_NAME, **{**options, **kwargs})


PROMPTS = [[{"role": "user", "content": "What is 2+2?"}], [{"role": "user", "content": "Name a color."}]]
COMPLETIONS = [[{"role": "assistant", "content": "<answer>4</answer>"}], [{"role": "assistant", "content": "blue"}]]

# ---------------------------------------------------------------------------------------------------------------------
# Score parsing
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("7", 7.0),
        ("  8.5\n", 8.5),
        ("**9**", 9.0),
        ("7/10 - concise and correct", 7.0),
        ("Score: 6", 6.0),
        ("The response is fine. Rating = 8/10.", 8.0),
        ("I think it deserves \\boxed{4} points, not 9", 4.0),
        ("ffffffffflffflll", None),  # what a random tiny model says
        ("The answer mentions 3 colors but is vague.", None),  # a number, but not a score
        ("", None),
        (None, None),
        ("score: nan", None),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


def test_parse_score_range():
    assert parse_score("11", low=0, high=10) is None
    assert parse_score("10", low=0, high=10) == 10.0


# ---------------------------------------------------------------------------------------------------------------------
# Against the tiny-model server
# ---------------------------------------------------------------------------------------------------------------------


def test_tiny_model_replies_are_scored_by_the_documented_rule(server):
    reward = judge(server.url, on_unparsable="default")
    scores = reward(prompts=PROMPTS, completions=COMPLETIONS)
    assert len(server.replies) == 2 and all(isinstance(r, str) for r in server.replies)
    # Requests run concurrently, so match replies to requests through the prompt they answered.
    by_completion = {}
    for request in server.requests:
        content = request["messages"][-1]["content"]
        by_completion["<answer>4</answer>" in content] = request
    assert set(by_completion) == {True, False}
    assert server.requests[0]["model"] == MODEL_NAME and server.requests[0]["temperature"] == 0.0
    assert by_completion[True]["messages"] == [
        {"role": "user", "content": "Rate 0-10.\nQ: What is 2+2?\nA: <answer>4</answer>\nScore:"}
    ]
    # Gibberish is unparsable -> None ("no reward" for TRL); anything parsable is read by `parse_score`.
    expected = {parse_score(reply, low=0, high=10) for reply in server.replies}
    assert set(scores) == expected
    assert all(s is None or isinstance(s, float) for s in scores)


def test_unparsable_reply_is_an_error_showing_it_unless_a_default_score_is_asked_for(server):
    server.fixed_reply = "I cannot judge this response."
    with pytest.raises(JudgeReplyError, match="judge reply 'I cannot judge this response.' holds no score"):
        judge(server.url)(prompts=PROMPTS, completions=COMPLETIONS)
    assert judge(server.url, on_unparsable="default")(prompts=PROMPTS, completions=COMPLETIONS) == [None, None]
    assert judge(server.url, default_score=0.0)(prompts=PROMPTS, completions=COMPLETIONS) == [0.0, 0.0]
    server.fixed_reply = "Score: 8"
    assert judge(server.url)(prompts=PROMPTS, completions=COMPLETIONS) == [8.0, 8.0]


@pytest.mark.parametrize("reply, score", [("Score: 9000", "9000"), ("-5", "-5"), ("10.5", "10.5")])
def test_a_score_outside_the_templates_range_is_refused(server, reply, score):
    server.fixed_reply = reply
    with pytest.raises(JudgeReplyError, match=rf"judge reply '{reply}' scores {score}, outside the template's range "
                                              r"\[0.0, 10.0\]"):
        judge(server.url)(prompts=PROMPTS, completions=COMPLETIONS)
    assert judge(server.url, default_score=0.0)(prompts=PROMPTS, completions=COMPLETIONS) == [0.0, 0.0]
    server.fixed_reply = "Score: 90"
    assert judge(server.url, score_range=(0, 100))(prompts=PROMPTS, completions=COMPLETIONS) == [90.0, 90.0]
    assert judge(server.url, score_range=None)(prompts=PROMPTS, completions=COMPLETIONS) == [90.0, 90.0]


def test_template_reads_dataset_columns_and_system_prompt(server):
    server.fixed_reply = "9"
    template = "Reference: {answer}\nResponse: {completion}"
    reward = judge(server.url, prompt_template=template, system_prompt="Be strict.")
    scores = reward(prompts=None, completions=["4", "5"], answer=["4", "4"], completion_ids=[[1], [2]])
    assert scores == [9.0, 9.0]
    sent = sorted(r["messages"][1]["content"] for r in server.requests)
    assert sent == ["Reference: 4\nResponse: 4", "Reference: 4\nResponse: 5"]
    assert all(r["messages"][0] == {"role": "system", "content": "Be strict."} for r in server.requests)
    with pytest.raises(ValueError, match="prompt_template.*'solution'"):
        judge(server.url, prompt_template="{solution}")(completions=["4"])


def test_trl_calling_convention(server):
    from trl.trainer.utils import get_callable_name, is_async_callable

    server.fixed_reply = "6"
    reward = judge(server.url)
    assert get_callable_name(reward) == "judge_reward" and not is_async_callable(reward)
    scores = reward(
        prompts=PROMPTS,
        completions=COMPLETIONS,
        completion_ids=[[1, 2], [3]],
        answer=["4", "blue"],
        trainer_state=object(),
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )
    assert scores == [6.0, 6.0]


def test_requests_are_concurrent_up_to_batch_size(server):
    server.fixed_reply, server.delay = "5", 0.3
    start = time.perf_counter()
    scores = judge(server.url, batch_size=3)(completions=[f"answer {i}" for i in range(6)])
    assert scores == [5.0] * 6
    assert server.max_in_flight == 3
    assert time.perf_counter() - start < 6 * 0.3  # faster than one at a time


def test_retries_after_server_errors(server):
    server.fixed_reply, server.fail_next = "7", 2
    assert judge(server.url, max_retries=2)(completions=["x"]) == [7.0]
    assert len(server.requests) == 3  # two 500s, then the answer


def test_server_errors_beyond_retry_budget_raise(server):
    server.fail_next = 100
    with pytest.raises(JudgeUnavailableError, match=f"{server.url}/v1/chat/completions.*HTTP 500"):
        judge(server.url, max_retries=1)(completions=["x"])
    assert len(server.requests) == 2


def test_client_errors_are_not_retried(server):
    reward = JudgeReward(server.url, "no-such-model", max_retries=3, backoff=0.05, timeout=5.0)
    with pytest.raises(RuntimeError, match="HTTP 404.*does not exist") as error:
        reward(completions=["x"])
    assert not isinstance(error.value, JudgeUnavailableError)
    assert len(server.requests) == 1


def test_slow_server_times_out(server):
    server.fixed_reply, server.delay = "7", 30.0
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=f"{server.url}.*timed out after 0.3s"):
        judge(server.url, timeout=0.3, max_retries=1)(completions=["x"])
    assert time.perf_counter() - start < 3.0  # two 0.3 s attempts and a 0.05 s backoff, with slack
    assert len(server.requests) == 2


def test_server_going_away_mid_run(server):
    server.fixed_reply = "7"
    reward = judge(server.url)
    assert reward(prompts=PROMPTS, completions=COMPLETIONS) == [7.0, 7.0]
    server.stop()  # the judge process dies between two training steps
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=f"Judge server at {server.url}/v1/chat/completions") as error:
        reward(prompts=PROMPTS, completions=COMPLETIONS)
    assert time.perf_counter() - start < 3.0
    assert "vllm serve" in str(error.value)
    # With on_error="none" the step goes on without these rewards (TRL reads None as NaN).
    tolerant = judge(server.url, on_error="none")
    assert tolerant(prompts=PROMPTS, completions=COMPLETIONS) == [None, None]


def test_down_server_fails_fast_for_the_whole_batch():
    url = free_port_url()
    reward = judge(url, on_error="none", batch_size=2, max_retries=3, backoff=0.2)
    start = time.perf_counter()
    assert reward(completions=[f"c{i}" for i in range(8)]) == [None] * 8
    # One round of retries (0.2 + 0.4 + 0.8 s) finds the server down; the other requests do not retry again.
    assert time.perf_counter() - start < 3.0
    with pytest.raises(JudgeUnavailableError, match=url):
        judge(url, max_retries=0).available_models()


def test_available_models(server):
    assert judge(server.url).available_models() == [MODEL_NAME]
    assert judge(server.url + "/v1/").available_models() == [MODEL_NAME]  # a base URL ending in /v1 is accepted


def test_constructor_validation():
    with pytest.raises(ValueError, match="base_url"):
        JudgeReward("localhost:8000", MODEL_NAME)
    with pytest.raises(ValueError, match="batch_size"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME, batch_size=0)
    with pytest.raises(ValueError, match="timeout"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME, timeout=0)
    with pytest.raises(ValueError, match="on_error"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME, on_error="ignore")
    with pytest.raises(ValueError, match="on_unparsable"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME, on_unparsable="ignore")
    with pytest.raises(ValueError, match="score_range"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME, score_range=(10, 0))
    with pytest.raises(ValueError, match="completions"):
        JudgeReward("http://127.0.0.1:1", MODEL_NAME)(prompts=["p"])


def test_a_recipe_judge_scores_unparsable_replies_none_only_when_rewards_may_be_skipped(server, monkeypatch):
    from dipod_trl.rewards import resolve_rewards
    from dipod_trl.task_data import TaskArguments

    server.fixed_reply = "I cannot judge this response."
    monkeypatch.setenv("DIPOD_JUDGE_URL", server.url)
    args = TaskArguments(task="gsm8k", reward_funcs=["judge"], judge_model=MODEL_NAME)
    (strict,), _ = resolve_rewards(args, None)
    with pytest.raises(JudgeReplyError, match="I cannot judge this response"):
        strict(prompts=PROMPTS, completions=COMPLETIONS)
    (skipping,), _ = resolve_rewards(args, None, reward_nan_policy="skip")
    assert skipping(prompts=PROMPTS, completions=COMPLETIONS) == [None, None]
