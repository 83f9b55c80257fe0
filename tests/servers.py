"""Real servers for tests and benchmarks: start one on loopback, wait until it
answers, stop it.

`start_llama_server()` runs llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, the `llama-cpp-python[server]` extra) on the embedded
SmolLM2 model, served under the name the catalog records for it
(`synth.backends.embedded.EMBEDDED_MODEL_NAME`). It leaves out vLLM's server (GPU machines)
and anything that binds beyond 127.0.0.1.

Example::

    url, process = start_llama_server()
    try:
        backend = OpenAIBackend(url)      # url ends in /v1
        ...
    finally:
        stop_server(process)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from synth.backends.embedded import EMBEDDED_MODEL_NAME, embedded_gguf


class ServerFailed(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_llama_server(
    port: int | None = None,
    model: Path | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    wait_s: float = 60.0,
    cpus: set[int] | None = None,
) -> tuple[str, subprocess.Popen]:
    """Start `python -m llama_cpp.server` and return (base_url ending in /v1, process).

    `cpus` pins the server to those cores and sizes both its thread pools to them
    (benchmarks give it cores of its own, as a server on another machine would have)."""
    port = port or free_port()
    model = model or embedded_gguf()
    log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
    if cpus:
        n_threads = n_threads or len(cpus)
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", EMBEDDED_MODEL_NAME if model == embedded_gguf() else model.stem,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads or max(1, (os.cpu_count() or 2) // 2)),
    ]
    if cpus:
        # prompt processing otherwise uses every core, the client's too
        command += ["--n_threads_batch", str(n_threads)]
    # its own log file, not a pipe: a full pipe would block the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if cpus:
        os.sched_setaffinity(process.pid, cpus)  # before the model loads and its threads start
    process.log_path = log.name  # type: ignore[attr-defined]  # read it when a test fails
    log.close()
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = Path(log.name).read_text(errors="replace")[-2000:]
    stop_server(process)
    raise ServerFailed(
        f"llama_cpp.server did not answer {url}/models within {wait_s:g} s "
        f"(exit code {process.returncode}); is `llama-cpp-python[server]` installed? Log tail:\n{tail}"
    )


def stop_server(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate, then kill if it has not exited after `grace_s`; remove its log."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)
    log_path = getattr(process, "log_path", None)
    if log_path:
        Path(log_path).unlink(missing_ok=True)
