"""The `vllm` backend in Ray replicas, driven by a whole factory run: the GPU check's figure.

Run with vLLM's interpreter (it starts the cluster, whose node then runs vLLM's
environment); the factory run itself (`synth run --ray-address`, Prefect, the catalog)
runs in the main environment ($SYNTH_MAIN_PYTHON, else .venv/bin/python), as on a real
cluster. One machine: a head with 0 CPUs and one worker node with every GPU, all on
127.0.0.1; one replica per GPU (`replicas: auto`), or `--tp K` GPUs per replica
(tensor parallel inside it, a STRICT_PACK placement group).

    .venv-gpu/bin/python benchmarks/vllm_ray.py --gpus 1 --target 256      # benchmarks/gpu_check.sh
    .venv-vllm/bin/python benchmarks/vllm_ray.py --gpus 0 --target 8 --eager   # the CPU build, a smoke run

Prints one JSON line: replicas, requests, completion tokens, the run's wall time (Prefect
and engine start included), the generation time (the busiest replica's summed batch
time), tokens/s over it, and [requests, busy seconds] per replica. Nothing is downloaded: the model is the embedded SmolLM2 (or
`--model`, an HF directory already on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # the CPU build only

import yaml  # noqa: E402

from tests.conftest import base_recipe  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402

QUERY = """
import duckdb, json, sys
con = duckdb.connect(sys.argv[1], read_only=True)
row = con.execute("SELECT count(*), sum(completion_tokens), count(error) FROM requests").fetchone()
per = {w: [n, round(busy, 2)] for w, n, busy in con.execute(
    "SELECT worker, count(*), sum(latency_s) FROM requests GROUP BY 1 ORDER BY 1").fetchall()}
print(json.dumps({"requests": row[0], "completion_tokens": row[1], "errors": row[2], "per_replica": per}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on the worker node (0: the CPU build)")
    parser.add_argument("--tp", type=int, default=1, help="GPUs per replica (tensor parallel)")
    parser.add_argument("--target", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    main_python = Path(os.environ.get("SYNTH_MAIN_PYTHON", ROOT / ".venv" / "bin" / "python"))
    with tempfile.TemporaryDirectory(prefix="vllm-ray-") as tmp:
        folder = Path(tmp)
        gpu = args.gpus > 0
        recipe = base_recipe(
            folder,
            generation={"target": args.target, "budget": 4 * args.target, "chunk_size": args.chunk_size,
                        "strategy": "answer_augmentation", "examples_per_prompt": 1, "max_rounds": 2},
            backend={"kind": "vllm", "model": args.model, "max_model_len": 2048, "enforce_eager": args.eager,
                     "tensor_parallel_size": args.tp if gpu else 1, "gpu_memory_utilization": 0.85,
                     "sampling": {"temperature": 0.8, "max_tokens": args.max_tokens, "seed": 1}},
            quality={"min_chars": 0, "near_dup_threshold": 1.0},
            cluster={"kind": "ray", "replicas": "auto" if gpu else 1, "gpus_per_replica": args.tp if gpu else 0,
                     "cpus_per_replica": 1, "ready_timeout_s": 1800},
        )
        path = folder / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        cluster = LocalCluster(workers=1, cpus=max(2, 2 * args.gpus), gpus=args.gpus)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(folder / "prefect"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("VIRTUAL_ENV", None)
        try:
            started = time.perf_counter()
            run = subprocess.run([str(main_python), "-m", "flows.cli", "run", str(path), "--no-export",
                                  "--ray-address", cluster.address], cwd=folder, env=env, capture_output=True,
                                 text=True, timeout=3600)
            wall = time.perf_counter() - started
        finally:
            cluster.shutdown()
        if run.returncode != 0:
            print(run.stdout[-2000:], run.stderr[-4000:], file=sys.stderr)
            return 1
        facts = json.loads(subprocess.run([str(main_python), "-c", QUERY, str(folder / "catalog.duckdb")], env=env,
                                          capture_output=True, text=True, timeout=300, check=True).stdout)
    # a request's latency_s is its share of its batch's wall time: per replica they add up to
    # the time it spent generating; the replicas work side by side, so the slowest one bounds it
    busy = max(b for _, b in facts["per_replica"].values()) or wall
    print(json.dumps({"part": "vllm_ray", "gpus": args.gpus, "tp": args.tp, "target": args.target,
                      "replicas": len(facts["per_replica"]), **facts, "run_wall_s": round(wall, 1),
                      "generation_s": round(busy, 1),
                      "tokens_per_s": round((facts["completion_tokens"] or 0) / busy, 1),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
