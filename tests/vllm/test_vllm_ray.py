"""The `vllm` backend inside a Ray replica, driven by a factory run from the main environment.

This is the cluster's real shape: the driver (`synth run`, Prefect, the catalog) runs in
the main environment (.venv) and the replica's node runs vLLM's own (.venv-vllm: vLLM and
Prefect cannot share one, docs/vllm.md). The test starts a Ray cluster on 127.0.0.1 from
THIS environment (a head with 0 CPUs and one worker node: its workers use this
interpreter, so the replica imports vLLM), then runs `synth run --ray-address` with the
main environment's interpreter. The same Ray version is pinned in both (Makefile
RAY_PIN). On a GPU machine benchmarks/gpu_check.sh runs it with a GPU per replica.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import base_recipe
from tests.vllm.support import MAX_MODEL_LEN, ROOT, embedded_model_dir
from tests.vllm.test_vllm_server import main_python, request_errors

pytestmark = [pytest.mark.vllm_cpu, pytest.mark.gpu, pytest.mark.slow]

os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # inherited by the cluster's processes
os.environ.setdefault("DO_NOT_TRACK", "1")
GPUS = int(os.environ.get("SYNTH_TEST_GPUS_PER_REPLICA", "0"))  # benchmarks/gpu_check.sh sets 1


@pytest.fixture(scope="module")
def cluster():
    from tests.ray_cluster import LocalCluster

    embedded_model_dir()  # converted before a replica looks for it
    started = LocalCluster(workers=1, cpus=2, gpus=GPUS)
    yield started
    started.shutdown()


def test_factory_run_with_vllm_in_a_ray_replica(cluster, tmp_path):
    python = main_python()
    recipe = base_recipe(
        tmp_path,
        generation={"target": 2, "budget": 8, "chunk_size": 2, "strategy": "answer_augmentation",
                    "examples_per_prompt": 0, "max_rounds": 2},
        backend={"kind": "vllm", "model": "embedded", "max_model_len": MAX_MODEL_LEN, "enforce_eager": True,
                 "gpu_memory_utilization": 0.3, "sampling": {"temperature": 0.7, "max_tokens": 48, "seed": 3}},
        quality={"min_chars": 0, "near_dup_threshold": 1.0},
        cluster={"kind": "ray", "replicas": 1, "cpus_per_replica": 1, "gpus_per_replica": GPUS,
                 "ready_timeout_s": 1200},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str(tmp_path / "prefect"), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run([str(python), "-m", "flows.cli", "run", str(path), "--no-export", "--ray-address",
                          cluster.address], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"factory run failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    stats = subprocess.run([str(python), "-m", "flows.cli", "stats", "--json", "--check", "--catalog",
                            str(tmp_path / "catalog.duckdb")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert stats.returncode == 0, stats.stdout[-2000:] + stats.stderr[-2000:]
    data = json.loads(stats.stdout[stats.stdout.index("{"):])
    assert data["integrity_problems"] == []
    assert data["requests"] >= 2 and data["tokens"]["completion"] > 0
    assert data["request_errors"] == 0, request_errors(python, tmp_path / "catalog.duckdb", env)
    code = ("import duckdb, sys, json; con = duckdb.connect(sys.argv[1], read_only=True); print(json.dumps("
            "con.execute('SELECT DISTINCT worker, node, (SELECT DISTINCT model FROM runs) FROM requests').fetchall()))")
    lineage = subprocess.run([str(python), "-c", code, str(tmp_path / "catalog.duckdb")], env=env,
                             capture_output=True, text=True, timeout=120)
    rows = json.loads(lineage.stdout)
    # every request was answered by the one replica, on the worker node this test started
    assert rows == [["replica-0", cluster.workers[0].node_id, "SmolLM2-135M-Instruct-Q4_1"]]
