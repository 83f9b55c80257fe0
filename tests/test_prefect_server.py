"""The Prefect operating surface: the UI's parameter form mapped onto a recipe, and, against
a real server on loopback, deployments served by `synth serve`, a run triggered as the
UI triggers it, its artifacts read back through the API, and the nightly schedule."""

from __future__ import annotations

import socket
import time
import typing
from pathlib import Path

import pytest
import yaml

from flows.cli import build_parser
from flows.deployments import NIGHTLY_CRON, BackendKind, RunParameters, resolve_recipe
from flows.server import ServerError, ensure_server
from synth.backends import BACKENDS
from synth.config.recipe import RecipeError, load_recipe
from tests.conftest import base_recipe, write_recipe
from tests.prefect_live import wait_final

# --- the form and its mapping onto a recipe (no server) -----------------------------------------


def test_backend_choices_are_the_registry():
    assert set(typing.get_args(BackendKind)) == set(BACKENDS)


def test_form_refuses_bad_values():
    with pytest.raises(ValueError, match="target"):
        RunParameters(target=0)
    with pytest.raises(ValueError, match="backend"):
        RunParameters(backend="gpt")
    with pytest.raises(ValueError, match="colour"):
        RunParameters(colour="red")


def test_plain_parameters_run_the_recipe_file_itself(tmp_path):
    path = write_recipe(tmp_path)
    assert resolve_recipe(RunParameters(recipe_path=str(path), target=3), tmp_path / "derived") == str(path)
    assert not (tmp_path / "derived").exists()


def test_inline_recipe_is_validated_and_keeps_its_seeds(tmp_path):
    write_recipe(tmp_path)  # writes seeds.jsonl beside recipe.yaml
    inline = yaml.safe_dump(base_recipe(tmp_path, task={"name": "inline-task"}))
    params = RunParameters(recipe_path=str(tmp_path / "recipe.yaml"), inline_recipe=inline, model="tiny")
    derived = Path(resolve_recipe(params, tmp_path / "derived"))
    assert derived.parent == tmp_path / "derived"
    recipe = load_recipe(derived)  # loads from its new folder: the seed path was made absolute
    assert recipe.task.name == "inline-task"
    assert recipe.resolve_input(recipe.seeds.path) == (tmp_path / "seeds.jsonl").resolve()
    assert recipe.backend.model == "tiny" and recipe.backend.kind == "scripted"
    assert resolve_recipe(params, tmp_path / "derived") == str(derived)  # same content, same file


def test_broken_inline_recipe_names_the_field(tmp_path):
    bad = yaml.safe_dump({**base_recipe(tmp_path), "generation": {"target": -5}})
    with pytest.raises(RecipeError, match=r"inline_recipe.*\n.*generation\.target"):
        resolve_recipe(RunParameters(recipe_path=str(tmp_path / "x.yaml"), inline_recipe=bad), tmp_path)
    with pytest.raises(RecipeError, match="not readable YAML"):
        resolve_recipe(RunParameters(inline_recipe="task: [unclosed"), tmp_path)
    assert not list(tmp_path.glob("*.yaml"))


def test_backend_override_of_a_recipe_file(tmp_path):
    path = write_recipe(tmp_path, backend={"kind": "llamacpp"})
    derived = resolve_recipe(RunParameters(recipe_path=str(path), backend="scripted"), tmp_path / "d")
    assert load_recipe(derived).backend.kind == "scripted"
    assert load_recipe(path).backend.kind == "llamacpp"  # the user's file is untouched


def test_ensure_server_refuses_a_port_held_by_another_program(tmp_path):
    with socket.socket() as other:  # accepts connections, never answers HTTP
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ServerError, match="taken by a program"):
            ensure_server(port=other.getsockname()[1], timeout=10, state_dir=tmp_path)
    assert not (tmp_path / "prefect-server.pid").exists()


