"""An LLM judge behind an OpenAI-compatible server (e.g. `vllm serve`), used as a TRL reward function.

Only HTTP is needed (`pip install dipod-trl[judge]` brings httpx); vLLM is never imported. Requests go to
`{base_url}/v1/chat/completions`, at most `batch_size` at a time.

Every wait is bounded. `timeout` is one request's deadline on the wall clock: connecting, sending, and reading the
whole reply, retries and the waits between them included (a server that trickles its reply a byte at a time is cut
off at the deadline all the same). A failed attempt (no connection, HTTP 5xx or 429) is retried at most `max_retries`
times within the deadline, after exponential backoff or after the server's `Retry-After`; other HTTP errors (a wrong
model name, a bad request, a missing API key) are configuration mistakes and fail at once, and so does a reply longer
than `max_reply_bytes` (default 4 MiB; a score takes a few hundred bytes), which is cut off as it streams in rather
than read whole. When a request runs out of attempts or time, `on_error` decides: "raise" (default) raises
`JudgeUnavailableError` (a `RuntimeError` and a `ConnectionError`, naming the URL and what the server answered, if
anything); "none" scores that completion None, which TRL records as NaN ("no reward") - and once the server is found
unreachable, the rest of that call fails fast instead of retrying each completion.

Secrets: `api_key` (default: $OPENAI_API_KEY, as the OpenAI client reads it) is sent as a bearer token; it and any
credentials in the URL (`http://user:password@host`) are replaced by `***` in every error message.

Reply text: the message's `content`, a string; a list of content parts (as some servers send) counts by its text
parts, joined, and its other parts (e.g. "thinking") are left out.

Score parsing: `score_parser(reply_text)` returns a float or None; the default `parse_score` reads a `\\boxed{}`
number, else a number labelled "score"/"rating"/"grade", else a number the reply starts with. A score must lie in
`score_range`, the scale the template asks for (0 to 10 for the default template). A reply with no readable score
(a small model's gibberish, a refusal) or one outside the range raises `JudgeReplyError`, which shows the reply;
with `on_unparsable="default"` (implied by giving a `default_score`) it scores `default_score` instead (None: "no
reward").
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._deadline_client import DeadlineClient, JudgeUnavailableError, redact_credentials
from ._text import completion_text, last_boxed, prompt_text

__all__ = [
    "DEFAULT_JUDGE_TEMPLATE", "DEFAULT_MAX_REPLY_BYTES", "JudgeReplyError", "JudgeReward", "JudgeUnavailableError",
    "parse_score", "redact_credentials",
]

DEFAULT_MAX_REPLY_BYTES = 4 * 2**20  # a chat-completions reply holding a score is a few hundred bytes

DEFAULT_JUDGE_TEMPLATE = (
    "Rate how well the response answers the question, from 0 (useless) to 10 (perfect).\n\n"
    "Question:\n{prompt}\n\nResponse:\n{completion}\n\nReply with the score only."
)

# Keywords TRL passes to every reward function that are not dataset columns.
_NOT_COLUMNS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_LABELLED = re.compile(rf"\b(?:score|rating|grade)\b\W{{0,3}}({_NUMBER})", re.IGNORECASE)
_LEADING = re.compile(rf"\s*\**\s*({_NUMBER})(?![\w.])")


class JudgeReplyError(ValueError):
    """The judge answered, but not with a score on its template's scale."""


def parse_score(text: str | None, low: float | None = None, high: float | None = None) -> float | None:
    """The judge's score in `text`, or None when the reply holds no readable score.

    Precedence: the number in the last `\\boxed{}`; else the first number labelled score/rating/grade ("Score: 7",
    "rating = 8/10"); else a number the reply starts with ("9", "7/10 - concise"). A score outside [`low`, `high`]
    (when given) counts as unreadable.
    """
    if not text:
        return None
    value = None
    boxed = last_boxed(text)
    if boxed is not None and re.fullmatch(rf"\s*{_NUMBER}\s*", boxed):
        value = float(boxed)
    else:
        match = _LABELLED.search(text) or _LEADING.match(text)
        value = float(match.group(1)) if match else None
    if value is None or not math.isfinite(value):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        return None
    return value


