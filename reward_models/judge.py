"""An LLM judge behind an OpenAI-compatible server (e.g. `vllm serve`), used as a TRL reward function.

Only HTTP is needed (`pip install dipod-trl[judge]` brings httpx); vLLM is never imported. Requests go to
`{base_url}/v1/chat/completions`, at most `batch_size` at a time.

Every wait is bounded. `timeout` is one request's deadline on the wall clock: connecting, sending, and reading the
whole reply, retries and the waits between them included (a server that trickles its reply a byte at a time is cut
off at the deadline all the same). A failed attempt (no connection, HTTP 5xx or 429) is retried at most `max_retries`
times within the deadline, after exponential backoff or after the server's `Retry-After`; other HTTP errors (a wrong
model name, a bad request, a missing API key) are configuration mistakes and fail at once. When a request runs out of
attempts or time, `on_error` decides: "raise" (default) raises `JudgeUnavailableError` (a `RuntimeError` and a
`ConnectionError`, naming the URL and what the server answered, if anything); "none" scores that completion None,
which TRL records as NaN ("no reward") - and once the server is found unreachable, the rest of that call fails fast
instead of retrying each completion.

Secrets: `api_key` (default: $OPENAI_API_KEY, as the OpenAI client reads it) is sent as a bearer token; it and any
credentials in the URL (`http://user:password@host`) are replaced by `***` in every error message.

Score parsing: `score_parser(reply_text)` returns a float or None; the default `parse_score` reads a `\\boxed{}`
number, else a number labelled "score"/"rating"/"grade", else a number the reply starts with. A score must lie in
`score_range`, the scale the template asks for (0 to 10 for the default template). A reply with no readable score
(a small model's gibberish, a refusal) or one outside the range raises `JudgeReplyError`, which shows the reply;
with `on_unparsable="default"` (implied by giving a `default_score`) it scores `default_score` instead (None: "no
reward").
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._text import completion_text, last_boxed, prompt_text

__all__ = [
    "DEFAULT_JUDGE_TEMPLATE", "JudgeReplyError", "JudgeReward", "JudgeUnavailableError", "parse_score",
    "redact_credentials",
]

DEFAULT_JUDGE_TEMPLATE = (
    "Rate how well the response answers the question, from 0 (useless) to 10 (perfect).\n\n"
    "Question:\n{prompt}\n\nResponse:\n{completion}\n\nReply with the score only."
)

# Keywords TRL passes to every reward function that are not dataset columns.
_NOT_COLUMNS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
_HINT = "Is the server (e.g. `vllm serve`) running and reachable at that address?"
_HINTS = {
    429: "The server is rate-limiting: lower batch_size, or raise timeout to leave room for its Retry-After.",
    401: "The server needs an API key: set judge_api_key (or $DIPOD_JUDGE_API_KEY / $OPENAI_API_KEY), or check it.",
}
_HINTS[403] = _HINTS[401]
_USERINFO = re.compile(r"""(?i)((?:\b[a-z][a-z0-9+.-]*://)?)[^/?#@\s'"]+@""")  # [scheme://]user:password@
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_LABELLED = re.compile(rf"\b(?:score|rating|grade)\b\W{{0,3}}({_NUMBER})", re.IGNORECASE)
_LEADING = re.compile(rf"\s*\**\s*({_NUMBER})(?![\w.])")


class JudgeUnavailableError(RuntimeError, ConnectionError):
    """The judge server did not answer (down, unreachable, timing out, or failing with 5xx/429) within the request's
    deadline and retries. A `ConnectionError` too: the service failed, not the sample being scored."""


def redact_credentials(text: str, *secrets: str | None) -> str:
    """`text` with the credentials of every URL in it (`scheme://user:password@`) and each of `secrets` as `***`."""
    text = _USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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
    ):
        import httpx

        _check_arguments(base_url, batch_size, timeout, max_retries, backoff, on_error)
        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.chat_url = f"{root}/v1/chat/completions"
        self.models_url = f"{root}/v1/models"
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._secrets = (api_key,)
        self.model = model
        self.prompt_template = prompt_template
        self.score_parser = score_parser
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, trust_env=False)
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
            return _reply_text(self._send("POST", self.chat_url, payload, server_down), self.chat_url)
        except JudgeUnavailableError:
            if self.on_error == "none":
                return None
            raise

    def _send(self, method: str, url: str, payload: dict | None, server_down: threading.Event) -> dict:
        """One request within the deadline `timeout`; raises `JudgeUnavailableError` naming `url` (credentials
        redacted) and what the server answered when attempts or time run out."""
        import httpx

        deadline = time.monotonic() + self.timeout
        shown = redact_credentials(url)
        answered = False
        for attempt in range(self.max_retries + 1):
            if server_down.is_set():
                raise JudgeUnavailableError(
                    f"Judge server at {shown} was found unreachable by another request of this batch. {_HINT}"
                )
            retry_after = None
            try:
                status, headers, body = self._attempt(method, url, payload, deadline)
            except (_DeadlineExceeded, httpx.TimeoutException) as error:
                note = str(error) if isinstance(error, _DeadlineExceeded) else f" ({type(error).__name__})"
                last_error = f"no complete answer within the {self.timeout:g}s deadline{note}"
                advice = "Raise timeout, or look at the server's load and log."
                break
            except httpx.TransportError as error:
                last_error, advice = f"{type(error).__name__}: {error}", _HINT
            else:
                if status < 400:
                    return self._json(body, shown)
                if status != 429 and status < 500:
                    hint = _HINTS.get(status, f"(model={self.model!r})")
                    raise RuntimeError(self._redact(
                        f"Judge server at {shown} refused the request with HTTP {status}: {_excerpt(body)}. {hint}"
                    ))
                answered, retry_after = True, _retry_after(headers)
                shown_wait = f" (Retry-After: {headers['retry-after']})" if "retry-after" in headers else ""
                last_error = f"HTTP {status}{shown_wait}: {_excerpt(body)}"
                advice = _HINTS.get(status, "The server failed: see its log.")
            if attempt == self.max_retries:
                break
            wait = retry_after if retry_after is not None else min(self.max_backoff, self.backoff * 2**attempt)
            if time.monotonic() + wait >= deadline:
                last_error += f"; waiting {wait:g}s more would pass the {self.timeout:g}s deadline"
                break
            time.sleep(wait)
        if not answered:
            server_down.set()  # unreachable or not answering: later requests of this call need not retry
        raise JudgeUnavailableError(self._redact(
            f"Judge server at {shown} gave no usable answer in {attempt + 1} attempt(s) (last: {last_error}). {advice}"
        ))

    def _attempt(self, method: str, url: str, payload: dict | None, deadline: float):
        """`(status, headers, body)` of one attempt, finished by `deadline` on the wall clock, else `_DeadlineExceeded`.

        httpx bounds each read, not the whole reply, so the attempt runs in its own thread, waited for until the
        deadline; a reply still arriving then is abandoned, and its thread stops at its next chunk."""
        progress, done = {"received": None}, threading.Event()

        def run():
            try:
                progress["value"] = self._transfer(method, url, payload, deadline, progress)
            except BaseException as error:  # handed to the waiting thread
                progress["error"] = error
            finally:
                done.set()

        threading.Thread(target=run, name="judge-attempt", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise _DeadlineExceeded(_progress_note(progress["received"]))
        if "error" in progress:
            raise progress["error"]
        return progress["value"]

    def _transfer(self, method: str, url: str, payload: dict | None, deadline: float, progress: dict):
        import httpx

        remaining = max(deadline - time.monotonic(), 1e-3)
        request = self._client.build_request(method, url, json=payload, timeout=httpx.Timeout(remaining))
        response = self._client.send(request, stream=True)
        try:
            body = bytearray()
            progress["received"] = 0
            for chunk in response.iter_bytes():
                body += chunk
                progress["received"] = len(body)
                if time.monotonic() > deadline:
                    raise _DeadlineExceeded(_progress_note(len(body)))
            return response.status_code, response.headers, bytes(body)
        finally:
            response.close()

    def _json(self, body: bytes, shown: str) -> dict:
        try:
            return json.loads(body)
        except ValueError:
            raise RuntimeError(self._redact(
                f"Judge server at {shown} answered with invalid JSON: {_excerpt(body)!r}."
            )) from None

    def _redact(self, text: str) -> str:
        return redact_credentials(text, *self._secrets)

    def available_models(self) -> list[str]:
        """The model names the server serves (`GET /v1/models`), with the same timeout and retry policy."""
        data = self._send("GET", self.models_url, None, threading.Event())
        return [entry.get("id") for entry in data.get("data", [])]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_arguments(base_url, batch_size, timeout, max_retries, backoff, on_error) -> None:
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


class _DeadlineExceeded(Exception):
    """An attempt did not finish by its request's deadline (the message adds what had arrived, if anything)."""


def _progress_note(received: int | None) -> str:
    if received is None:
        return " (no reply had begun)"
    return f" (the reply had begun: {received} bytes of its body had arrived)"


def _excerpt(body: bytes, limit: int = 200) -> str:
    """The start of a reply body as text, for error messages."""
    text = body.decode("utf-8", errors="replace").strip()
    return text[:limit] + ("..." if len(text) > limit else "") if text else "(empty body)"


def _retry_after(headers) -> float | None:
    """The seconds a `Retry-After` header asks to wait (a number or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _rows(kwargs: dict, n: int) -> list[dict]:
    """Per-completion dataset columns from TRL's keyword lists (trainer objects and odd-length values are skipped)."""
    columns = {
        key: list(values)
        for key, values in kwargs.items()
        if key not in _NOT_COLUMNS and isinstance(values, (list, tuple)) and len(values) == n
    }
    return [{key: values[i] for key, values in columns.items()} for i in range(n)]


def _reply_text(data: dict, url: str) -> str:
    """The assistant text of a chat-completions response (empty for a null content)."""
    try:
        return data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RuntimeError(redact_credentials(
            f"Judge server at {url} answered without choices[0].message: {str(data)[:200]}."
        )) from None
