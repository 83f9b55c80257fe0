"""The embedded tiers with several sequences at once: llama.cpp's own `llama-server` as a
child process of the run, driven through the `openai` backend.

`make install` builds `llama-server` once per machine from the llama.cpp source that
llama-cpp-python 0.3.36 vendors, with the wheel's AVX2 flags (scripts/build_llama_server.sh),
into ~/.cache/synth-factory/bin. `load()` starts it on 127.0.0.1, on a free port, with
`parallel` slots of `n_ctx` tokens each, and waits for /health; `generate` sends the batch
through `OpenAIBackend` with `parallel` requests in flight, so the server decodes them
together (continuous batching), each with its own sampling, seed and JSON-schema grammar
(json_object + schema, the same grammar the in-process backend builds).

The child never outlives the run: it runs in its own session (a terminal's Ctrl-C reaches
the run, which finishes the chunk in flight, not the server); the kernel kills it when the
thread that started it ends (PR_SET_PDEATHSIG; that thread lives as long as the process);
`close()` and an atexit hook stop it. A child that dies, or stops answering, during a chunk
is killed, started again and sent the requests it lost, inside the same `generate` call: the
chunk comes back whole and is committed once (ids are deterministic). More than
`max_restarts` restarts in one call is a `BackendUnavailable` that names the server's log.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from synth.backends.base import BackendUnavailable, GenerationRequest, GenerationResult
from synth.backends.embedded import model_label, resolve_gguf

log = logging.getLogger(__name__)

SERVER_VERSION = "0.3.36"  # the llama-cpp-python release whose vendored llama.cpp it is built from
BUILD_HINT = ("run `make install` (it builds llama-server once per machine) or set backend.parallel: 1 "
              "(one sequence at a time, in process)")
_PR_SET_PDEATHSIG = 1


def server_binary() -> Path:
    """The llama-server executable: $SYNTH_LLAMA_SERVER, else the one `make install` built."""
    default = Path.home() / ".cache" / "synth-factory" / "bin" / f"llama-server-{SERVER_VERSION}-avx2"
    path = Path(os.environ.get("SYNTH_LLAMA_SERVER") or default)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BackendUnavailable(f"llama-server: no executable at {path}: {BUILD_HINT}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Starter:
    """Runs `Popen` on one thread that lives as long as the process. PR_SET_PDEATHSIG fires
    when the *thread* that forked the child ends, and the thread that calls `load()` (a
    Prefect task's worker, a Ray actor's) may end long before the run does."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="llama-server-starter", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who raises it
                future.set_exception(exc)