class JudgeReward:
    """Reward = the score an LLM judge gives each (prompt, completion) pair; see the module docstring for policies.

    Args:
        base_url: the server root, e.g. "http://127.0.0.1:8000" (a trailing "/v1" is accepted).
        model: the served model name (as listed by `/v1/models`).
        prompt_template: a `str.format` template with `{prompt}`, `{completion}` and any dataset column (e.g.
            `{answer}`) - double literal braces - or a callable `(prompt, completion, **row) -> str | messages`.
        score_parser: reply text -> float or None.
        batch_size: most requests in flight at once.
        timeout: one request's deadline in seconds, wall clock, retries and waits included.
        max_reply_bytes: the longest reply body read; a longer one fails the request (not retried).
        max_retries: extra attempts after a connection error, 5xx or 429, within the deadline.
        backoff, max_backoff: the n-th retry waits `min(max_backoff, backoff * 2**(n-1))` seconds, or what the
            server's `Retry-After` asks for; a wait that would pass the deadline ends the request instead.
        score_range: `(low, high)`, the scale the template asks for; a score outside it is not a score. None: any.
        on_unparsable: "raise" (a reply without a score in range raises `JudgeReplyError` showing it) or "default"
            (it scores `default_score`). Default: "default" when a `default_score` is given, else "raise".
        default_score: the reward for a reply without a score in range, with on_unparsable="default" (None = no
            reward).
        on_error: "raise" or "none" when a request exhausts its retries.
        system_prompt: an optional system message before the rendered user message.
        temperature, max_tokens, extra_body: sampling fields sent with each request.
        api_key: sent as a bearer token (vLLM's `--api-key` / $VLLM_API_KEY). Default: $OPENAI_API_KEY, if set.
        name: the name TRL logs this reward under.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        prompt_template: str | Callable = DEFAULT_JUDGE_TEMPLATE,
        score_parser: Callable[[str], float | None] = parse_score,
        batch_size: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        *,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        score_range: tuple[float, float] | None = (0.0, 10.0),
        on_unparsable: str | None = None,
        default_score: float | None = None,
        on_error: str = "raise",
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 32,
        extra_body: dict | None = None,
        api_key: str | None = None,
        name: str = "judge_reward",
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ):
        _check_arguments(base_url, batch_size, timeout, max_retries, backoff, on_error, max_reply_bytes)
        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.chat_url = f"{root}/v1/chat/completions"
        self.models_url = f"{root}/v1/models"
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.model = model
        self.prompt_template = prompt_template
        self.score_parser = score_parser
        self.batch_size = batch_size
        if on_unparsable not in (None, "raise", "default"):
            raise ValueError(f"on_unparsable must be 'raise' or 'default', got {on_unparsable!r}.")
        if score_range is not None and not score_range[0] < score_range[1]:
            raise ValueError(f"score_range must be (low, high) with low < high, got {score_range!r}.")
        self.score_range = score_range
        self.on_unparsable = on_unparsable or ("default" if default_score is not None else "raise")
        self.default_score = default_score
        self.on_error = on_error
        self.system_prompt = system_prompt
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens, **(extra_body or {})}
        self.http = DeadlineClient(timeout, max_retries, backoff, max_backoff, api_key, max_reply_bytes)
        self.__name__ = name

    # -- TRL entry point ---------------------------------------------------------------------------------------------

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float | None]:
        """Score each completion (TRL's reward-function keywords; dataset columns are available to the template)."""
        if completions is None:
            raise ValueError("completions: the judge needs the completions to score.")
        n = len(completions)
        prompts = [None] * n if prompts is None else list(prompts)
        if len(prompts) != n:
            raise ValueError(f"prompts: got {len(prompts)} prompts for {n} completions.")
        rows = _rows(kwargs, n)
        requests = [self.render(p, c, row) for p, c, row in zip(prompts, completions, rows)]
        replies = self.complete(requests)
        return [self._score(reply) for reply in replies]

    def render(self, prompt, completion, row: dict | None = None) -> list[dict]:
        """The chat messages sent to the judge for one pair."""
        row = row or {}
        if callable(self.prompt_template):
            rendered = self.prompt_template(prompt, completion, **row)
        else:
            fields = {**row, "prompt": prompt_text(prompt), "completion": completion_text(completion)}
            try:
                rendered = self.prompt_template.format_map(fields)
            except (KeyError, IndexError) as error:
                raise ValueError(
                    f"prompt_template: no value for the field {error}; available fields: {sorted(fields)}. "
                    "Write literal braces as '{{' and '}}'."
                ) from None
        if isinstance(rendered, str):
            rendered = [{"role": "user", "content": rendered}]
        if self.system_prompt:
            rendered = [{"role": "system", "content": self.system_prompt}, *rendered]
        return rendered

    def _score(self, reply: str | None) -> float | None:
        if reply is None:
            return None  # the request failed and on_error="none"
        score = self.score_parser(reply)
        if score is not None and math.isnan(score):
            score = None
        if score is None:
            problem = "holds no score that score_parser can read"
        elif self.score_range is not None and not self.score_range[0] <= score <= self.score_range[1]:
            problem = f"scores {score:g}, outside the template's range {list(self.score_range)}"
        else:
            return float(score)
        if self.on_unparsable == "default":
            return self.default_score
        raise JudgeReplyError(
            f"judge reply {reply[:500]!r} {problem}. Ask for the score in a form parse_score reads (a number, "
            "'Score: 7', \\boxed{7}), set score_range to the template's scale, pass a score_parser, or set "
            "default_score (or on_unparsable='default') to score such replies."
        )

    # -- HTTP --------------------------------------------------------------------------------------------------------

    def complete(self, requests: list[list[dict]]) -> list[str | None]:
        """The judge's reply text for each message list, `batch_size` requests at a time."""
        if not requests:
            return []
        server_down = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.batch_size, len(requests)), thread_name_prefix="judge")
        try:
            futures = [pool.submit(self._reply, messages, server_down) for messages in requests]
            return [future.result() for future in futures]
        finally:
            # On an error, drop the queued requests; the running ones end within their own bounded budget.
            pool.shutdown(wait=False, cancel_futures=True)

    def _reply(self, messages: list[dict], server_down: threading.Event) -> str | None:
        payload = {"model": self.model, "messages": messages, **self.sampling}
        try:
            data = self.http.send("POST", self.chat_url, payload, server_down, f"(model={self.model!r})")
            return _reply_text(data, self.chat_url)
        except JudgeUnavailableError:
            if self.on_error == "none":
                return None
            raise

    def available_models(self) -> list[str]:
        """The model names the server serves (`GET /v1/models`), with the same timeout and retry policy."""
        data = self.http.send("GET", self.models_url, None, threading.Event(), f"(model={self.model!r})")
        return [entry.get("id") for entry in data.get("data", [])]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_arguments(base_url, batch_size, timeout, max_retries, backoff, on_error, max_reply_bytes) -> None:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        shown = redact_credentials(base_url) if isinstance(base_url, str) else base_url
        raise ValueError(f"base_url: expected an http(s) URL such as 'http://127.0.0.1:8000', got {shown!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout}.")
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, got {max_retries}.")
    if backoff < 0:
        raise ValueError(f"backoff must be 0 or more seconds, got {backoff}.")
    if on_error not in ("raise", "none"):
        raise ValueError(f"on_error must be 'raise' or 'none', got {on_error!r}.")
    if max_reply_bytes < 1:
        raise ValueError(f"max_reply_bytes must be a positive number of bytes, got {max_reply_bytes}.")


