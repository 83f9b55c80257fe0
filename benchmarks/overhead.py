"""Overhead benchmark: the factory's wall time against the raw backend's, same requests, same run.

For each backend it (1) builds the run's requests exactly as the factory will, (2) times
the raw backend on them in one `generate` call, then (3) runs the whole Prefect flow on a
fresh catalog (plan -> generate chunks as tasks -> parse -> dedup -> commit -> report;
export off) and times it from the first chunk to the last commit. The ratio is (3)/(2);
the shares say where the rest went: Prefect (task orchestration), the catalog (commits),
and our own code (rendering, parsing, dedup, planning).

    python benchmarks/overhead.py                       # llamacpp and openai, 500 requests
    python benchmarks/overhead.py --backends llamacpp --n 100

Single-stage answer augmentation at temperature 0 keeps every request the same in both
passes; max_tokens is small so that 500 requests fit in minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import yaml  # noqa: E402


def write_recipe(folder: Path, n: int, backend: dict) -> Path:
    recipe = {
        "task": {
            "name": "bench-overhead",
            "description": "Grade-school math word problems with worked solutions ending in #### <number>.",
            "output_fields": {"question": {"description": "a word problem"},
                              "answer": {"description": "a worked solution"}},
        },
        "seeds": {"path": str(ROOT / "recipes/seeds/gsm8k_120.jsonl")},
        "generation": {"target": n, "budget": n, "strategy": "answer_augmentation", "examples_per_prompt": 1,
                       "chunk_size": 100, "max_rounds": 1},
        "quality": {"min_chars": 0, "near_dup_threshold": 1.0},
        "backend": {**backend, "sampling": {"temperature": 0.0, "max_tokens": 12, "seed": 1}},
        "catalog": str(folder / "catalog.duckdb"),
        "export": {"dir": str(folder / "out")},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


class Timer:
    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - started
        return timed


@contextmanager
def patched(obj, name, wrapper):
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


def measure(kind: str, n: int, backend_settings: dict) -> dict:
    from prefect import flow

    from flows.run import generate_all
    from storage.catalog import Catalog
    from storage.job import Job
    from synth.backends import make_backend
    from synth.recipe import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = load_recipe(write_recipe(folder, n, backend_settings))
        backend = make_backend(recipe.backend)
        backend.load()
        # warm-up: the first call pays model/connection start-up; neither pass should
        backend.generate([])

        with Catalog(folder / "raw.duckdb") as scratch:
            planner = Job(recipe, scratch, backend)
            planner.start()
            planner.plan()
            requests = []
            for slot, attempt in planner.pending():
                from synth.ids import stable_id
                from synth.strategies import STAGES, seeded_fields

                sample_id = stable_id(planner.run_id, slot.index, attempt)
                stage = STAGES[slot.strategy][0]
                requests.append(planner._request(sample_id, stage, slot, seeded_fields(slot, planner.ctx)))
        started = time.perf_counter()
        raw_results = backend.generate(requests)
        raw_s = time.perf_counter() - started

        generate_timer, commit_timer = Timer(), Timer()

        @flow(name="bench-overhead")
        def bench_flow() -> float:
            with Catalog(recipe.catalog) as cat:
                job = Job(recipe, cat, backend)
                with patched(backend, "generate", generate_timer.wrap), \
                        patched(cat, "commit_chunk", commit_timer.wrap):
                    t0 = time.perf_counter()
                    job.start()
                    job.plan()
                    generate_all(job)
                    job.finish()
                    elapsed = time.perf_counter() - t0
                accepted = job.accepted_count()
            return elapsed, accepted

        # the flow's own start (API client, run record) is paid once per run, not per request:
        # it is reported apart and left out of the ratio
        flow_started = time.perf_counter()
        factory_s, accepted = bench_flow()
        flow_total = time.perf_counter() - flow_started
        backend.close()

    tokens = sum(r.completion_tokens for r in raw_results)
    ours = factory_s - generate_timer.total
    return {
        "backend": kind,
        "requests": len(requests),
        "accepted": accepted,
        "raw_s": raw_s,
        "factory_s": factory_s,
        "ratio": factory_s / raw_s,
        "catalog_share": commit_timer.total / factory_s,
        "orchestration_share": (ours - commit_timer.total) / factory_s,
        "flow_start_s": flow_total - factory_s,
        "raw_tokens_per_s": tokens / raw_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--backends", default="llamacpp,openai")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    rows = []
    for kind in args.backends.split(","):
        if kind == "openai":
            from servers import start_llama_server, stop_server

            url, process = start_llama_server()
            try:
                rows.append(measure(kind, args.n, {"kind": "openai", "base_url": url,
                                                   "model": "SmolLM2-135M-Instruct-Q4_1", "concurrency": 4}))
            finally:
                stop_server(process)
        else:
            rows.append(measure(kind, args.n, {"kind": kind}))
    print("\n| backend | requests | raw s | factory s | ratio | catalog share | ours+Prefect share |"
          " flow start s (once) | raw tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['requests']} | {r['raw_s']:.1f} | {r['factory_s']:.1f} | {r['ratio']:.3f} | "
              f"{r['catalog_share']:.2%} | {r['orchestration_share']:.2%} | {r['flow_start_s']:.1f} | "
              f"{r['raw_tokens_per_s']:.1f} |")


if __name__ == "__main__":
    main()
