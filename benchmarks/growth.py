"""Growing a dataset against making it again: requests spent, and the time a growth step
takes to plan on a large catalog.

    python benchmarks/growth.py [--embedded] [--plan-rows 10000000] [--leaves 1000]

1. Requests to reach 10 -> 15 -> 20 accepted samples: three growth steps of one dataset
   (`--grow-by 5` twice after a first run of 10) against three fresh runs of 10, 15 and 20
   on empty catalogs, on the scripted backend (and on the embedded model with --embedded).
   Printed as totals and the ratio growth / fresh.
2. Planning a growth step on a catalog of `--plan-rows` bulk-ingested GSM8K-like samples
   over `--leaves` leaves (benchmarks/catalog_scale.py makes them), the dataset's target set
   where every leaf meets it: the growth step (+10,000), the dataset's counts on its tree,
   the seed usage, and the plan of the new slots, each timed; the target is "well under a
   second per 1,000 leaves".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from storage.catalog.catalog import Catalog  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402
from tests.conftest import run_dataset, write_recipe  # noqa: E402


def requests(cat: Catalog) -> int:
    return int(cat.scalar("SELECT count(*) FROM requests"))


def growth_vs_fresh(folder: Path, backend_settings: dict, label: str) -> dict:
    backend = None
    if backend_settings.get("kind") == "llamacpp":
        from synth.backends.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(n_ctx=1024)
        backend.load()
    common = dict(generation={"target": 10, "budget": 400, "chunk_size": 8, "max_rounds": 5},
                  backend={**backend_settings, "sampling": {"max_tokens": 160, "seed": 1}})
    grow_dir = folder / f"{label}-grow"
    grow_dir.mkdir()
    recipe = load_recipe(write_recipe(grow_dir, **common))
    steps, started = [], time.perf_counter()
    with Catalog(recipe.catalog) as cat:
        for grow in (None, 5, 5):
            _, summary = run_dataset(recipe, backend, catalog=cat, grow_by=grow)
            steps.append((summary["target"], summary["accepted"], requests(cat)))
    grow_s = time.perf_counter() - started
    fresh, started = [], time.perf_counter()
    for target in (10, 15, 20):
        fresh_dir = folder / f"{label}-fresh-{target}"
        fresh_dir.mkdir()
        r = load_recipe(write_recipe(fresh_dir, **common)).with_target(target)
        with Catalog(r.catalog) as cat:
            _, summary = run_dataset(r, backend, catalog=cat)
            fresh.append((target, summary["accepted"], requests(cat)))
    fresh_s = time.perf_counter() - started
    if backend is not None:
        backend.close()
    grown, made = steps[-1][2], sum(f[2] for f in fresh)
    return {"backend": label, "growth_steps": steps, "fresh_runs": fresh, "growth_requests": grown,
            "fresh_requests": made, "ratio": grown / made, "growth_s": grow_s, "fresh_s": fresh_s}


def plan_on_a_large_catalog(rows: int, leaves: int) -> dict:
    import catalog_scale as scale

    from storage.runs.growth import plan_growth
    from storage.tables import datasets
    from synth.planning.plan import make_plan
    from synth.tree.model import Tree, TreeNode

    folder = Path(tempfile.mkdtemp(prefix="growth_plan_", dir="/tmp"))
    try:
        recipe = load_recipe(write_recipe(folder, generation={"target": 10, "grow_by": 10_000},
                                          catalog=str(folder / "catalog.duckdb")))
        with Catalog(recipe.catalog) as cat:
            scale.build(cat, rows, leaves, seed=1)
            for run_id in scale.RUNS:  # the bulk rows' runs: contributions to one dataset
                cat.start_run(run_id, recipe.task.name, {"bulk": True}, run_id, "bulk", "bulk-model",
                              dataset=recipe.dataset_name, target=rows // 2, base_hash="bulk")
                cat.update_run(run_id, status="finished")
            ids = scale.leaf_table(leaves)[0].to_pylist()
            root = TreeNode("root", None, 0, None, None, None, [], is_leaf=False, status="split")
            nodes = [root] + [TreeNode(i, "root", 1, "leaf", f"leaf {n:04d}", None, [("leaf", f"leaf {n:04d}")],
                                       is_leaf=True) for n, i in enumerate(ids)]
            tree = Tree("tbench", nodes, settings={}, model="bulk-model")
            scope = datasets.Scope(recipe.dataset_name)
            # the dataset as a finished growth step leaves it: every leaf at least at its target
            # (the bulk rows are skewed over the leaves; the thinnest leaf sets the target)
            counts = datasets.members_per_leaf(cat, scope, tree)
            thinnest = min(counts.get(i, 0) for i in ids)
            datasets.set_target(cat, recipe.dataset_name, thinnest * leaves)
            timings = {}
            started = time.perf_counter()
            growth = plan_growth(cat, recipe)
            timings["growth step (plan_growth)"] = time.perf_counter() - started
            started = time.perf_counter()
            have = datasets.members_per_leaf(cat, scope, tree)
            timings["dataset counts on the tree"] = time.perf_counter() - started
            started = time.perf_counter()
            usage = datasets.seed_usage(cat, scope)
            timings["seed usage"] = time.perf_counter() - started
            started = time.perf_counter()
            plan = make_plan(growth.recipe, tree, 0, "bench", have, [], usage)
            timings[f"slots for +{len(plan.slots):,}"] = time.perf_counter() - started
        return {"rows": rows, "leaves": leaves, "members": sum(have.values()), "target": growth.target,
                "timings": timings, "total_s": sum(timings.values())}
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedded", action="store_true", help="also on the embedded model (minutes)")
    parser.add_argument("--plan-rows", type=int, default=1_000_000)
    parser.add_argument("--leaves", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [growth_vs_fresh(Path(tmp), {"kind": "scripted"}, "scripted")]
        if args.embedded:
            results.append(growth_vs_fresh(Path(tmp), {"kind": "llamacpp"}, "embedded (SmolLM2-135M)"))
    print("| backend | growth 10 -> 15 -> 20: requests (accepted) | fresh runs of 10, 15, 20: requests | "
          "growth / fresh |")
    print("|---|---|---|---:|")
    for r in results:
        steps = " -> ".join(f"{req} ({acc})" for _, acc, req in r["growth_steps"])
        fresh = " + ".join(f"{req} ({acc})" for _, acc, req in r["fresh_runs"])
        print(f"| {r['backend']} | {steps} | {fresh} = {r['fresh_requests']} | {r['ratio']:.3f} |")
    plan = plan_on_a_large_catalog(args.plan_rows, args.leaves)
    print(f"\nplanning a growth step: {plan['rows']:,} rows, {plan['members']:,} accepted members, "
          f"{plan['leaves']} leaves, target {plan['target']:,}")
    print("| step | seconds |\n|---|---:|")
    for step, seconds in plan["timings"].items():
        print(f"| {step} | {seconds:.3f} |")
    per_thousand = plan["total_s"] / (plan["leaves"] / 1000)
    print(f"| total | {plan['total_s']:.3f} ({per_thousand:.3f} s per 1,000 leaves: "
          f"{'PASS' if per_thousand < 1 else 'FAIL'} < 1 s) |")


if __name__ == "__main__":
    main()