_STARTER = _Starter()
_LIVE: "set[ServerProcess]" = set()  # strong references: a backend dropped unclosed is still stopped at exit


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """The child's pre-exec step: SIGKILL when its parent goes (even by SIGKILL)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):  # not Linux: close() and atexit still stop it
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(grace_s=2)


# Host memory for llama-server's prompt cache: a slot whose prompt was overwritten (a question
# wave between two answer waves) gets a cached prefix back instead of reading it again. Every
# answer prompt of a run opens with the same worked examples (synth/strategies/base.py,
# answer_rows), so after a slot's first answer it reads only the question. A 600-token prompt
# of the 1.5B tier holds about 17 MiB; the cache grows only as prompts are cached.
PROMPT_CACHE_MIB = 1024


class ServerProcess:
    """One llama-server child: start, probe, stop. Its log goes to a file, not a pipe (a full
    pipe would block it); the file is removed when the server stops cleanly."""

    def __init__(self, binary: Path, model: Path, parallel: int, n_ctx: int, threads: int,
                 wait_s: float = 300.0) -> None:
        self.binary, self.model, self.parallel, self.n_ctx, self.threads = binary, model, parallel, n_ctx, threads
        self.wait_s = wait_s
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self, port: int) -> list[str]:
        return [str(self.binary), "--model", str(self.model), "--host", "127.0.0.1", "--port", str(port),
                "--parallel", str(self.parallel), "--ctx-size", str(self.parallel * self.n_ctx),  # n_ctx per slot
                "--threads", str(self.threads), "--threads-batch", str(self.threads),
                "--cache-ram", str(PROMPT_CACHE_MIB), "--no-webui"]

    def start(self) -> str:
        """Start it and wait until /health answers; the base URL (ending in /v1)."""
        import httpx

        handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(name)
        port = free_port()
        try:
            self.process = _STARTER.run(lambda: subprocess.Popen(
                self.command(port), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(os.getpid())))
        except OSError as exc:
            raise BackendUnavailable(f"llama-server {self.binary} cannot be started ({exc.strerror or exc}): "
                                     f"{BUILD_HINT}") from None
        finally:
            os.close(handle)
        _LIVE.add(self)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    self.url = f"{base}/v1"
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        why = self.exit_reason() if self.process.poll() is not None else f"no answer on /health in {self.wait_s:g} s"
        tail = self.log_tail()
        self.stop(keep_log=True)
        raise BackendUnavailable(f"llama-server {self.binary} did not start ({why}; its log {self.log_path} ends: "
                                 f"{tail or '(empty)'}): {BUILD_HINT}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self, path: str = "/health", timeout_s: float = 5.0) -> bool:
        """Does it answer `path`? /health is served by its HTTP threads; /slots waits for
        its decoding loop, so it tells a stuck loop from a busy one."""
        import httpx

        try:
            return httpx.get(self.url.removesuffix("/v1") + path, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the group is only it

    def stop(self, grace_s: float = 5.0, keep_log: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=grace_s)
            except ProcessLookupError:
                pass
        _LIVE.discard(self)
        if self.log_path is not None and not keep_log:
            self.log_path.unlink(missing_ok=True)

    def exit_reason(self) -> str:
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self) -> str:
        """The last non-empty line of its log."""
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines()]
        except (OSError, AttributeError):
            return ""
        return next((line for line in reversed(lines) if line), "")[:300]


class LlamaServerBackend:
    """`backend: {kind: llamacpp, parallel: N}` with N >= 2 (synth/backends/llamacpp.py)."""

    name = "llamacpp"

    def __init__(self, model: str = "embedded", n_ctx: int = 2048, n_threads: int | None = None,
                 grammar_patterns: bool = True, parallel: int = 8, timeout_s: float = 1800.0,
                 max_restarts: int = 3, hang_s: float = 60.0) -> None:
        self.model_ref = model
        self.model = model_label(model)
        self.n_ctx, self.n_threads, self.grammar_patterns = n_ctx, n_threads, grammar_patterns
        self.parallel, self.timeout_s, self.max_restarts, self.hang_s = parallel, timeout_s, max_restarts, hang_s
        self.restarts = 0  # over the life of the instance (reports and tests)
        self._server: ServerProcess | None = None
        self._client: Any = None
        self._lock = threading.Lock()  # one batch at a time: the slots are the concurrency

    @property
    def server(self) -> ServerProcess | None:
        return self._server

    def load(self) -> None:
        if self._server is not None and self._server.alive():
            return
        if self._server is not None:  # it died between chunks: say so, then start another
            log.warning("llama-server (pid %s) %s between chunks (its log ends: %s): starting it again",
                        self._server.pid, self._server.exit_reason(), self._server.log_tail() or "(empty)")
            self._server.stop()
            self.restarts += 1
        from synth.backends.cores import free_cores
        from synth.backends.openai import OpenAIBackend

        binary, path = server_binary(), resolve_gguf(self.model_ref)
        self._server = ServerProcess(binary, path, self.parallel, self.n_ctx, self.n_threads or free_cores())
        url = self._server.start()
        # one retry: a refused connection means the child is gone, which generate() mends
        self._client = OpenAIBackend(url, model=self.model, concurrency=self.parallel, timeout_s=self.timeout_s,
                                     max_retries=1, backoff_base_s=0.2, format_mode="json_object",
                                     grammar_patterns=self.grammar_patterns)
        self._client.load()

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._client = None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        with self._lock:
            restarts = 0
            while todo:
                self.load()
                out, lost = self._send([requests[i] for i in todo])
                if not lost:
                    for i, result in zip(todo, out):
                        results[i] = result
                    break
                why = self._server.exit_reason() if not self._server.alive() else "stopped answering"
                failed = [i for i, result in zip(todo, out or [None] * len(todo)) if result is None or not result.ok]
                for i, result in zip(todo, out or []):
                    if result.ok:
                        results[i] = result
                restarts += 1
                self.restarts += 1
                if restarts > self.max_restarts:
                    tail, log_path = self._server.log_tail(), self._server.log_path
                    self._server.stop(keep_log=True)
                    self._server = None
                    raise BackendUnavailable(
                        f"llama-server {why} {restarts} times in one chunk (its log {log_path} ends: {tail or '(empty)'}):"
                        " nothing of this chunk was written; rerun to resume, or set backend.parallel: 1")
                log.warning("llama-server (pid %s) %s during a chunk (its log ends: %s): starting it again and sending "
                            "its %d unanswered requests again", self._server.pid, why,
                            self._server.log_tail() or "(empty)", len(failed))
                self._server.stop(grace_s=1)
                self._server = None
                todo = failed
        return results  # type: ignore[return-value]

    def _send(self, requests: list[GenerationRequest]) -> tuple[list[GenerationResult] | None, bool]:
        """The client's results, and whether the child was lost during the call (dead, or
        hung: then killed here), so that its failed requests must be sent again."""
        with self._watchdog():
            try:
                out = self._client.generate(requests)
            except BackendUnavailable:  # no request got a connection
                out = None
        if not self._server.alive():
            return out, True
        if out is not None and all(result.ok for result in out):
            return out, False
        if self._server.answers("/slots", timeout_s=min(self.hang_s, 30.0)):
            if out is None:
                raise BackendUnavailable(f"llama-server at {self._server.url} refuses connections while it runs: "
                                         "rerun; if it persists, set backend.parallel: 1")
            return out, False  # the requests failed on their own (too long, bad schema): values
        self._server.kill()  # alive but its decoding loop does not answer: hung
        return out, True

    @contextmanager
    def _watchdog(self) -> Iterator[None]:
        """Kill the child when it stops answering /health for `hang_s` during a call (a
        frozen process): its requests then fail at once instead of at their timeout."""
        done = threading.Event()
        server = self._server

        def watch() -> None:
            silent_since = None
            while not done.wait(2.0):
                if not server.alive():
                    return
                if server.answers("/health", timeout_s=5.0):
                    silent_since = None
                    continue
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since >= self.hang_s:
                    log.warning("llama-server (pid %s) has not answered /health for %g s: killing it",
                                server.pid, self.hang_s)
                    server.kill()
                    return

        thread = threading.Thread(target=watch, name="llama-server-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
