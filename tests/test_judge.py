"""`JudgeReward` against a real OpenAI-compatible HTTP server on 127.0.0.1, backed by the project's tiny model.

The server implements `GET /v1/models` and `POST /v1/chat/completions` like `vllm serve` does, and can be told to
fail (HTTP 500), to stall, or to answer with a fixed text. Every wait in these tests is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer
from reward_models import JudgeReplyError, JudgeReward, JudgeUnavailableError, parse_score
from tests.helpers.servers import MODEL_NAME, JudgeServer

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


def test_slow_server_times_out_at_the_deadline(server):
    server.fixed_reply, server.delay = "7", 30.0
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=f"{server.url}.*no complete answer within the 0.3s deadline "
                                                    r"\(no reply had begun\)"):
        judge(server.url, timeout=0.3, max_retries=1)(completions=["x"])
    assert time.perf_counter() - start < 1.0  # one 0.3 s deadline for the request, retries included
    assert len(server.requests) == 1


@pytest.mark.parametrize("timeout", [1.0, 2.0])
def test_a_server_trickling_its_reply_is_cut_off_at_the_wall_clock_deadline(server, timeout):
    # A byte every 0.5 s keeps every read under any per-read timeout: the whole 40-byte reply would take 20 s.
    server.fixed_reply, server.trickle_interval = "7", 0.5
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=rf"within the {timeout:g}s deadline \(the reply had begun: "
                                                    r"\d+ bytes of its body had arrived\)") as error:
        judge(server.url, timeout=timeout, max_retries=3)(completions=["x"])
    elapsed = time.perf_counter() - start
    assert timeout <= elapsed < timeout + 1.0  # a per-read timeout would take 20 s an attempt
    assert "vllm serve" not in str(error.value)  # it answered; whether it runs is not the question
    assert len(server.request_times) == 1


FLOOD = 64 * 2**20  # what the server sends at most: enough to show in memory, bounded so the test stays small
MEASURED_CLIENT = """
import json, sys, time, tracemalloc
from reward_models import JudgeReward

def status(key):  # bytes
    return 1024 * int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

judge = JudgeReward(sys.argv[1], "tiny-judge", timeout=60.0, max_retries=0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
rss_before = status("VmRSS:")
tracemalloc.start()
start = time.perf_counter()
try:
    judge(completions=["x"])
    error = "no error"
except Exception as raised:
    error = f"{type(raised).__name__}: {raised}"
seconds = time.perf_counter() - start
traced_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"error": error, "seconds": seconds, "traced_peak": traced_peak,
                  "rss_growth": status("VmHWM:") - rss_before}))
