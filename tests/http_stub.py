"""A scripted HTTP server on 127.0.0.1 for tests of HTTP clients (the openai backend,
and any test that needs a misbehaving server).

A test passes a handler, `StubRequest -> StubResponse`, that decides each answer: a
status, a body, headers, a delay before answering, a slow drip of the body, or no
Content-Length. The server records every request (`.requests`) and the most requests
it held at once (`.max_in_flight`).

Bounded on purpose, so a test that goes wrong fails instead of hanging: request bodies
over 1 MB get 413, at most 64 requests are handled at once, sockets time out after
10 s, and delays end as soon as the server stops. It leaves out TLS, keep-alive (each
response closes its connection, HTTP/1.0 style) and streaming responses.

Example::

    with StubServer(lambda req: StubResponse(json=chat_reply("hi"))) as stub:
        httpx.post(stub.url + "/v1/chat/completions", json={})
        assert stub.requests[0].json == {}
"""

from __future__ import annotations

import json as jsonlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MAX_REQUEST_BYTES = 1024 * 1024
MAX_HANDLERS = 64


@dataclass
class StubRequest:
    index: int  # 0-based arrival order over the server's life
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = None  # the body parsed as JSON, or None


@dataclass
class StubResponse:
    status: int = 200
    json: Any = None  # sent as the body (application/json) when `body` is None
    body: bytes | str | None = None  # sent as is: for garbled or oversized answers
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering: timeouts, reordering
    drip_s: float = 0.0  # send the body a byte at a time, this long apart
    content_length: bool = True  # False: no Content-Length, the body ends when the connection closes


def chat_reply(text: str, finish_reason: str = "stop", prompt_tokens: int = 7, completion_tokens: int = 5) -> dict:
    """The body an OpenAI-compatible server sends for one chat completion."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


Handler = Callable[[StubRequest], StubResponse]


class StubServer:
    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port  # 0: any free port; a port again: the same server "back" after a stop
        self.requests: list[StubRequest] = []
        self.errors: list[str] = []  # exceptions raised by the handler (a bug in the test)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:41234 (append /v1 for an OpenAI base_url)."""
        if self._server is None:
            raise RuntimeError("the stub server is not started: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "StubServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread forever

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                stub._serve(self)

            def do_POST(self) -> None:
                stub._serve(self)

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        with self._slots:
            length = int(http.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                http.send_error(413, "request body too large for the stub")
                return
            body = http.rfile.read(length) if length else b""
            try:
                parsed = jsonlib.loads(body) if body else None
            except ValueError:
                parsed = None
            with self._lock:
                request = StubRequest(len(self.requests), http.command, http.path,
                                      {k.lower(): v for k, v in http.headers.items()}, body, parsed)
                self.requests.append(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                self._answer(http, request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): expected in timeout tests
            finally:
                with self._lock:
                    self.in_flight -= 1

    def _answer(self, http: BaseHTTPRequestHandler, request: StubRequest) -> None:
        try:
            response = self.handler(request)
        except Exception as exc:  # a bug in the test's handler: answer 599 and keep it for the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
            response = StubResponse(status=599, body=f"stub handler failed: {exc}")
        if response.delay_s and self._stopping.wait(response.delay_s):
            return
        if response.body is not None:
            payload = response.body.encode() if isinstance(response.body, str) else response.body
            content_type = "text/plain"
        else:
            payload = jsonlib.dumps(response.json).encode()
            content_type = "application/json"
        http.send_response(response.status)
        http.send_header("Content-Type", content_type)
        if response.content_length:
            http.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            http.send_header(name, value)
        http.end_headers()
        if response.drip_s:
            for i in range(len(payload)):
                if self._stopping.wait(response.drip_s):
                    return
                http.wfile.write(payload[i:i + 1])
                http.wfile.flush()
        else:
            http.wfile.write(payload)
        http.wfile.flush()
