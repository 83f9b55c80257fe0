"""Generation on a real multi-node Ray cluster on this machine (tests/ray_cluster.py).

One cluster serves every test here (session fixture `ray_cluster`): a head with 0 CPUs
and two worker nodes of 1 CPU each, on 127.0.0.1. Two replicas land one per worker
node. The chaos tests kill a replica's process (SIGKILL) or a whole worker node in the
middle of a run and check that the run still ends with exactly its target, no sample
or request written twice and a clean integrity check; the node is put back after.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from storage.catalog.catalog import Catalog
from synth.config.cluster import ClusterError
from synth.execution.ray import ReplicaPool
from synth.ids import stable_id
from synth.config.recipe import load_recipe
from tests.conftest import write_recipe
from tests.harness import OnChunk, start_run


def ray_recipe(tmp_path, local_cluster, **overrides):
    settings = {
        "generation": {"target": 24, "budget": 120, "chunk_size": 4},
        "backend": {"kind": "scripted", "latency_s": 0.03, "sampling": {"max_tokens": 64, "seed": 1}},
        "cluster": {"kind": "ray", "address": local_cluster.address, "replicas": 2},
    }
    settings.update(overrides)
    return load_recipe(write_recipe(tmp_path, **settings))


def run_on(pool, recipe, on_progress=None):
    """One run on the pool's replicas, as the flow makes it (without Prefect); its facts."""
    with Catalog(recipe.catalog) as cat:
        run = start_run(recipe, pool, cat, hooks=OnChunk(on_progress))
        run.generate()  # on the replicas: the recipe's cluster.kind is ray
        summary = run.finish()
        facts = {
            "accepted": cat.count("samples", status="accepted"),
            "slots": cat.count("samples", distinct="slot", status="accepted"),
            "integrity": cat.integrity_problems(),
            "by_worker": Counter((r["worker"], r["node"]) for r in cat.requests(("worker", "node"))),
            "failed": cat.failed_chunks(),
            "run_id": run.run_id,
        }
    return summary, facts


def kill_after(commits: int, kill):
    """An on_progress callback that calls `kill()` once, after the `commits`-th chunk is committed.
    With 12 chunks the victim surely gets work after the kill: its chunks in flight may have
    finished before it (a loaded driver commits slower than a replica generates), but 6 or
    more chunks are still queued, and the driver hands the victim some before it knows."""
    seen = {"n": 0}

    def on_progress(accepted, target):
        seen["n"] += 1
        if seen["n"] == commits:
            kill()
    return on_progress


def test_a_run_over_two_replicas_on_two_nodes(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster)
    with ReplicaPool(recipe.cluster, recipe.backend) as pool:
        nodes = {h.name: h.info["node"] for h in pool.replicas}
        # a plain batch (tree building, classification) is split over the replicas, in order
        from synth.backends.base import GenerationRequest
        batch = [GenerationRequest(key=f"k{i}", messages=({"role": "user", "content": f"say {i}"},))
                 for i in range(7)]
        answered = pool.generate(batch)
        summary, facts = run_on(pool, recipe)
    assert [r.key for r in answered] == [r.key for r in batch] and all(r.ok for r in answered)
    assert {r.worker for r in answered} == {"replica-0", "replica-1"}
    assert set(nodes.values()) == {node.node_id for node in ray_cluster.workers}  # one replica per worker node
    assert summary["status"] == "finished", summary["message"]
    assert facts["accepted"] == facts["slots"] == 24  # exactly the target, one sample a slot
    assert facts["integrity"] == [] and facts["failed"] == []
    # lineage: every request names the replica and the node that made it; both worked
    assert set(facts["by_worker"]) == {(name, node) for name, node in nodes.items()}


@pytest.mark.slow
def test_a_replica_killed_mid_run_costs_only_its_chunks(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster, generation={"target": 48, "budget": 240, "chunk_size": 4})
    with ReplicaPool(recipe.cluster, recipe.backend) as pool:
        victim = pool.replicas[0].info
        summary, facts = run_on(pool, recipe, kill_after(2, lambda: os.kill(victim["pid"], signal.SIGKILL)))
        events = [(kind, name) for _, kind, name, _ in pool.events]
        requeued, back = pool.requeued, pool.replicas[0].info
    assert requeued >= 1, "the kill hit no chunk in flight: the test proved nothing"
    assert ("down", "replica-0") in events and ("back", "replica-0") in events  # Ray restarted it
    assert back["pid"] != victim["pid"] and back["node"] == victim["node"]
    assert summary["status"] == "finished", summary["message"]
    assert facts["accepted"] == facts["slots"] == 48
    assert facts["integrity"] == [] and facts["failed"] == []


