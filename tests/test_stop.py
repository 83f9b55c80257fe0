"""Stopping a run for real: Ctrl-C and SIGTERM to `synth run`, Cancel through the Prefect API
(what the UI's button sends) for a command-line run and for a deployment run that
`synth serve` started, and SIGKILL, after which the server marks the flow run Crashed
(heartbeats) and the next run supersedes it. The backend is an OpenAI-compatible stub
that answers slowly, so a signal lands while a chunk is in flight.

What every case checks: the chunk in flight is committed (every request the stub served
has its row in the catalog), the run is marked `interrupted`, the exit code is 130 / 143,
the last line says so with no traceback, and a rerun resumes to exactly the target with
nothing twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from storage.catalog.catalog import Catalog
from synth.config.recipe import load_recipe
from tests.conftest import write_recipe
from tests.fault_env import math_answer, openai_backend, synth, synth_env, synth_popen
from tests.http_stub import StubServer
from tests.prefect_live import free_port, start_serve, stop_process, wait_final, wait_for_deployment

TARGET, CHUNK = 24, 4  # new_question: two requests per attempt, eight per chunk
CRASH_AFTER_S = 60  # the server's heartbeat automation in these tests (heartbeats every 30 s)


def slow_recipe(tmp_path: Path, stub: StubServer) -> Path:
    return write_recipe(tmp_path, generation={"target": TARGET, "budget": 400, "chunk_size": CHUNK,
                                              "strategy": "new_question"},
                        backend=openai_backend(stub.url))


def wait_requests(stub: StubServer, n: int, process, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(stub.requests) < n:
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {n} requests"
        assert time.monotonic() < deadline, f"only {len(stub.requests)} requests in {timeout} s"
        time.sleep(0.05)


def stopped_line(log: Path) -> str:
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("stopped: interrupted by "), text[-3000:]
    return last


def check_interrupted_then_resume(tmp_path: Path, stub: StubServer, path: Path, env=None) -> None:
    catalog = tmp_path / "catalog.duckdb"
    with Catalog(catalog, read_only=True) as cat:
        (run,) = cat.runs(("status", "message", "attempts"))
        committed = cat.count("requests")
        done = cat.count("samples", distinct="slot", status="accepted")
        assert cat.integrity_problems() == []
    assert run["status"] == "interrupted" and "run the same recipe again to resume" in run["message"]
    assert committed == len(stub.requests)  # the chunk in flight was finished and committed, not lost
    assert 0 < done < TARGET
    resumed = synth(["run", str(path), "--no-export"], tmp_path, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with Catalog(catalog, read_only=True) as cat:
        assert cat.count("samples", distinct="slot", status="accepted") == TARGET
        assert cat.count("samples", status="accepted") == TARGET
        assert [r["attempts"] for r in cat.runs(("attempts",))] == [run["attempts"] + 1]
        assert cat.integrity_problems() == []  # no sample id written twice, nor anything else


@pytest.mark.slow
@pytest.mark.parametrize("how, code", [("SIGINT to the group", 130), ("SIGTERM", 143), ("SIGINT twice", 130)])
def test_signal_stops_after_the_chunk_in_flight(tmp_path, how, code):
    with StubServer(lambda r: math_answer(r, delay_s=0.3)) as stub:
        path = slow_recipe(tmp_path, stub)
        log = tmp_path / "run.log"
        process = synth_popen(["run", str(path), "--no-export"], tmp_path, log=log)
        try:
            wait_requests(stub, CHUNK * 2 + 3, process)  # inside the second chunk
            if how == "SIGTERM":
                os.kill(process.pid, signal.SIGTERM)
            else:
                os.killpg(process.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole group
                if how == "SIGINT twice":
                    time.sleep(0.05)
                    os.killpg(process.pid, signal.SIGINT)
            assert process.wait(120) == code, log.read_text()[-3000:]
        finally:
            stop_process(process)
        if how == "SIGINT twice":  # at once: the chunk in flight is lost, the rest is kept
            text = log.read_text()
            assert "Traceback" not in text and "error: stopped by Ctrl-C (SIGINT)" in text.strip().splitlines()[-1]
            with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
                (run,) = cat.runs(("status", "message"))
                assert cat.integrity_problems() == []
            assert run["status"] == "interrupted" and "at once" in run["message"]
            assert synth(["run", str(path), "--no-export"], tmp_path).returncode == 0
            return
        name = "SIGTERM" if how == "SIGTERM" else "Ctrl-C (SIGINT)"
        assert stopped_line(log).startswith(f"stopped: interrupted by {name} with ")
        check_interrupted_then_resume(tmp_path, stub, path)


# -- against a real Prefect server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from flows.server import ensure_crash_automation, ensure_server, stop_server

    state = tmp_path_factory.mktemp("prefect-state")
    try:
        api = ensure_server(port=free_port(), timeout=300, state_dir=state)
        ensure_crash_automation(api, CRASH_AFTER_S)
        yield api, state
    finally:
        stop_server(state)


def flow_runs_of(api: str, run_id: str) -> list:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with SyncPrefectClient(api) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"synth-run:{run_id}"])))


def wait_flow_run(api: str, run_id: str, where, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in flow_runs_of(api, run_id) if where(r)]
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"no flow run of {run_id} as wanted within {timeout} s: "
                       f"{[(r.name, r.state.name) for r in flow_runs_of(api, run_id)]}")


def cancel(api: str, flow_run_id) -> None:
    """What the UI's Cancel button does: propose Cancelling for the flow run."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import Cancelling

    with SyncPrefectClient(api) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled from the UI (test)"))


