"""Helpers for tests against a real Prefect server: a free port, `synth serve` as a child
process, bounded waits for deployments and flow runs. Not a test module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent

# `synth serve` as the command line parses it, without `main`'s environment defaults.
SERVE_MAIN = (
    "import sys\n"
    "from flows.cli import build_parser\n"
    "parser = build_parser()\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(port: int, state_dir: Path, cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)  # serve must find the server through --port, as a user's would
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", SERVE_MAIN, "serve", "--port", str(port), "--state-dir", str(state_dir)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (the runner shuts down gracefully on it), then SIGKILL, to the child's own group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue


def wait_for_deployment(client, name: str, process: subprocess.Popen, log: Path, timeout: float = 180):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`synth serve` exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(1)
    raise TimeoutError(f"deployment {name} not registered within {timeout} s:\n{log.read_text()[-3000:]}")


def wait_final(client, flow_run_id: UUID, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished within {timeout} s (state {run.state.name})")