@pytest.mark.slow
def test_a_worker_node_lost_mid_run(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster, generation={"target": 48, "budget": 240, "chunk_size": 4})
    try:
        with ReplicaPool(recipe.cluster, recipe.backend) as pool:
            lost = pool.replicas[1].info["node"]
            killed = {}
            summary, facts = run_on(pool, recipe, kill_after(2, lambda: killed.update(
                at=ray_cluster.remove_worker(lost))))
            events = [(kind, name) for _, kind, name, _ in pool.events]
            requeued, recovered = pool.requeued, pool.recovered
    finally:
        ray_cluster.ensure_workers(2)  # the next test gets its two nodes back
    assert requeued >= 1 and recovered, "the node held no chunk in flight: the test proved nothing"
    assert ("down", "replica-1") in events
    assert all(name == "replica-0" for _, _, name in recovered)  # the lost node's chunks finished elsewhere
    print(f"recovery: {max(t for t, _, _ in recovered) - killed['at']:.2f} s from the kill to the last "
          f"requeued chunk done ({requeued} requeued)")
    assert summary["status"] == "finished", summary["message"]
    assert facts["accepted"] == facts["slots"] == 48
    assert facts["integrity"] == [] and facts["failed"] == []
    assert {worker for worker, _ in facts["by_worker"]} <= {"replica-0", "replica-1"}


@pytest.mark.slow
def test_a_chunk_that_keeps_killing_its_replica_is_recorded_not_retried_forever(ray_cluster, tmp_path):
    """A poison chunk (its first request kills any replica it reaches) fails max_chunk_tries
    times, on restarted replicas, and is recorded; every other chunk is committed, the ones
    that were queued behind it on a dying replica included (they lose no try)."""
    from tests.ray_faults import CrashingSettings

    recipe = ray_recipe(tmp_path, ray_cluster, generation={"target": 24, "budget": 120, "chunk_size": 4,
                                                           "max_rounds": 1},
                        cluster={"kind": "ray", "address": ray_cluster.address, "replicas": 2,
                                 "max_chunk_tries": 2})
    poison = stable_id(stable_id(recipe.hash(), 0, 0), "question")  # slot 0, attempt 0, its first stage
    settings = CrashingSettings(latency_s=0.03, crash_keys=(poison,), sampling=recipe.backend.sampling)
    with ReplicaPool(recipe.cluster, settings) as pool:
        summary, facts = run_on(pool, recipe)
    assert len(facts["failed"]) == 1
    failed = facts["failed"][0]
    assert failed["tries"] == 2 and len(failed["workers"]) == 2
    assert [0, 0] in failed["attempts"] and "Actor" in failed["error"]
    assert summary["status"] == "short" and "1 chunks failed on the cluster" in summary["message"]
    assert facts["accepted"] == facts["slots"] == 20  # the other five chunks
    assert facts["integrity"] == []
    with Catalog(recipe.catalog, read_only=True) as cat:
        assert cat.stats()["failed_chunks"] == 1


def test_a_cluster_that_cannot_hold_the_replicas_fails_clearly(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster, cluster={"kind": "ray", "address": ray_cluster.address,
                                                         "replicas": 3, "ready_timeout_s": 20})
    # 20 s: the two replicas that fit must start in time even on a loaded machine (5 s failed once)
    with pytest.raises(ClusterError, match=r"1 of 3 replicas did not start within 20 s.*lower cluster.replicas"):
        ReplicaPool(recipe.cluster, recipe.backend).start()


def test_auto_counts_one_replica_per_cpus_per_replica(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster, cluster={"kind": "ray", "address": ray_cluster.address,
                                                         "replicas": "auto", "cpus_per_replica": 1})
    with ReplicaPool(recipe.cluster, recipe.backend) as pool:
        assert len(pool.replicas) == 2  # two worker nodes of 1 CPU; the head has none
    gpu = recipe.cluster.model_copy(update={"gpus_per_replica": 1})
    with pytest.raises(ClusterError, match="auto found no room for one replica of 1 GPU"):
        ReplicaPool(gpu, recipe.backend).start()


