"""Overhead benchmark: the factory's wall time against the raw backend's, same requests, same run.

For each backend it (1) builds the run's requests exactly as the factory will, (2) times
the raw backend on them in one `generate` call, then (3) runs the whole Prefect flow on a
fresh catalog (plan -> generate chunks as tasks -> parse -> dedup -> commit -> report;
export off) and times it from the first chunk to the last commit. The ratio is (3)/(2);
the shares say where the rest went: Prefect (task orchestration), the catalog (commits),
and our own code (rendering, parsing, dedup, planning).

    python benchmarks/overhead.py                       # llamacpp (both paths) and openai, 500 requests, ABBA
    python benchmarks/overhead.py --backends llamacpp --n 100 --order AB
    python benchmarks/overhead.py --backends llamacpp-server --parallel 8   # the batched embedded backend

`llamacpp` is the in-process one-stream path (`parallel: 1`); `llamacpp-server` is the
embedded backend with `--parallel` sequences decoded together in llama.cpp's own server,
a child of the benchmark (synth/backends/llama_server.py); both run SmolLM2-135M.

Passes run in ABBA order by default (raw, factory, factory, raw) and the ratio is the mean
factory pass over the mean raw pass, so a machine that drifts during the run tilts both
sides alike. The openai server gets the last core to itself and the benchmark the others
(`--shared-cores` turns that off): on two cores a server whose prompt processing spins on
every core is slowed by any thread of the client, which measures the machine, not the
factory; a real server runs on its own machine.

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


def write_recipe(folder: Path, n: int, backend: dict, examples: int = 1) -> Path:
    recipe = {
        "task": {
            "name": "bench-overhead",
            "description": "Grade-school math word problems with worked solutions ending in #### <number>.",
            "output_fields": {"question": {"description": "a word problem"},
                              "answer": {"description": "a worked solution"}},
        },
        "seeds": {"path": str(ROOT / "recipes/seeds/gsm8k_120.jsonl")},
        "generation": {"target": n, "budget": n, "strategy": "answer_augmentation", "examples_per_prompt": examples,
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


def pin_process_tree(cpus: set[int]) -> None:
    """Move this process, every thread it has, and its children (Prefect's server) onto `cpus`."""
    pids = [os.getpid()]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # the parent pid
            pids.append(int(stat.parent.name))
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                pass  # a thread that ended meanwhile


def measure(kind: str, n: int, backend_settings: dict, order: str, examples: int = 1) -> dict:
    """Time the raw backend (A) and the factory (B) on the same requests, in `order`
    (e.g. "ABBA": a machine or server that drifts over the run tilts both sides alike)."""
    from prefect import flow

    from flows.run import chunk_task
    from storage.catalog.catalog import Catalog
    from storage.runs.lifecycle import RunHooks, RunLifecycle
    from synth.backends import make_backend
    from synth.config.seeds import load_seeds
    from synth.execution.pipeline import _request, new_attempts
    from synth.config.recipe import load_recipe
    from synth.strategies import STRATEGIES

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = load_recipe(write_recipe(folder, n, backend_settings, examples))
        backend = make_backend(recipe.backend)
        backend.load()
        # warm-up: the first call pays model/connection start-up; neither pass should
        backend.generate([])

        seeds = load_seeds(recipe)
        with Catalog(folder / "raw.duckdb") as scratch:
            planner = RunLifecycle(recipe, scratch, backend, seeds)
            planner.start()
            planner.plan()
            requests, ctx = [], planner.ledger.ctx
            for attempt in new_attempts(planner.ledger.pending(), ctx):
                strategy = STRATEGIES[attempt.slot.strategy]
                requests.append(_request(attempt, strategy, strategy.stages[0], ctx, 0).request)

        generate_timer, commit_timer = Timer(), Timer()

        class ChunkTasks(RunHooks):
            """Each chunk a retried Prefect task, as in the flow (its UI artifacts left out)."""

            def wrap_chunk(self, run):
                return chunk_task(run)

        @flow(name="bench-overhead")
        def bench_flow() -> tuple[float, int]:
            with Catalog(recipe.catalog) as cat:
                run = RunLifecycle(recipe, cat, backend, seeds, hooks=ChunkTasks())
                with patched(backend, "generate", generate_timer.wrap), \
                        patched(cat, "commit_chunk", commit_timer.wrap):
                    t0 = time.perf_counter()
                    run.start()
                    run.plan()
                    run.generate()
                    run.finish()
                    elapsed = time.perf_counter() - t0
                accepted = run.ledger.accepted_count()
            return elapsed, accepted

        raw_passes, factory_passes, flow_starts, tokens, accepted = [], [], [], 0, 0
        for side in order:
            if side == "A":
                started = time.perf_counter()
                raw_results = backend.generate(requests)
                raw_passes.append(time.perf_counter() - started)
                tokens = sum(r.completion_tokens for r in raw_results)
            else:
                for leftover in Path(recipe.catalog).parent.glob(Path(recipe.catalog).name + "*"):
                    leftover.unlink()  # each factory pass starts from an empty catalog
                # the flow's own start (API client, run record) is paid once per run, not per
                # request: it is reported apart and left out of the ratio
                flow_started = time.perf_counter()
                factory_s, accepted = bench_flow()
                flow_starts.append(time.perf_counter() - flow_started - factory_s)
                factory_passes.append(factory_s)
            print(f"  {kind} pass {side}: {(raw_passes if side == 'A' else factory_passes)[-1]:.1f} s",
                  file=sys.stderr, flush=True)
        backend.close()

    raw_s, factory_s = sum(raw_passes), sum(factory_passes)
    ours = factory_s - generate_timer.total
    return {
        "backend": kind,
        "requests": len(requests),
        "accepted": accepted,
        "order": order,
        "raw_passes": raw_passes,
        "factory_passes": factory_passes,
        "raw_s": raw_s / len(raw_passes),
        "factory_s": factory_s / len(factory_passes),
        "ratio": (factory_s / len(factory_passes)) / (raw_s / len(raw_passes)),
        "catalog_share": commit_timer.total / factory_s,
        "orchestration_share": (ours - commit_timer.total) / factory_s,
        "flow_start_s": max(flow_starts),
        "raw_tokens_per_s": tokens / raw_passes[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--backends", default="llamacpp,llamacpp-server,openai")
    parser.add_argument("--order", default="ABBA",
                        help="passes in order, A = raw backend, B = factory (default ABBA)")
    parser.add_argument("--examples", type=int, default=1,
                        help="seed examples in each prompt (0 = shortest requests: the strictest test "
                             "of per-request overhead, and the quickest)")
    parser.add_argument("--parallel", type=int, default=8, help="llamacpp-server: slots (sequences decoded together)")
    parser.add_argument("--shared-cores", action="store_true",
                        help="openai: let the server and the factory share every core (default: the "
                             "server gets the last core to itself, the client the others)")
    args = parser.parse_args()
    if not args.order or set(args.order) - {"A", "B"} or "A" not in args.order or "B" not in args.order:
        parser.error("--order takes A and B passes, e.g. ABBA")
    sys.path.insert(0, str(ROOT / "tests"))
    rows = []
    for kind in args.backends.split(","):
        if kind == "openai":
            from servers import start_llama_server, stop_server

            cores = sorted(os.sched_getaffinity(0))
            server_cpus = None
            if not args.shared_cores and len(cores) >= 2:
                server_cpus = {cores[-1]}
                pin_process_tree(set(cores[:-1]))
            url, process = start_llama_server(cpus=server_cpus)
            try:
                row = measure(kind, args.n, {"kind": "openai", "base_url": url,
                                             "model": "SmolLM2-135M-Instruct-Q4_1", "concurrency": 4}, args.order, args.examples)
                row["backend"] += " (server on its own core)" if server_cpus else " (shared cores)"
                rows.append(row)
            finally:
                stop_server(process)
                if server_cpus:
                    pin_process_tree(set(cores))
        elif kind == "llamacpp-server":
            row = measure(kind, args.n, {"kind": "llamacpp", "parallel": args.parallel}, args.order, args.examples)
            row["backend"] += f" (parallel {args.parallel})"
            rows.append(row)
        elif kind == "llamacpp":
            rows.append(measure(kind, args.n, {"kind": "llamacpp", "parallel": 1}, args.order, args.examples))
        else:
            rows.append(measure(kind, args.n, {"kind": kind}, args.order, args.examples))
    print("\n| backend | requests | passes | raw s | factory s | ratio | catalog share | ours+Prefect share |"
          " flow start s (once) | raw tokens/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        passes = " ".join(f"{side}{t:.0f}" for side, t in zip(
            r["order"], _interleave(r["order"], r["raw_passes"], r["factory_passes"])))
        print(f"| {r['backend']} | {r['requests']} | {passes} | {r['raw_s']:.1f} | {r['factory_s']:.1f} | "
              f"{r['ratio']:.3f} | {r['catalog_share']:.2%} | {r['orchestration_share']:.2%} | "
              f"{r['flow_start_s']:.1f} | {r['raw_tokens_per_s']:.1f} |")


def _interleave(order: str, raw: list[float], factory: list[float]) -> list[float]:
    raw_it, factory_it = iter(raw), iter(factory)
    return [next(raw_it) if side == "A" else next(factory_it) for side in order]


if __name__ == "__main__":
    main()
