"""Tree-guided against flat generation at equal budget: does the TreeSynth tree make the
data more diverse than plain prompting?

Both arms run recipes/gsm8k.yaml's task, seeds, prompts, strategy (new_question), sampling
(temperature, seeds) and generation target and request budget; the tree arm builds its
tree first (those requests are counted apart, and also shown as a share of the budget),
the flat arm is the same recipe without a tree (no constraints in the prompt). Each arm's
accepted samples are evaluated with `synth eval`'s figures (synth/measures/figures.py, embeddings
included where the model is installed), printed side by side and as ratios tree / flat.

    python benchmarks/quality.py --model embedded --target 12 --budget 40
    python benchmarks/quality.py --model embedded-1.5b --target 12 --budget 40
    python benchmarks/quality.py --base-url http://127.0.0.1:8000/v1 --model NAME   # any OpenAI-compatible server
    python benchmarks/quality.py --model embedded-1.5b --target 200 --budget 400 \
        --probe-heldout heldout.jsonl --probe-steps 30      # and the student probe on each arm (docs/probe.md)

With `--probe-heldout`, each arm's accepted rows also train the probe's student (the same
steps, seed and settings) and the table adds its held-out loss beside the untrained
student's. At tens of rows an arm the probe's difference is within its noise (compare
the seeds with `--probe-seeds 0,1`): it says which arm is junk, not which of two sane arms
is better.

Arms run in the order flat, tree, so that a machine that slows down over the run does not
favour the tree; wall times are printed (they move with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.catalog.catalog import Catalog  # noqa: E402
from storage.reports.evaluation import catalog_figures, render_table  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402


def arm(recipe, backend, folder: Path, with_tree: bool, embed_sample: int) -> dict:
    from storage.runs.lifecycle import RunLifecycle
    from synth.config.seeds import load_seeds

    recipe = recipe.model_copy(update={"catalog": folder / "catalog.duckdb",
                                       "tree": recipe.tree if with_tree else None})
    started = time.perf_counter()
    with Catalog(recipe.catalog) as cat:
        run = RunLifecycle(recipe, cat, backend, load_seeds(recipe))
        summary = run.run(export=False, close=False)  # the flow's steps without Prefect; one model for both arms
        ledger = run.ledger
        tree_requests, leaves = 0, None
        if with_tree:
            tree_requests, leaves = ledger.tree.requests, [n.label for n in ledger.tree.leaves()]
        everything = cat.query("SELECT fields, leaf_id, status FROM samples_text WHERE run_id = ? ORDER BY sample_id",
                               [ledger.run_id])
        rows = [{**json.loads(r["fields"]), "leaf_id": r["leaf_id"]} for r in everything if r["status"] == "accepted"]
        question = recipe.task.question
        asked = [{question: f[question], "leaf_id": r["leaf_id"]} for r in everything
                 if (f := json.loads(r["fields"] or "{}")).get(question)]  # every question written, kept or not
        stats = cat.stats(ledger.run_id)
        label = "tree" if with_tree else "flat"
        figures = catalog_figures(cat, rows, recipe.model_dump(mode="json"), [ledger.run_id], label,
                                  embed_sample=embed_sample)
        figures["questions"] = catalog_figures(cat, asked, None, [ledger.run_id], f"{label} questions",
                                               embed_sample=embed_sample)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    figures["generation_requests"] = stats["requests"]  # tree requests carry no run id
    figures["tree_requests"] = tree_requests
    figures["leaves_built"] = leaves
    figures["status"] = summary["status"]
    figures["reject_reasons"] = stats["reject_reasons"]
    figures["samples"] = stats["samples"]
    figures["examples"] = [{k: v for k, v in r.items() if k != "leaf_id"} for r in rows[:3]]
    figures["accepted_rows"] = [{k: v for k, v in r.items() if k != "leaf_id"} for r in rows]  # the probe trains on them
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="embedded, embedded-1.5b, a GGUF path, or a served name")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the embedded model")
    parser.add_argument("--api-key-env", help="environment variable holding the endpoint's key")
    parser.add_argument("--target", type=int, default=24)
    parser.add_argument("--budget", type=int, default=96, help="generation requests per arm")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--embed-sample", type=int, default=1000)
    parser.add_argument("--json", help="write both arms' figures here")
    parser.add_argument("--keep", help="keep both arms' catalogs in this folder (default: a temporary one)")
    parser.add_argument("--probe-heldout", type=Path, help="held-out GSM8K-style JSONL: probe each arm's rows")
    parser.add_argument("--probe-steps", type=int, default=30)
    parser.add_argument("--probe-seeds", default="0")
    args = parser.parse_args()
    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    backend_settings = recipe.backend.model_dump()
    if args.base_url:
        backend_settings = {"kind": "openai", "base_url": args.base_url, "model": args.model,
                            "api_key_env": args.api_key_env, "sampling": backend_settings["sampling"]}
    else:
        backend_settings["model"] = args.model
    if args.max_tokens:
        backend_settings["sampling"] = {**backend_settings["sampling"], "max_tokens": args.max_tokens}
    data = recipe.model_dump(mode="json", exclude={"base_dir"})
    data.update(backend=backend_settings, generation={**data["generation"], "target": args.target,
                                                      "budget": args.budget, "grow_by": None, "max_target": None})
    from synth.config.recipe import parse_recipe

    recipe = parse_recipe(data, "quality benchmark", base_dir=ROOT / "recipes")
    backend = recipe.backend.build()
    backend.load()
    results = []
    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        tmp = args.keep or scratch
        for with_tree in (False, True):
            folder = Path(tmp) / ("tree" if with_tree else "flat")
            folder.mkdir(parents=True)
            results.append(arm(recipe, backend, folder, with_tree, args.embed_sample))
            r = results[-1]
            print(f"{r['label']}: {r['samples']['accepted']} accepted of {sum(r['samples'].values())} attempts, "
                  f"{r['generation_requests']} generation + {r['tree_requests']} tree requests, {r['wall_s']} s",
                  file=sys.stderr, flush=True)
    backend.close()
    flat, tree = results
    if args.json:  # first: the figures survive a failure below
        Path(args.json).write_text(json.dumps({"model": backend.model, "target": args.target,
                                               "budget": args.budget, "tree": tree, "flat": flat},
                                              indent=2, default=str))
    print(f"model: {backend.model}; target {args.target}, budget {args.budget} generation requests per arm\n")
    print("Accepted samples (question + answer):\n")
    print(render_table([tree, flat], ratio_to=1))
    print("Every question written, accepted or not (the part the tree steers):\n")
    print(render_table([tree["questions"], flat["questions"]], ratio_to=1))
    for r in (tree, flat):
        print(f"{r['label']}: status {r['status']}, accepted {r['samples']['accepted']}, rejected "
              f"{r['samples']['rejected']}, filtered {r['samples']['filtered']}, "
              f"duplicate {r['samples']['duplicate']}; "
              f"requests {r['generation_requests']} (+{r['tree_requests']} for the tree); {r['wall_s']} s")
        print(f"  reasons: {r['reject_reasons']}")
    if tree.get("leaves_built"):
        print(f"tree leaves: {tree['leaves_built']}")
    if args.probe_heldout:
        probe_arms(tree, flat, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"model": backend.model, "target": args.target,
                                                   "budget": args.budget, "tree": tree, "flat": flat},
                                                  indent=2, default=str))
    return 0


def probe_arms(tree: dict, flat: dict, args) -> None:
    """The student probe on both arms' accepted rows, per seed (synth/measures/probe.py)."""
    from synth.measures.probe import ProbeSettings, run_probe
    from synth.measures.student import Pair, default_student

    rows = [json.loads(line) for line in args.probe_heldout.read_text(encoding="utf-8").splitlines() if line.strip()]
    heldout = [Pair(r["question"], r["answer"]) for r in rows]
    sets = {r["label"]: [Pair(x["question"], x["answer"]) for x in r["accepted_rows"]] for r in (tree, flat)}
    print("\nStudent probe (held-out loss of the reference answers; lower is better):\n")
    print("| seed | untrained | tree | flat | tree - flat |\n|---:|---:|---:|---:|---:|")
    for seed in [int(s) for s in args.probe_seeds.split(",")]:
        report = run_probe(default_student(), sets, heldout, ProbeSettings(steps=args.probe_steps, seed=seed))
        loss = {r.label: r.score.loss for r in report.results}
        print(f"| {seed} | {report.baseline.loss:.4f} | {loss['tree']:.4f} | {loss['flat']:.4f} | "
              f"{loss['tree'] - loss['flat']:+.4f} |")
        for arm_figures in (tree, flat):
            arm_figures.setdefault("probe", []).append({"seed": seed, "loss": loss[arm_figures["label"]],
                                                        "baseline": report.baseline.loss})


if __name__ == "__main__":
    sys.exit(main())
