"""The `openai` backend: any OpenAI-compatible chat server (vllm serve, llama.cpp's
servers, hosted APIs) over async HTTP.

What it does: one `POST {base_url}/chat/completions` per request, at most
`concurrency` in flight; retries with exponential backoff and jitter on 429, 5xx,
timeouts and connection errors (honouring a capped `Retry-After`), at most
`max_retries` times; every failure ends as an error value on that request's result,
never as an exception that loses the batch, except when no request of the batch got
a connection at all (refused, reset): the server is gone, and `BackendUnavailable`
names it instead of a batch of rejects (a slow server's timeouts stay error values). Structured output goes as
`response_format` json_schema, falling back to json_object (+ schema, the
llama-cpp-python server's dialect) and then to none when the server refuses it; the
mode that works is remembered for the life of the instance.

What it leaves out: streaming, tool calls, the legacy completions endpoint, and
health probing (a dead server shows up as connection errors on each request).

The API key is read from the environment variable *named* by `api_key_env` at
`load()`; it is never part of repr, logs or error strings (a server that echoes it
back gets it redacted).

Example::

    backend = OpenAIBackend("http://127.0.0.1:8000/v1", model="Qwen/Qwen3-8B")
    backend.load()
    results = backend.generate(requests)   # same order as requests
    backend.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import random
import time
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Sequence
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from synth.backends.base import (LENGTH_BOUND, BackendSettingsBase, BackendUnavailable, GenerationRequest,
                                 GenerationResult)
from synth.backends.embedded import EMBEDDED_MODEL_NAME
from synth.errors import BadInput
from synth.task.formats import grammar_schema, ran_to_bound

log = logging.getLogger(__name__)

# Structured-output dialects, most specific first; the instance walks down this list
# when a server refuses one, and stays where it found one that works.
FORMAT_MODES = ("json_schema", "json_object", "none")
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema")
_SNIPPET_CHARS = 300


class OpenAIConfigError(BadInput, ValueError):
    """The backend settings cannot work; the message says what to write."""


class OpenAISettings(BackendSettingsBase):
    """`backend: {kind: openai, base_url: ...}`: any OpenAI-compatible chat server."""

    kind: Literal["openai"] = "openai"
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of the variable that holds the key, never the key
    concurrency: int = Field(default=8, gt=0, le=1024)
    timeout_s: float = Field(default=120, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)

    @field_validator("api_key_env")
    @classmethod
    def _key_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError("write the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself")
        return value

    def build(self) -> "OpenAIBackend":
        return OpenAIBackend.from_settings(self)


class _Secret:
    """Holds the API key so that repr/vars of the backend never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class _Retryable(Exception):
    """One attempt failed in a way worth another try; `wait_s` is the server's hint."""

    def __init__(self, reason: str, wait_s: float | None = None, status: int | None = None,
                 body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s
        self.status = status  # None: no HTTP answer in time; 0: no connection at all
        self.body = body


class _Refused(Exception):
    """One attempt failed in a way another try would not mend."""


@dataclass
class _Attempt:
    status: int
    body: bytes


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        model: str = "embedded",
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
        max_response_bytes: int = 20 * 1024 * 1024,
        format_mode: str = "json_schema",  # the dialect to start in: json_object for a llama.cpp server we run
        grammar_patterns: bool = True,  # json_object: output fields' patterns in the grammar (the llamacpp setting)
    ) -> None:
        if not base_url:
            raise OpenAIConfigError(
                "backend.base_url is required for kind 'openai': write the API root of the server, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenAIConfigError(
                f"backend.base_url {base_url!r} is not an http(s) URL: write e.g. http://127.0.0.1:8000/v1"
            )
        if parts.username or parts.password:
            # a key in the URL would end up in error strings and logs
            raise OpenAIConfigError(
                "backend.base_url carries credentials: remove them and put the key in the variable "
                "named by backend.api_key_env"
            )
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise OpenAIConfigError("concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        # "embedded" means the SmolLM2 model served by a local llama.cpp server; send its name
        self.model = EMBEDDED_MODEL_NAME if model == "embedded" else model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retry_after_cap_s = retry_after_cap_s
        self.max_response_bytes = max_response_bytes
        self._key: _Secret | None = None
        self._loaded = False
        self._format_mode = FORMAT_MODES.index(format_mode)  # index into FORMAT_MODES
        self._format_confirmed = False  # a structured request succeeded in this mode
        self.grammar_patterns = grammar_patterns
        self._unanswered = 0
        self.attempts = 0  # HTTP attempts made, retries included (for reports and tests)

    @classmethod
    def from_settings(cls, settings: OpenAISettings) -> "OpenAIBackend":
        return cls(
            base_url=settings.base_url,
            model=settings.model,
            api_key_env=settings.api_key_env,
            concurrency=settings.concurrency,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    def __repr__(self) -> str:
        key = "unset" if self.api_key_env is None else f"from ${self.api_key_env}"
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    @property
    def format_mode(self) -> str:
        """The structured-output dialect this instance currently sends."""
        return FORMAT_MODES[self._format_mode]

    def load(self) -> None:
        if self._loaded:
            return
        try:
            import httpx  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"openai backend needs httpx: run `pip install httpx` ({exc})") from None
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise BackendUnavailable(
                    f"backend.api_key_env names ${self.api_key_env}, which is not set: "
                    f"export {self.api_key_env}=<your key> before running"
                )
            self._key = _Secret(value)
        self._loaded = True

    def close(self) -> None:
        # clients live inside one generate() call (they are bound to its event loop)
        self._key = None
        self._loaded = False

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        requests = list(requests)
        if not requests:
            return []
        self._unanswered = 0  # requests that never got a connection, retries spent
        try:
            in_loop = asyncio.get_running_loop() is not None
        except RuntimeError:
            in_loop = False
        if in_loop:  # the caller runs a loop in this thread (an async Prefect task, a notebook):
            # blocking it with asyncio.run is refused, so run ours in a worker thread.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openai-backend") as pool:
                results = pool.submit(asyncio.run, self._batch(requests)).result()
        else:
            results = asyncio.run(self._batch(requests))
        if self._unanswered == len(requests):
            raise BackendUnavailable(f"the server at {self.base_url} does not answer ({results[0].error}): start it or "
                                     "fix backend.base_url, then rerun: the run resumes, nothing committed is lost")
        return results

    # --- one batch -------------------------------------------------------------------

    async def _batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        import httpx

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.get()}"
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        semaphore = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            headers=headers, limits=limits, timeout=httpx.Timeout(self.timeout_s), follow_redirects=False
        ) as client:

            async def bounded(request: GenerationRequest) -> GenerationResult:
                async with semaphore:
                    return await self._one(client, request)

            return list(await asyncio.gather(*(bounded(r) for r in requests)))

    async def _one(self, client: Any, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        try:
            result = await self._one_unsafe(client, request, started)
        except Exception as exc:  # a bug or a surprise must cost one request, not the batch
            result = self._error(request, started, f"unexpected {type(exc).__name__}: {exc}")
        return result

    async def _one_unsafe(self, client: Any, request: GenerationRequest, started: float) -> GenerationResult:
        structured = request.json_schema is not None
        mode = self._format_mode if structured else FORMAT_MODES.index("none")
        retries = 0
        while True:
            payload = self._payload(request, FORMAT_MODES[mode])
            try:
                attempt = await self._post(client, payload)
            except _Refused as exc:
                return self._error(request, started, str(exc))
            except _Retryable as exc:
                if structured and self._is_format_refusal(mode, exc.status, exc.body):
                    mode = self._fall_back(mode)
                    continue
                if retries >= self.max_retries:
                    self._unanswered += exc.status == 0
                    return self._error(request, started, f"{exc.reason} (gave up after {retries + 1} attempts)")
                await asyncio.sleep(self._backoff(retries, exc.wait_s))
                retries += 1
                continue
            if 200 <= attempt.status < 300:
                if structured and mode == self._format_mode:
                    self._format_confirmed = True
                result = self._parse(request, attempt.body, started)
                if (FORMAT_MODES[mode] == "json_object" and result.ok and self.grammar_patterns
                        and ran_to_bound(request.json_schema, result.text, request.sampling.max_tokens)):
                    result = dataclasses.replace(result, finish_reason=LENGTH_BOUND)  # llama.cpp's grammar ended it
                return result
            if structured and self._is_format_refusal(mode, attempt.status, attempt.body):
                mode = self._fall_back(mode)
                continue
            reason = f"HTTP {attempt.status}: {self._snippet(attempt.body)}"
            return self._error(request, started, reason + " (not retried: fix the request or the settings)")

    def _is_format_refusal(self, mode: int, status: int | None, body: bytes) -> bool:
        """Did the server refuse the response_format dialect (rather than the request)?"""
        if FORMAT_MODES[mode] == "none" or status is None:
            return False
        text = body[:20000].decode("utf-8", "replace").lower()
        if status in (400, 422):
            # before a mode is known to work, any 400 on a structured request counts
            return not self._format_confirmed or any(word in text for word in _FORMAT_WORDS)
        if status >= 500:
            # llama-cpp-python's server answers an unknown response_format type with 500
            return "response_format" in text or FORMAT_MODES[mode] in text
        return False

    def _fall_back(self, mode: int) -> int:
        log.info("server refused response_format %s; falling back", FORMAT_MODES[mode])
        if self._format_confirmed:
            return mode + 1  # this mode works for other schemas: fall back for this request only
        self._format_mode = max(self._format_mode, mode + 1)  # remembered for every later request
        return self._format_mode

    async def _post(self, client: Any, payload: dict[str, Any]) -> _Attempt:
        """One HTTP attempt; raises _Retryable for what deserves another try."""
        import httpx

        self.attempts += 1
        try:
            # wait_for bounds the whole attempt: httpx's timeout is per read, and a
            # server that drips a byte a second would otherwise hold us forever
            return await asyncio.wait_for(self._post_inner(client, payload), self.timeout_s)
        except asyncio.TimeoutError:
            raise _Retryable(f"timed out after {self.timeout_s:g} s") from None
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except httpx.DecodingError as exc:
            raise _Refused(f"response body cannot be decoded ({exc})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})", status=0) from None

    async def _post_inner(self, client: Any, payload: dict[str, Any]) -> _Attempt:
        async with client.stream("POST", f"{self.base_url}/chat/completions", json=payload) as response:
            status = response.status_code
            if status == 429 or status >= 500:
                hint = await self._read_bounded(response, 2048)
                reason = f"HTTP {status}: {self._snippet(hint)}" if hint else f"HTTP {status}"
                raise _Retryable(reason, self._retry_after(response.headers.get("retry-after")), status, hint)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise _Refused(f"response of {declared} bytes is over the {self.max_response_bytes} byte limit")
            body = await self._read_bounded(response, self.max_response_bytes + 1)
            if len(body) > self.max_response_bytes:
                raise _Refused(f"response is over the {self.max_response_bytes} byte limit")
            return _Attempt(status, body)

    @staticmethod
    async def _read_bounded(response: Any, limit: int) -> bytes:
        """At most `limit` bytes of the body: a hostile server cannot fill our memory."""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(chunks)[:limit]

    def _payload(self, request: GenerationRequest, mode: str) -> dict[str, Any]:
        s = request.sampling
        payload: dict[str, Any] = {
            "model": self.model,
            # plain-string content: llama-cpp-python's server fails with 500 on lists of parts
            "messages": [{"role": str(m["role"]), "content": str(m["content"])} for m in request.messages],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.seed is not None:
            payload["seed"] = s.seed & 0x7FFFFFFF  # same seed as the llamacpp backend; fits every server
        if request.json_schema is not None and mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        elif request.json_schema is not None and mode == "json_object":
            # json_object + schema is llama.cpp's server dialect: patterns in its grammar's dialect
            schema = grammar_schema(request.json_schema, request.sampling.max_tokens, self.grammar_patterns)
            payload["response_format"] = {"type": "json_object", "schema": schema}
        return payload

    def _parse(self, request: GenerationRequest, body: bytes, started: float) -> GenerationResult:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._error(request, started, f"response body is not JSON: {self._snippet(body)}")
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content")
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            finish_reason = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            return self._error(request, started, f"response has no choices[0].message: {self._snippet(body)}")
        if content is None and message.get("refusal"):
            return self._error(request, started, f"model refused: {self._snippet(str(message['refusal']).encode())}")
        if not isinstance(content, (str, type(None))):
            return self._error(request, started, f"message content is not a string: {self._snippet(body)}")
        return GenerationResult(
            key=request.key,
            text=content or "",
            finish_reason=str(finish_reason) if finish_reason is not None else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - started,
        )

    # --- helpers -----------------------------------------------------------------------

    def _backoff(self, retries: int, hint_s: float | None) -> float:
        if hint_s is not None:
            return min(hint_s, self.retry_after_cap_s)
        delay = min(self.backoff_cap_s, self.backoff_base_s * (2**retries))
        return delay / 2 + random.uniform(0, delay / 2)  # jitter: clients that failed together spread out

    @staticmethod
    def _retry_after(value: str | None) -> float | None:
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - time.time())

    def _snippet(self, body: bytes) -> str:
        text = body[: _SNIPPET_CHARS * 4].decode("utf-8", "replace")
        text = "".join(c if c.isprintable() else " " for c in text)[:_SNIPPET_CHARS]
        return self._redact(text)

    def _redact(self, text: str) -> str:
        if self._key is not None and self._key.get():
            text = text.replace(self._key.get(), "<redacted>")
        return text

    def _error(self, request: GenerationRequest, started: float, reason: str) -> GenerationResult:
        return GenerationResult(key=request.key, error=self._redact(reason), latency_s=time.perf_counter() - started)
