"""Ray benchmark: scaling over replicas, the Ray path's overhead, and recovery from a lost node.

Everything runs on a real multi-node Ray cluster on this machine (tests/ray_cluster.py:
a head with 0 CPUs and worker nodes of 1 CPU each, on 127.0.0.1), through the run's
life cycle (storage/runs/lifecycle.py) and the executor `cluster.kind` names, exactly as
`synth run --ray-address` drives them (without Prefect: the flow adds the same cost to
both sides of every ratio). Each pass writes a
fresh catalog, so every pass makes the same requests.

- scaling (simulated): the scripted backend with a per-request latency (a sleep), so the
  figure measures the dispatch and the one-writer catalog, not this 2-core machine's
  arithmetic; 1, 2 and 4 replicas; throughput = requests / wall of generation;
- scaling (embedded): SmolLM2 through llama.cpp, 1 vs 2 one-thread replicas on the 2
  cores (tokens/s); bounded by the cores and by whatever else runs on them;
- overhead: the Ray path with 1 replica against `kind: local` (the same backend in this
  process) on the same requests, passes in ABBA order (local, ray, ray, local), ratio of
  the means;
- recovery: a worker node killed (all its processes, no drain) after the 2nd committed
  chunk: seconds from the kill to the last of its requeued chunks finishing on the other
  replica; and the same for a replica's process killed with SIGKILL (Ray restarts it).

    python benchmarks/ray_scaling.py                  # everything (about 3-5 minutes here)
    python benchmarks/ray_scaling.py --parts scaling overhead --latency 0.02
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from storage.catalog.catalog import Catalog  # noqa: E402
from synth.execution.ray import ReplicaPool  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402
from tests.conftest import OnChunk, start_run, write_recipe  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402


def recipe_for(folder: Path, address: str, replicas: int, backend: dict, **generation):
    gen = {"target": 96, "budget": 1000, "chunk_size": 8, "max_rounds": 1, **generation}
    return load_recipe(write_recipe(folder, generation=gen, backend=backend, quality={"min_chars": 1},
                                    cluster={"kind": "ray", "address": address, "replicas": replicas}))


def one_pass(recipe, backend_or_pool, ray: bool, on_progress=None) -> dict:
    """Generate the recipe's run on a fresh catalog; wall time of generation only. The
    executor is the one `cluster.kind` names (ray, or local: the backend in this process)."""
    if not ray:
        recipe = recipe.model_copy(update={"cluster": recipe.cluster.model_copy(update={"kind": "local"})})
    with Catalog(recipe.catalog) as cat:
        run = start_run(recipe, backend_or_pool, cat, hooks=OnChunk(on_progress))
        started = time.perf_counter()
        run.generate()
        wall = time.perf_counter() - started
        requests = cat.scalar("SELECT count(*) FROM requests")
        tokens = cat.scalar("SELECT coalesce(sum(completion_tokens), 0) FROM requests")
        assert not cat.integrity_problems()
    return {"wall": wall, "requests": requests, "tokens": tokens}


def fresh(root: Path, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=name, dir=root))
    return folder


def scaling(cluster: LocalCluster, root: Path, latency: float, counts: list[int], target: int) -> list[str]:
    cluster.ensure_workers(max(counts))
    backend = {"kind": "scripted", "latency_s": latency, "sampling": {"max_tokens": 64, "seed": 1}}
    rows, base = [], None
    for n in counts:
        recipe = recipe_for(fresh(root, f"scale{n}-"), cluster.address, n, backend, target=target)
        with ReplicaPool(recipe.cluster, recipe.backend) as pool:
            one_pass(recipe_for(fresh(root, "warm-"), cluster.address, n, backend, target=8), pool, True)
            result = one_pass(recipe, pool, True)
        rate = result["requests"] / result["wall"]
        base = base or rate
        rows.append(f"| scripted, {latency * 1000:g} ms/request | {n} | {result['requests']} | {result['wall']:.2f} | "
                    f"{rate:.1f} req/s | **{rate / base:.2f}x** |")
        print(rows[-1], flush=True)
    return rows


def embedded(cluster: LocalCluster, root: Path, target: int) -> list[str]:
    backend = {"kind": "llamacpp", "n_ctx": 1024,  # 1 thread: the replica's CPU
               "sampling": {"max_tokens": 48, "temperature": 0.0, "seed": 3}}
    rows, base = [], None
    for n in (1, 2):
        recipe = recipe_for(fresh(root, f"emb{n}-"), cluster.address, n, backend, target=target,
                            strategy="answer_augmentation", examples_per_prompt=0, chunk_size=2)
        with ReplicaPool(recipe.cluster, recipe.backend) as pool:
            result = one_pass(recipe, pool, True)
        rate = result["tokens"] / result["wall"]
        base = base or rate
        rows.append(f"| embedded SmolLM2, 1 thread/replica | {n} | {result['requests']} | {result['wall']:.2f} | "
                    f"{rate:.1f} tokens/s | **{rate / base:.2f}x** |")
        print(rows[-1], flush=True)
    return rows


def overhead(cluster: LocalCluster, root: Path, latency: float, chunk: int, rounds: int) -> list[str]:
    backend = {"kind": "scripted", "latency_s": latency, "sampling": {"max_tokens": 64, "seed": 1}}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    recipe = recipe_for(fresh(root, "ovh-"), cluster.address, 1, backend)
    with ReplicaPool(recipe.cluster, recipe.backend) as pool:
        one_pass(recipe_for(fresh(root, "warm-"), cluster.address, 1, backend, target=8), pool, True)
        for side in ("local", "ray", "ray", "local") * rounds:
            pass_recipe = recipe_for(fresh(root, f"{side}-"), cluster.address, 1, backend, target=192,
                                     chunk_size=chunk)
            target = pool if side == "ray" else pass_recipe.backend.build()
            walls[side].append(one_pass(pass_recipe, target, side == "ray")["wall"])
            print(f"  {side}: {walls[side][-1]:.2f} s", flush=True)
    ratio = statistics.mean(walls["ray"]) / statistics.mean(walls["local"])
    median = statistics.median(walls["ray"]) / statistics.median(walls["local"])
    return [f"| Ray, 1 replica / local; scripted {latency * 1000:g} ms/request, 384 requests in chunks of {chunk}, "
            f"ABBA x {rounds} | local {' / '.join(f'{w:.2f}' for w in walls['local'])} s; "
            f"ray {' / '.join(f'{w:.2f}' for w in walls['ray'])} s | **{ratio:.3f}** (medians {median:.3f}) |"]


def recovery(cluster: LocalCluster, root: Path, latency: float, how: str, repeats: int) -> list[str]:
    backend = {"kind": "scripted", "latency_s": latency, "sampling": {"max_tokens": 64, "seed": 1}}
    figures = []
    for _ in range(repeats):
        cluster.ensure_workers(2)
        recipe = recipe_for(fresh(root, f"rec-{how}-"), cluster.address, 2, backend)
        with ReplicaPool(recipe.cluster, recipe.backend) as pool:
            victim = pool.replicas[1].info
            state = {"n": 0}

            def kill(accepted, target):
                state["n"] += 1
                if state["n"] == 2:
                    if how == "node":
                        state["at"] = cluster.remove_worker(victim["node"])
                    else:
                        state["at"] = time.time()
                        os.kill(victim["pid"], signal.SIGKILL)

            one_pass(recipe, pool, True, on_progress=kill)
            done = max((t for t, _, _ in pool.recovered), default=None)
            if done is None:
                print("  the kill hit no chunk in flight; not counted", flush=True)
                continue
            figures.append(done - state["at"])
            print(f"  {how}: {figures[-1]:.2f} s ({pool.requeued} chunks requeued)", flush=True)
    cluster.ensure_workers(2)
    if not figures:
        return [f"| {how} killed | - | no chunk was in flight |"]
    return [f"| {'worker node' if how == 'node' else 'replica process (SIGKILL)'} killed mid-run, "
            f"{latency * 1000:g} ms/request, chunks of 8 | {len(figures)} | "
            f"{statistics.median(figures):.2f} s (min {min(figures):.2f}, max {max(figures):.2f}) |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["scaling", "embedded", "overhead", "recovery"],
                        choices=["scaling", "embedded", "overhead", "recovery"])
    parser.add_argument("--latency", type=float, default=0.02, help="simulated seconds per request")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scaling-target", type=int, default=384,
                        help="samples of each scaling pass (2 requests each, chunks of 8)")
    parser.add_argument("--embedded-target", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="recovery runs per kind of fault")
    parser.add_argument("--overhead-chunk", type=int, default=32, help="chunk size of the overhead passes")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of the overhead comparison")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    started = time.monotonic()
    cluster = LocalCluster(workers=2)
    print(f"cluster up in {cluster.start_s:.1f} s at {cluster.address}", flush=True)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        root = Path(tmp)
        try:
            if "scaling" in args.parts or "embedded" in args.parts:
                out += ["", "| workload | replicas | requests | wall s | throughput | vs 1 replica |",
                        "|---|---:|---:|---:|---:|---:|"]
            if "scaling" in args.parts:
                out += scaling(cluster, root, args.latency, args.replicas, args.scaling_target)
            if "embedded" in args.parts:
                out += embedded(cluster, root, args.embedded_target)
            if "overhead" in args.parts:
                out += ["", "| overhead | passes | ratio (ray / local) |", "|---|---|---:|"]
                out += overhead(cluster, root, args.latency, args.overhead_chunk, args.rounds)
            if "recovery" in args.parts:
                out += ["", "| fault | runs | kill -> its chunks done elsewhere |", "|---|---:|---|"]
                out += recovery(cluster, root, args.latency, "node", args.repeats)
                out += recovery(cluster, root, args.latency, "process", args.repeats)
        finally:
            cluster.shutdown()
    print("\n".join(out))
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; wall {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