@pytest.mark.slow
def test_the_embedded_model_in_two_one_cpu_replicas(ray_cluster, tmp_path):
    """SmolLM2 through llama.cpp, loaded once in each of two 1-CPU replicas on two nodes."""
    recipe = ray_recipe(
        tmp_path, ray_cluster,
        generation={"target": 4, "budget": 30, "chunk_size": 2, "max_rounds": 6, "strategy": "answer_augmentation",
                    "examples_per_prompt": 0},
        # the 135M model's free-text rows seldom pass every junk gate (about 1 in 12 measured): this test is
        # about two replicas generating for real, so the length and format filters only, and room to answer
        quality={"filters": [{"kind": "length", "min_chars": 1}, "format"]},
        backend={"kind": "llamacpp", "n_ctx": 1024,  # threads: the replica's 1 CPU (synth.execution.replica.sized)
                 "sampling": {"max_tokens": 192, "temperature": 0.7, "seed": 5}})
    with ReplicaPool(recipe.cluster, recipe.backend) as pool:
        nodes = {h.name: h.info["node"] for h in pool.replicas}
        assert {h.info["backend"] for h in pool.replicas} == {"llamacpp"}
        summary, facts = run_on(pool, recipe)
    # what this test holds is that both replicas generated for real and the catalog is whole
    assert summary["status"] in {"finished", "short"}, summary["message"]
    assert 1 <= facts["accepted"] == facts["slots"] <= 4  # some rows, never two for one slot
    assert facts["integrity"] == [] and facts["failed"] == []
    assert set(facts["by_worker"]) == {(name, node) for name, node in nodes.items()}
    with Catalog(recipe.catalog, read_only=True) as cat:
        assert all(r["completion_tokens"] and r["worker"] for r in cat.requests(("completion_tokens", "worker")))
        assert {r["model"] for r in cat.runs(("model",))} == {"SmolLM2-135M-Instruct-Q4_1"}


@pytest.mark.slow
def test_synth_run_on_the_cluster_from_the_command_line(ray_cluster, tmp_path):
    """`synth run --ray-address`: the Prefect flow drives the replicas (tree and chunks), the
    catalog passes `synth stats --check`, and every request names its replica."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = write_recipe(tmp_path, tree={"max_depth": 1}, generation={"target": 12, "budget": 60, "chunk_size": 4},
                        backend={"kind": "scripted", "latency_s": 0.02, "sampling": {"max_tokens": 64, "seed": 1}},
                        cluster={"kind": "ray", "replicas": 2})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect")}

    def synth(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=600)

    out = synth("run", str(path), "--no-export", "--ray-address", ray_cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout[:out.stdout.rindex("}") + 1])["status"] == "finished"
    checked = synth("stats", "--check", "--catalog", str(tmp_path / "catalog.duckdb"))
    assert checked.returncode == 0 and "integrity: ok" in checked.stdout, checked.stdout + checked.stderr
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        workers: dict = {}
        for r in cat.requests(("stage", "worker")):
            workers.setdefault(r["stage"], set()).add(r["worker"])
        assert cat.count("samples", status="accepted") == 12
    assert workers["question"] == workers["answer"] == {"replica-0", "replica-1"}
    assert {"pivots", "dimension"} <= set(workers)  # the tree was built on the replicas too
    assert all(None not in w for w in workers.values())


def test_a_replica_that_cannot_load_its_model_fails_the_start_clearly(ray_cluster, tmp_path):
    recipe = ray_recipe(tmp_path, ray_cluster, backend={"kind": "llamacpp", "model": str(tmp_path / "none.gguf")},
                        cluster={"kind": "ray", "address": ray_cluster.address, "replicas": 1,
                                 "ready_timeout_s": 120})
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"replica-0 could not load the llamacpp backend.*no GGUF file at"):
        ReplicaPool(recipe.cluster, recipe.backend).start()
    assert time.monotonic() - started < 60  # an error in __init__ is not restarted forever