"""


@pytest.mark.parametrize("declared", [False, True], ids=["streamed-until-closed", "declared-content-length"])
def test_a_flooding_reply_is_cut_off_at_max_reply_bytes_and_the_memory_stays_small(declared):
    # A server that answers a 64 MiB body (a hostile one sent 3 GB): the client stops reading at its 4 MiB limit,
    # or at once when the Content-Length announces more, and says which setting raises the limit.
    server = JudgeServer(None, None)  # the flood needs no model
    server.flood_bytes, server.flood_declares_length = FLOOD, declared
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        client = subprocess.run([sys.executable, "-c", MEASURED_CLIENT, server.url], capture_output=True, text=True,
                                timeout=120, cwd=root, env={**os.environ, "PYTHONPATH": root})
        assert server.flood_ended.wait(10)
    finally:
        server.stop()
    assert client.returncode == 0, client.stderr
    measured = json.loads(client.stdout.splitlines()[-1])
    error = measured["error"]
    assert error.startswith("RuntimeError: Judge server at") and "larger than max_reply_bytes=4194304 (4 MiB)" in error
    assert ("Content-Length says 67108864 bytes" if declared else "bytes of it had arrived") in error
    assert "judge_max_reply_bytes" in error and "max_tokens" in error
    assert measured["seconds"] < 10  # the 60 s deadline is not what stops it
    assert measured["traced_peak"] < 12 * 2**20  # the 4 MiB body read so far, one copy, and change
    assert measured["rss_growth"] < 32 * 2**20  # read whole, the 64 MiB body took 193 MiB (copies while it grew)
    assert server.flood_sent < FLOOD / 2  # the client hung up: the server could not hand it the rest


def test_the_recipe_sets_the_longest_judge_reply(server, monkeypatch):
    from dipod_trl.commands import cli
    from dipod_trl.commands.reward_resolution import resolve_rewards

    server.fixed_reply = "7"
    (task_args,) = cli.parse_recipe([cli.TaskArguments], [
        "--task", "digit_sort", "--reward_funcs", "judge", "--judge_base_url", server.url, "--judge_model",
        MODEL_NAME, "--judge_max_reply_bytes", "64"])
    (reward,), _ = resolve_rewards(task_args, None)
    with pytest.raises(RuntimeError, match=r"larger than max_reply_bytes=64 .*Content-Length says \d+ bytes"):
        reward(completions=["x"])
    assert len(server.request_times) == 1  # not retried: the next reply would be as long
    with pytest.raises(ValueError, match="max_reply_bytes must be a positive number of bytes, got 0"):
        JudgeReward(server.url, MODEL_NAME, max_reply_bytes=0)


@pytest.mark.parametrize("content, expected", [
    ([{"type": "text", "text": "Score: "}, {"type": "text", "text": "8"}], 8.0),
    ([{"type": "thinking", "thinking": "It is 3, maybe."}, {"type": "text", "text": "9"}], 9.0),
])
def test_a_reply_content_of_text_parts_is_scored_by_its_text(server, content, expected):
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    server.scripted = [(200, {}, json.dumps(reply).encode())]
    assert judge(server.url)(completions=["x"]) == [expected]


def test_a_reply_content_without_text_parts_is_an_error_that_shows_it(server):
    reply = {"choices": [{"index": 0, "message": {"content": [{"type": "image_url", "image_url": {"url": "x"}}]}}]}
    server.scripted = [(200, {}, json.dumps(reply).encode())]
    with pytest.raises(RuntimeError, match=r"neither text nor a list of text parts .*'image_url'.*answers in text"):
        judge(server.url)(completions=["x"])


def test_retry_after_is_honoured_and_a_429_says_what_the_server_answered(server):
    server.fixed_reply = "7"
    busy = (429, {"Retry-After": "1"}, b'{"error": {"message": "too many requests in flight"}}')
    server.scripted = [busy, busy]
    reward = judge(server.url, timeout=10.0, max_retries=3, backoff=0.05)
    assert reward(completions=["x"]) == [7.0]
    gaps = [b - a for a, b in zip(server.request_times, server.request_times[1:])]
    assert len(gaps) == 2 and all(gap >= 0.95 for gap in gaps)  # waited 1 s as asked, not the 0.05 s backoff

    # A Retry-After beyond the deadline ends the request at once, saying what the server answered.
    server.scripted = [(429, {"Retry-After": "30"}, b'{"error": {"message": "too many requests in flight"}}')]
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError) as error:
        judge(server.url, timeout=5.0, max_retries=3)(completions=["x"])
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    assert "HTTP 429 (Retry-After: 30)" in message and "too many requests in flight" in message
    assert "waiting 30s more would pass the 5s deadline" in message and "rate-limiting" in message
    assert "is the server" not in message.lower() and "running" not in message


def test_a_failing_server_is_reported_with_its_status_and_body(server):
    server.scripted = [(503, {}, b"engine is loading weights")] * 2
    with pytest.raises(JudgeUnavailableError, match=r"2 attempt\(s\) \(last: HTTP 503: engine is loading weights\)"
                                                    r"\. The server failed: see its log\.$"):
        judge(server.url, max_retries=1)(completions=["x"])


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
    from dipod_trl.commands.reward_resolution import resolve_rewards
    from dipod_trl.commands.task_data import TaskArguments

    server.fixed_reply = "I cannot judge this response."
    monkeypatch.setenv("DIPOD_JUDGE_URL", server.url)
    args = TaskArguments(task="gsm8k", reward_funcs=["judge"], judge_model=MODEL_NAME)
    (strict,), _ = resolve_rewards(args, None)
    with pytest.raises(JudgeReplyError, match="I cannot judge this response"):
        strict(prompts=PROMPTS, completions=COMPLETIONS)
    (skipping,), _ = resolve_rewards(args, None, reward_nan_policy="skip")
    assert skipping(prompts=PROMPTS, completions=COMPLETIONS) == [None, None]


# ---------------------------------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------------------------------


def test_an_api_key_is_sent_from_the_argument_the_environment_or_the_recipe(server, monkeypatch):
    from dipod_trl.commands import cli
    from dipod_trl.commands.reward_resolution import resolve_rewards

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("DIPOD_JUDGE_API_KEY", raising=False)
    server.fixed_reply, server.api_key = "7", "sk-test-0123456789"
    with pytest.raises(RuntimeError, match="HTTP 401.*needs an API key: set judge_api_key") as error:
        judge(server.url)(completions=["x"])
    assert not isinstance(error.value, JudgeUnavailableError)  # a configuration mistake: not retried
    assert len(server.request_times) == 1
    assert judge(server.url, api_key="sk-test-0123456789")(completions=["x"]) == [7.0]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")  # the OpenAI client's variable
    assert judge(server.url)(completions=["x"]) == [7.0]
    monkeypatch.delenv("OPENAI_API_KEY")

    def recipe_judge(*argv):
        (task_args,) = cli.parse_recipe([cli.TaskArguments], [
            "--task", "digit_sort", "--reward_funcs", "judge", "--judge_base_url", server.url, "--judge_model",
            MODEL_NAME, "--judge_timeout", "5", *argv])
        (reward,), _ = resolve_rewards(task_args, None)
        return reward

    assert recipe_judge("--judge_api_key", "sk-test-0123456789")(completions=["x"]) == [7.0]
    monkeypatch.setenv("DIPOD_JUDGE_API_KEY", "sk-test-0123456789")  # what recipes/slurm/launch.sh exports
    assert recipe_judge().http.timeout == 5.0 and recipe_judge()(completions=["x"]) == [7.0]
    assert {h.get("Authorization") for h in server.headers_seen} == {None, "Bearer sk-test-0123456789"}


def test_credentials_in_the_url_and_the_api_key_appear_in_no_error(server):
    secret_url = server.url.replace("http://", "http://alice:hunter2-pw@")
    server.scripted = [(500, {}, b"upstream said: Bearer sk-echoed-key-42")] * 2
    with pytest.raises(JudgeUnavailableError) as error:
        judge(secret_url, api_key="sk-echoed-key-42", max_retries=1)(completions=["x"])
    message = str(error.value)
    assert "http://***@127.0.0.1" in message and "Bearer ***" in message
    assert "hunter2" not in message and "alice" not in message and "sk-echoed-key-42" not in message
    assert server.headers_seen[0]["Authorization"].startswith("Basic ")  # httpx sends the URL's credentials

    down = free_port_url().replace("http://", "http://alice:hunter2-pw@")
    for call in (lambda: judge(down, max_retries=0)(completions=["x"]),
                 lambda: JudgeReward(down.replace("http://", ""), MODEL_NAME)):
        with pytest.raises(Exception) as error:
            call()
        assert "hunter2" not in str(error.value) and "alice" not in str(error.value), error.value


def test_the_reward_guard_does_not_ask_an_unavailable_judge_again_per_sample(server):
    from dipod_trl.guards.trainer_inputs import RewardFunctionError, guard_reward_function

    server.fixed_reply, server.delay = "7", 30.0
    guarded = guard_reward_function(judge(server.url, timeout=0.5, batch_size=2), "judge_reward")
    start = time.perf_counter()
    with pytest.raises(RewardFunctionError, match="reward function 'judge_reward' raised JudgeUnavailableError.*"
                                                  "0.5s deadline") as error:
        guarded(prompts=["p1", "p2"], completions=["c1", "c2"])
    assert isinstance(error.value.__cause__, JudgeUnavailableError)
    assert time.perf_counter() - start < 0.95  # one 0.5 s deadline, not one more per sample
    assert len(server.requests) == 2  # the batch's two requests, none asked again
