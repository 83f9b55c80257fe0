"""Shared fixtures: a small valid recipe written to a temp folder, with a seed slice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GSM8K_SLICE = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Ray (tests/ray_cluster.py): no usage statistics, and 127.0.0.1 stays loopback; set before
# anything imports ray, and inherited by the `synth` subprocesses the tests start
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def base_recipe(tmp_path: Path, **overrides) -> dict:
    seeds = tmp_path / "seeds.jsonl"
    if not seeds.exists():
        rows = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:12]]
        seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {
        "task": {
            "name": "math-test",
            "description": "Grade-school math word problems with worked solutions.",
            "output_fields": {
                "question": {"description": "a math word problem"},
                "answer": {"description": "worked solution ending in #### <number>"},
            },
        },
        "seeds": {"path": "seeds.jsonl"},
        "generation": {"target": 6, "budget": 40, "chunk_size": 4},
        "backend": {"kind": "scripted", "sampling": {"max_tokens": 64, "seed": 1}},
        "catalog": str(tmp_path / "catalog.duckdb"),
        "export": {"dir": str(tmp_path / "out")},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write_recipe(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(tmp_path, **overrides), sort_keys=False))
    return path


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)


@pytest.fixture(scope="session")
def ray_cluster():
    """ONE local multi-node Ray cluster (head with 0 CPUs, two 1-CPU worker nodes, all on
    127.0.0.1) for every Ray test of the session; started on first use, and only its own
    processes are stopped at the end (tests/ray_cluster.py)."""
    from tests.ray_cluster import LocalCluster

    cluster = LocalCluster(workers=2)
    yield cluster
    cluster.shutdown()


# --- one real Prefect server and one `synth serve` for every test that needs them -------------
# (a server takes 20-40 s to start on 2 cores: shared across modules to keep CI time down)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """(api, port, state_dir) of a real Prefect server on loopback, stopped at the end."""
    import time

    from flows.server import ensure_server, is_healthy, stop_server
    from tests.prefect_live import free_port

    state = tmp_path_factory.mktemp("prefect-state")
    port = free_port()
    started = time.monotonic()
    try:
        api = ensure_server(port=port, timeout=300, state_dir=state)
        print(f"prefect server up in {time.monotonic() - started:.1f} s")
        yield api, port, state
    finally:
        stop_server(state)
    assert not is_healthy(api)


@pytest.fixture(scope="session")
def prefect_served(prefect_server, tmp_path_factory):
    """(client, {name: deployment}, serve's working folder): `synth serve` against the server."""
    from prefect.client.orchestration import SyncPrefectClient

    from tests.prefect_live import start_serve, stop_process, wait_for_deployment

    api, port, state = prefect_server
    work = tmp_path_factory.mktemp("serve-cwd")
    log = work / "serve.log"
    process = start_serve(port, state, work, log)
    try:
        with SyncPrefectClient(api) as client:
            deployments = {name: wait_for_deployment(client, f"synth-deployment/{name}", process, log)
                           for name in ("on-demand", "nightly")}
            yield client, deployments, work
    finally:
        stop_process(process)