@pytest.mark.slow
def test_cancel_from_the_ui_stops_a_command_line_run(server, tmp_path):
    api, _ = server
    env = synth_env(PREFECT_API_URL=api)
    with StubServer(lambda r: math_answer(r, delay_s=0.3)) as stub:
        path = slow_recipe(tmp_path, stub)
        run_id = load_recipe(path).hash()
        log = tmp_path / "run.log"
        process = synth_popen(["run", str(path), "--no-export"], tmp_path, env, log)
        try:
            wait_requests(stub, CHUNK * 2 + 3, process)
            (flow_run,) = wait_flow_run(api, run_id, lambda r: r.state.is_running())
            cancel(api, flow_run.id)
            assert process.wait(120) == 130, log.read_text()[-3000:]
        finally:
            stop_process(process)
        assert stopped_line(log).startswith("stopped: interrupted by a cancel from the Prefect UI with ")
        (after,) = [r for r in flow_runs_of(api, run_id) if r.id == flow_run.id]
        assert after.state.is_cancelled(), after.state
        check_interrupted_then_resume(tmp_path, stub, path, env)


@pytest.mark.slow
def test_cancel_from_the_ui_stops_a_deployment_run(server, tmp_path):
    """`synth serve` runs the flow in a child process; Cancel makes its runner send SIGTERM,
    which stops the run after the chunk in flight, as on the command line."""
    from prefect.client.orchestration import SyncPrefectClient

    api, state = server
    port = int(api.rsplit(":", 1)[1].split("/")[0])
    with StubServer(lambda r: math_answer(r, delay_s=0.3)) as stub:
        path = slow_recipe(tmp_path, stub)
        run_id = load_recipe(path).hash()
        serve_log = tmp_path / "serve.log"
        serve = start_serve(port, state, tmp_path, serve_log)
        try:
            with SyncPrefectClient(api) as client:
                deployment = wait_for_deployment(client, "synth-deployment/on-demand", serve, serve_log)
                created = client.create_flow_run_from_deployment(
                    deployment.id, parameters={"params": {"recipe_path": str(path), "export": False}})
                deadline = time.monotonic() + 240
                while len(stub.requests) < CHUNK * 2 + 3:
                    assert time.monotonic() < deadline, serve_log.read_text()[-3000:]
                    time.sleep(0.05)
                cancel(api, created.id)
                final = wait_final(client, created.id, timeout=120)
        finally:
            stop_process(serve)
        assert final.state.is_cancelled(), (final.state, serve_log.read_text()[-3000:])
        assert f"synth-run:{run_id}" in final.tags
        check_interrupted_then_resume(tmp_path, stub, path, synth_env(PREFECT_API_URL=api))


@pytest.mark.slow
def test_killed_run_is_marked_crashed_and_superseded(server, tmp_path):
    """SIGKILL leaves the flow run Running; its heartbeats stop and the server's automation marks
    it Crashed. A run killed and rerun at once is superseded by the rerun, which says so."""
    api, _ = server
    env = synth_env(PREFECT_API_URL=api)
    with StubServer(lambda r: math_answer(r, delay_s=0.3)) as stub:
        path = slow_recipe(tmp_path, stub)
        run_id = load_recipe(path).hash()

        def start_and_kill(log: Path, after: int) -> int:
            process = synth_popen(["run", str(path), "--no-export"], tmp_path, env, log)
            wait_requests(stub, after, process)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            return process.pid

        first_pid = start_and_kill(tmp_path / "first.log", CHUNK * 2 + 3)
        started = time.monotonic()
        (first,) = wait_flow_run(api, run_id, lambda r: r.state.is_crashed(), timeout=CRASH_AFTER_S + 90)
        print(f"the server marked the killed run Crashed {time.monotonic() - started:.0f} s after the kill")
        assert "no heartbeat" in first.state.message

        second_pid = start_and_kill(tmp_path / "second.log", len(stub.requests) + CHUNK * 2 + 3)
        third = synth(["run", str(path), "--no-export"], tmp_path, env)
        assert third.returncode == 0, third.stderr[-3000:]
        assert f"found run {run_id} left 'running' by pid {second_pid}" in third.stderr
        assert "superseded it and resuming from what it committed" in third.stderr
        runs = {r.state.type.value: r for r in flow_runs_of(api, run_id) if r.id != first.id}
        assert runs["COMPLETED"] and "superseded by flow run" in runs["CRASHED"].state.message
        assert first_pid != second_pid
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        assert cat.count("samples", distinct="slot", status="accepted") == TARGET
        assert [r["attempts"] for r in cat.runs(("attempts",))] == [3]
        assert cat.integrity_problems() == []  # no sample id written twice, nor anything else
