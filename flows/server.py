"""The local Prefect server the factory reports to: find it, start it, stop it.

`ensure_server` reuses a server that answers `/api/health` on host:port; otherwise it
starts `prefect server start` detached, in its own process group, logging to
`<state_dir>/prefect-server.log` with its pid in `<state_dir>/prefect-server.pid`,
waits for `/api/health` and returns the API URL (`http://host:port/api`; the UI is at
`http://host:port/`). Analytics and telemetry are off: there is no network here.
It also makes sure the server holds the automation that marks a flow run Crashed when
its heartbeats stop (`ensure_crash_automation`: a run whose process was killed would
otherwise stay Running in the UI forever); `synth` turns heartbeats on.

`prefect_api_for_run` is what `synth run` does first: a `PREFECT_API_URL` that does not
answer is one line, and without one the temporary server is started shielded from Ctrl-C.

The server's database is SQLite at `<state_dir>/prefect-server.db` unless
`PREFECT_API_DATABASE_CONNECTION_URL` is set (PostgreSQL: see docs/prefect.md).

The commands `synth server start|stop|status` and `synth serve` are in flows/cli/server.py and serve.py.

Leaves out: remote servers (point `PREFECT_API_URL` at them instead), auth and TLS,
and anything but POSIX process groups. This module imports prefect only inside
`serve` and `prefect_api_for_run`, so that `PREFECT_API_URL` is set before prefect reads its settings.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from synth.errors import SynthError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_STATE_DIR = "data"
# Measured: 20 s on an idle 2-core machine, 45 s while another job compiled; leave room.
DEFAULT_TIMEOUT_S = 120.0
DB_URL_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
NO_TELEMETRY = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
# set in the server's environment to its state folder: `stop` finds the server by it when the
# folder (and its pid file) was deleted, and stops no other program, nor a server of another folder
STATE_MARK = "SYNTH_PREFECT_STATE_DIR"


class ServerError(SynthError, RuntimeError):
    """The Prefect server could not be started, reached or stopped; the message says what to do."""


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def ui_url(api: str) -> str:
    """The UI address for an API URL: the same server without `/api`."""
    return api[: -len("/api")] if api.endswith("/api") else api


def is_healthy(api: str, timeout: float = 2.0) -> bool:
    try:
        response = httpx.get(f"{api}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _paths(state_dir: str | Path) -> tuple[Path, Path, Path]:
    base = Path(state_dir)
    return base / "prefect-server.pid", base / "prefect-server.log", base / "prefect-server.db"


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _our_server_pid(pid_file: Path) -> int | None:
    """The pid in the pid file, if that process is alive and is a Prefect server (not a reused pid)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"prefect" in cmdline and b"server" in cmdline else None


def _marked_server_pid(state_dir: str | Path) -> int | None:
    """The Prefect server started from `state_dir`, found by the mark in its environment: for a
    server whose pid file went with its folder (`rm -rf data` between demo runs). Only a process
    group leader whose command line is a Prefect server counts (its workers carry the mark too)."""
    mark = f"{STATE_MARK}={Path(state_dir).resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pid or mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone, or another user's
            continue
        if b"prefect" in cmdline and b"server" in cmdline:
            return pid
    return None


def _log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def server_env(host: str, port: int, state_dir: str | Path) -> dict[str, str]:
    """The server's environment: ours, telemetry off, the UI pointed at this server, SQLite by default."""
    env = {**os.environ, **NO_TELEMETRY, "PREFECT_API_URL": api_url(host, port),
           STATE_MARK: str(Path(state_dir).resolve())}
    # A PREFECT_UI_API_URL left from elsewhere would send the UI to another server.
    env.pop("PREFECT_UI_API_URL", None)
    if not any(env.get(name) for name in DB_URL_VARS):
        db = _paths(state_dir)[2].resolve()
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db}"
    return env


def _wait_healthy(api: str, deadline: float, process: subprocess.Popen | None, log_file: Path) -> None:
    while time.monotonic() < deadline:
        if is_healthy(api):
            return
        if process is not None and process.poll() is not None:
            raise ServerError(f"`prefect server start` exited with code {process.returncode} before {api} "
                              f"answered; its log ({log_file}) ends with:\n{_log_tail(log_file)}")
        time.sleep(0.5)
    raise ServerError(f"the Prefect server did not answer {api}/health in time; read {log_file}, "
                      "or pass a longer --timeout on a busy machine")


CRASH_AUTOMATION = "synth: mark flow runs without heartbeats Crashed"
CRASH_AFTER_S = 90  # three missed heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30, Prefect's minimum)