def _rows(kwargs: dict, n: int) -> list[dict]:
    """Per-completion dataset columns from TRL's keyword lists (trainer objects and odd-length values are skipped)."""
    columns = {
        key: list(values)
        for key, values in kwargs.items()
        if key not in _NOT_COLUMNS and isinstance(values, (list, tuple)) and len(values) == n
    }
    return [{key: values[i] for key, values in columns.items()} for i in range(n)]


def _reply_text(data: dict, url: str) -> str:
    """The assistant text of a chat-completions response: its `content` string (empty for a null content), or the
    text parts of a list of content parts, joined."""
    try:
        content = data["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RuntimeError(redact_credentials(
            f"Judge server at {url} answered without choices[0].message: {str(data)[:200]}."
        )) from None
    if content is None or isinstance(content, str):
        return content or ""
    parts = content if isinstance(content, list) else [content]
    texts = [part.get("text") for part in parts if isinstance(part, dict) and part.get("type") == "text"]
    if texts and all(isinstance(text, str) for text in texts):
        return "".join(texts)
    raise RuntimeError(redact_credentials(
        f"Judge server at {url} answered with a message content that is neither text nor a list of text parts "
        f"({{'type': 'text', 'text': ...}}): {str(content)[:200]}. Serve the judge so that it answers in text, a "
        "string content as `vllm serve` sends."
    ))