def test_stop_finds_a_server_whose_state_folder_was_deleted(tmp_path):
    """`rm -rf data` between demo runs took the pid file with it; `synth server stop` still stops
    the server started from that folder (by the mark in its environment), and no other."""
    import shutil
    import subprocess
    import sys

    from flows.server import server_env, server_pid, stop_server

    def stand_in(state):  # a process that looks like the server we start: its argv words, its environment
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "prefect", "server"],
                                env=server_env("127.0.0.1", 1, state), start_new_session=True)

    ours, other = tmp_path / "data", tmp_path / "elsewhere"
    ours.mkdir()
    mine, theirs = stand_in(ours), stand_in(other)
    try:
        (ours / "prefect-server.pid").write_text(f"{mine.pid}\n")
        shutil.rmtree(ours)
        assert server_pid(ours) == mine.pid
        assert stop_server(ours) is True
        assert mine.wait(timeout=20) is not None
        assert theirs.poll() is None  # a server of another folder is left alone
        assert stop_server(ours) is False
    finally:
        for process in (mine, theirs):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_server_commands_parse():
    parser = build_parser()
    args = parser.parse_args(["server", "stop", "--state-dir", "x"])
    assert (args.action, args.state_dir) == ("stop", "x") and callable(args.func)
    args = parser.parse_args(["serve", "--port", "4300", "--pause-schedule"])
    assert (args.port, args.pause_schedule, args.limit) == (4300, True, 1)


# --- a real server, `synth serve`, runs triggered through the API -------------------------------


@pytest.fixture
def server(prefect_server):
    return prefect_server


@pytest.fixture
def served(prefect_served):
    return prefect_served


@pytest.mark.slow
def test_reuses_a_running_server(server):
    api, port, state = server
    started = time.monotonic()
    assert ensure_server(port=port, state_dir=state) == api
    assert time.monotonic() - started < 5
    assert (state / "prefect-server.pid").is_file() and (state / "prefect-server.log").is_file()


@pytest.mark.slow
def test_deployments_are_registered_with_form_and_schedule(served):
    _, deployments, _ = served
    on_demand, nightly = deployments["on-demand"], deployments["nightly"]
    assert on_demand.schedules == []
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (NIGHTLY_CRON, "UTC", True)
    assert not nightly.paused and nightly.enforce_parameter_schema
    form = on_demand.parameter_openapi_schema["definitions"]["RunParameters"]["properties"]
    assert {"recipe_path", "inline_recipe", "target", "backend", "model", "catalog"} <= set(form)
    assert set(form["backend"]["anyOf"][0]["enum"]) == set(BACKENDS)


@pytest.mark.slow
def test_triggered_run_completes_and_its_artifacts_read_back(served, tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from storage.catalog.catalog import Catalog

    client, deployments, _ = served
    recipe = write_recipe(tmp_path)
    # What the UI's "Run" form sends: the deployment id and the parameters, nothing else.
    created = client.create_flow_run_from_deployment(
        deployments["on-demand"].id, parameters={"params": {"recipe_path": str(recipe), "target": 4}})
    started = time.monotonic()
    run = wait_final(client, created.id, timeout=300)
    print(f"deployment run finished in {time.monotonic() - started:.1f} s")
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    assert run.deployment_id == deployments["on-demand"].id

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    by_type = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    (progress,) = by_type["progress"]
    assert progress.key.startswith("progress-") and float(progress.data) == 100.0
    run_id = progress.key.removeprefix("progress-")
    assert any(run_id in a.data and "accepted" in a.data for a in by_type.get("markdown", [])), by_type.keys()
    assert any(a.key.startswith(f"run-{run_id}") for a in by_type.get("table", []))

    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:  # the target override reached the run
        assert cat.stats(run_id)["samples"]["accepted"] == 4


@pytest.mark.slow
def test_broken_inline_recipe_fails_the_run_with_the_field(served):
    client, deployments, _ = served
    created = client.create_flow_run_from_deployment(
        deployments["on-demand"].id,
        parameters={"params": {"inline_recipe": "task:\n  name: t\nbackend: {kind: scripted}\n"}})
    run = wait_final(client, created.id, timeout=180)
    assert run.state.is_failed()
    assert "RecipeError" in run.state.message and "task.description" in run.state.message


@pytest.mark.slow
def test_server_refuses_parameters_that_do_not_fit_the_form(served):
    from prefect.exceptions import PrefectHTTPStatusError

    client, deployments, _ = served
    with pytest.raises(PrefectHTTPStatusError, match="409|422"):
        client.create_flow_run_from_deployment(
            deployments["on-demand"].id, parameters={"params": {"target": "many"}})


@pytest.mark.slow
def test_server_status_command(server, capsys):
    api, port, state = server
    parser = build_parser()
    args = parser.parse_args(["server", "status", "--port", str(port), "--state-dir", str(state)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("up:") and f"127.0.0.1:{port}" in out and "pid" in out