def ensure_crash_automation(api: str, after_s: float | None = None) -> str:
    """The server's automation that marks a flow run Crashed when its heartbeats stop for
    `after_s` seconds (Prefect's "zombie flow" recipe; a self-hosted server has none by
    default): created, or updated when `after_s` changed. Returns its id."""
    after_s = float(after_s if after_s is not None else os.environ.get("SYNTH_CRASH_AFTER_S", CRASH_AFTER_S))
    body = {
        "name": CRASH_AUTOMATION, "enabled": True,
        "description": "A flow run whose process was killed sends no more heartbeats: mark it Crashed "
                       "(created by `synth server start`).",
        "trigger": {
            "type": "event", "posture": "Proactive", "threshold": 1, "within": after_s,
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                       "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]}, "for_each": ["prefect.resource.id"]},
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"no heartbeat for {after_s:g} s: the process running it was killed or lost"}],
    }
    try:
        found = httpx.post(f"{api}/automations/filter", timeout=10,
                           json={"automations": {"name": {"any_": [CRASH_AUTOMATION]}}, "limit": 1})
        found.raise_for_status()
        if found.json():
            existing = found.json()[0]
            if float(existing["trigger"].get("within", 0)) != after_s:
                httpx.put(f"{api}/automations/{existing['id']}", json=body, timeout=10).raise_for_status()
            return existing["id"]
        created = httpx.post(f"{api}/automations/", json=body, timeout=10)
        created.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServerError(f"could not set up the crash detection automation on {api} ({exc}); "
                          "is it a Prefect 3 server?") from None
    return created.json()["id"]


def ensure_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = DEFAULT_TIMEOUT_S,
                  state_dir: str | Path = DEFAULT_STATE_DIR) -> str:
    """The API URL of a healthy Prefect server on host:port, started detached if none answers,
    with the automation that marks killed runs Crashed."""
    api = _ensure_server(host, port, timeout, state_dir)
    ensure_crash_automation(api)
    return api


def _ensure_server(host: str, port: int, timeout: float, state_dir: str | Path) -> str:
    api = api_url(host, port)
    if is_healthy(api):
        return api
    pid_file, log_file, _ = _paths(state_dir)
    deadline = time.monotonic() + timeout
    if _our_server_pid(pid_file) is not None:
        # Started earlier (by us or a parallel call) and still coming up: wait, don't start a second one.
        _wait_healthy(api, deadline, None, log_file)
        return api
    if _port_open(host, port):
        raise ServerError(f"{host}:{port} is taken by a program that is not a healthy Prefect server; "
                          "stop it, or pick another port (--port)")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port),
             "--analytics-off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=server_env(host, port, state_dir),
            start_new_session=True,  # its own process group: outlives this command, stopped as a group
        )
    pid_file.write_text(f"{process.pid}\n")
    try:
        _wait_healthy(api, deadline, process, log_file)
    except ServerError:
        _stop_pid(process.pid, 10.0)
        pid_file.unlink(missing_ok=True)
        raise
    return api


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child and exited: reaped, not a zombie
            return False
    except ChildProcessError:
        pass  # not our child: /proc tells
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_pid(pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # the server was started as its own group leader: pgid == pid
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)


def stop_server(state_dir: str | Path = DEFAULT_STATE_DIR, timeout: float = 20.0) -> bool:
    """Stop the server that `ensure_server` started (its pid file says which, else the mark in its
    environment); False if none was running."""
    pid_file, _, _ = _paths(state_dir)
    pid = _our_server_pid(pid_file)
    if pid is None:
        pid = _marked_server_pid(state_dir)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    _stop_pid(pid, timeout)
    return True


def server_pid(state_dir: str | Path = DEFAULT_STATE_DIR) -> int | None:
    """The pid of the server started from `state_dir`, when it is still running."""
    return _our_server_pid(_paths(state_dir)[0]) or _marked_server_pid(state_dir)


def prefect_api_for_run() -> None:
    """Before `synth run` starts its flow: a PREFECT_API_URL that does not answer is a
    `ServerError` now. Without one, Prefect's temporary server is started here with SIGINT
    blocked in it: a Ctrl-C in the terminal reaches the whole process group, and the run
    still needs its API to stop cleanly after the chunk in flight."""
    api = os.environ.get("PREFECT_API_URL")
    if api:
        if not is_healthy(api, timeout=10):
            raise ServerError(f"the Prefect API at {api} does not answer: start it (`synth server start`), "
                              "or unset PREFECT_API_URL to run with a temporary server")
        return
    from prefect.client.orchestration import get_client

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with get_client(sync_client=True):
            pass  # creating the client starts the temporary server: a child, it inherits the mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
