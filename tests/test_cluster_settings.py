"""The recipe's `cluster:` section and the command line's --ray-address, without a cluster:
bad input exits 2 naming the field, an unreachable cluster exits 1 in one line, and
nothing is written either way. Where a run happens is not part of its identity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from synth.config.recipe import RecipeError, load_recipe
from tests.conftest import ROOT, write_recipe
from tests.ray_cluster import free_port


def synth(*args, cwd, **env):
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environ.pop("RAY_ADDRESS", None) if "RAY_ADDRESS" not in env else None
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=environ, timeout=300)


def test_cluster_is_not_part_of_the_run(tmp_path):
    local = load_recipe(write_recipe(tmp_path))
    ray = load_recipe(write_recipe(tmp_path, cluster={"kind": "ray", "address": "10.0.0.1:6379", "replicas": 8}))
    assert local.cluster.kind == "local" and ray.cluster.replicas == 8
    assert ray.hash() == local.hash()  # a run started here resumes on a cluster, and back


@pytest.mark.parametrize("cluster, field", [
    ({"kind": "ray", "replicas": 0}, "cluster.replicas"),
    ({"kind": "slurm"}, "cluster.kind"),
    ({"kind": "ray", "gpus": 2}, "cluster.gpus"),
    ({"kind": "ray", "replicas": "many"}, "cluster.replicas"),
])
def test_bad_cluster_settings_name_the_field(tmp_path, cluster, field):
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        load_recipe(write_recipe(tmp_path, cluster=cluster))


def test_ray_run_without_an_address_exits_2_and_writes_nothing(tmp_path):
    path = write_recipe(tmp_path, cluster={"kind": "ray"})
    before = sorted(p.name for p in tmp_path.iterdir())
    out = synth("run", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "cluster.address" in out.stderr and "RAY_ADDRESS" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unreachable_cluster_exits_1_in_one_line_and_writes_nothing(tmp_path):
    path = write_recipe(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = synth("run", str(path), "--ray-address", closed, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().count("\n") == 0 and f"nothing answers at {closed}" in out.stderr
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # the same address from the environment, for a recipe that asks for Ray
    path = write_recipe(tmp_path, cluster={"kind": "ray"})
    out = synth("run", str(path), cwd=tmp_path, RAY_ADDRESS=closed)
    assert out.returncode == 1 and f"nothing answers at {closed}" in out.stderr


def test_the_deployment_form_takes_a_ray_address():
    from flows.deployments import RunParameters

    assert RunParameters(ray_address="10.0.0.1:6379").ray_address == "10.0.0.1:6379"
    assert RunParameters().ray_address is None


def test_ray_is_pinned_alike_for_both_environments():
    """The driver (.venv) and a vLLM node (.venv-vllm) must run the same Ray version."""
    import re
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    makefile = re.search(r"^RAY_PIN := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert extra == [makefile] and re.fullmatch(r"ray==\d+\.\d+\.\d+", makefile)
    assert "$(RAY_PIN)" in (ROOT / "mk" / "vllm.mk").read_text()
    assert re.search(r"'\.\[dev,([a-z]+,)*ray[],]", (ROOT / "Makefile").read_text())  # make install (so make test) has it


def test_llamacpp_threads_bound_prompt_processing_too(monkeypatch):
    """A 1-CPU replica must use one thread: llama-cpp-python's own default for prompt
    processing is every core, whatever n_threads says."""
    import llama_cpp

    from synth.backends.llamacpp import LlamaCppSettings

    seen = {}

    class FakeLlama:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    LlamaCppSettings(n_threads=1, parallel=1).build().load()
    assert seen["n_threads"] == seen["n_threads_batch"] == 1
    # several sequences at once: the server gets the same bound for both (--threads, --threads-batch)
    from synth.backends.llama_server import ServerProcess

    server = LlamaCppSettings(n_threads=1, parallel=4).build()
    command = ServerProcess("llama-server", "m.gguf", server.parallel, server.n_ctx, server.n_threads).command(1)
    assert command[command.index("--threads") + 1] == command[command.index("--threads-batch") + 1] == "1"


def test_a_cpu_replica_takes_its_own_cpus_not_the_machines():
    from synth.backends.llamacpp import LlamaCppSettings
    from synth.backends.scripted import ScriptedSettings
    from synth.execution.replica import sized

    assert sized(LlamaCppSettings(), 2).n_threads == 2 and sized(LlamaCppSettings(), 0.5).n_threads == 1
    assert sized(LlamaCppSettings(n_threads=4), 1).n_threads == 4  # what the recipe says wins
    assert sized(ScriptedSettings(), 1) == ScriptedSettings()


def test_vllm_settings_can_ask_for_eager_mode():
    """A replica builds its backend from the recipe's settings alone: eager mode must be one."""
    from synth.backends.vllm import VLLMSettings

    assert VLLMSettings(enforce_eager=True).build().engine_kwargs == {"enforce_eager": True}
    assert VLLMSettings().build().engine_kwargs == {}


def test_a_lost_replica_charges_a_try_only_to_the_job_it_was_running():
    """The dispatch's rule, without a cluster (a stand-in for ray.wait/get): the replica ran
    its jobs in the order they were sent, so the first sent that failed was running and
    costs a try; a job that finished before the loss counts as done; the jobs queued
    behind the running one go back to the queue for free."""
    from collections import deque

    from ray.exceptions import ActorDiedError

    from synth.backends.scripted import ScriptedSettings
    from synth.config.cluster import ClusterSettings
    from synth.execution.ray import Handle, Job, ReplicaPool

    outcomes = {"r-done": "rows of job 1", "r-queued": ActorDiedError()}

    class FakeRay:
        def wait(self, refs, num_returns, timeout):
            return refs, []

        def get(self, ref, timeout=None):
            if isinstance(outcomes[ref], BaseException):
                raise outcomes[ref]
            return outcomes[ref]

    pool = ReplicaPool(ClusterSettings(kind="ray", address="127.0.0.1:1"), ScriptedSettings())
    pool._ray = FakeRay()
    handle, other = Handle("replica-0", actor=None), Handle("replica-1", actor=None)
    done, running, queued, elsewhere = (Job(i, "run_work", (), sent=s) for i, s in ((1, 1), (2, 2), (3, 3), (4, 0)))
    in_flight = {"r-done": (done, handle), "r-queued": (queued, handle), "r-else": (elsewhere, other)}
    load, queue, finished = {"replica-0": 3, "replica-1": 1}, deque(), []
    pool._replica_lost(running, ActorDiedError(), handle, in_flight, load, queue, finished)
    assert finished == [(done, "rows of job 1")]
    assert (running.tries, queued.tries) == (1, 0) and list(queue) == [queued, running]  # the innocent first
    assert in_flight == {"r-else": (elsewhere, other)} and load == {"replica-0": 1, "replica-1": 1}
