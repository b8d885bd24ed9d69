"""HTTP requests with a deadline on the wall clock, bounded retries and redacted errors: the judge's transport.

`timeout` is one request's deadline: connecting, sending, and reading the whole reply, retries and the waits between
them included (a server that trickles its reply a byte at a time is cut off at the deadline all the same). A failed
attempt (no connection, HTTP 5xx or 429) is retried at most `max_retries` times within the deadline, after
exponential backoff or after the server's `Retry-After`; other HTTP errors fail at once. A reply body is read as
it streams in and cut off at `max_reply_bytes` (a declared `Content-Length` above it fails before the body is read),
so a broken or hostile server cannot fill the memory. Secrets and URL credentials show as `***` in every error.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time

_HINT = "Is the server (e.g. `vllm serve`) running and reachable at that address?"
_HINTS = {
    429: "The server is rate-limiting: lower batch_size, or raise timeout to leave room for its Retry-After.",
    401: "The server needs an API key: set judge_api_key (or $DIPOD_JUDGE_API_KEY / $OPENAI_API_KEY), or check it.",
}
_HINTS[403] = _HINTS[401]
_USERINFO = re.compile(r"""(?i)((?:\b[a-z][a-z0-9+.-]*://)?)[^/?#@\s'"]+@""")  # [scheme://]user:password@


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


class DeadlineClient:
    """JSON requests to one server, each finished within `timeout` seconds of wall clock, retries included, each
    reply body at most `max_reply_bytes` long."""

    def __init__(self, timeout: float, max_retries: int, backoff: float, max_backoff: float, api_key: str | None,
                 max_reply_bytes: int):
        import httpx

        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._secrets = (api_key,)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, trust_env=False)

    def send(self, method: str, url: str, payload: dict | None, server_down: threading.Event,
             refusal_hint: str = "") -> dict:
        """One request within the deadline `timeout`; raises `JudgeUnavailableError` naming `url` (credentials
        redacted) and what the server answered when attempts or time run out. `refusal_hint` ends the message of
        an HTTP 4xx refusal that has no hint of its own (e.g. the model name asked for)."""
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
            except _ReplyTooLarge as error:  # not retried: the next reply would be as large
                raise RuntimeError(self._redact(
                    f"Judge server at {shown} sent a reply larger than max_reply_bytes={self.max_reply_bytes} "
                    f"({self.max_reply_bytes / 2**20:g} MiB): {error}; it was not read further. A score takes a few "
                    "hundred bytes: check that base_url is the judge's server and that max_tokens is small, or raise "
                    "the limit (judge_max_reply_bytes in a recipe, max_reply_bytes of JudgeReward)."
                )) from None
            except httpx.TransportError as error:
                last_error, advice = f"{type(error).__name__}: {error}", _HINT
            else:
                if status < 400:
                    return self._json(body, shown)
                if status != 429 and status < 500:
                    hint = _HINTS.get(status, refusal_hint)
                    raise RuntimeError(self._redact(
                        f"Judge server at {shown} refused the request with HTTP {status}: {_excerpt(body)}. {hint}"
                    ).rstrip())
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
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise _ReplyTooLarge(f"its Content-Length says {int(declared)} bytes")
            body = bytearray()
            progress["received"] = 0
            for chunk in response.iter_bytes():
                body += chunk
                progress["received"] = len(body)
                if len(body) > self.max_reply_bytes:
                    raise _ReplyTooLarge(f"{len(body)} bytes of it had arrived")
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

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


class _DeadlineExceeded(Exception):
    """An attempt did not finish by its request's deadline (the message adds what had arrived, if anything)."""


class _ReplyTooLarge(Exception):
    """A reply body longer than `max_reply_bytes` (the message says how long it was, or was said to be)."""


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
