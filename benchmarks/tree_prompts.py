"""Valid-answer rates of each TreeSynth stage, before and after a change of its prompt, on a
real embedded model: the builder's own stages (variables, schema, parser) and renderer, on
fixed inputs, so the template is the only thing that differs between the two columns.

- pivots: one request per node path (fixed paths over the GSM8K task);
- dimension: one request per fixed pivot set (four real GSM8K questions each), rendered with
  the template at `--before-ref` (git) and with the current one, same seeds;
- expand: one request per fixed (dimension, values) pair.
A template that did not change between the two refs gives the same requests and, the model
being seeded, the same answers: it is measured once. "Meaningful" dimensions: a valid answer
whose name is not a placeholder ("dimension", "attribute", "label", "example", "value").

    python benchmarks/tree_prompts.py --model embedded --nodes 10
    python benchmarks/tree_prompts.py --model embedded-1.5b --nodes 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.backends.base import GenerationRequest, Sampling  # noqa: E402
from synth.backends.llamacpp import LlamaCppBackend  # noqa: E402
from synth.prompting.render import Renderer  # noqa: E402
from synth.config.recipe import TreeSettings, load_recipe  # noqa: E402
from synth.reject import Rejected  # noqa: E402
from synth.tree.build import TEMPLATES, DimensionStage, ExpandStage, PivotsStage, Work  # noqa: E402
from synth.tree.model import TreeNode, node_id_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATHS = [[], [("topic", "money")], [("operation", "division")], [("number of steps", "2-3 steps")],
         [("setting", "a farm")], [("topic", "time and speed")], [("operation", "percentages")],
         [("topic", "shopping"), ("number of steps", "4-5 steps")], [("setting", "a school")], [("topic", "cooking")]]
EXPANSIONS = [("operation", ["addition", "division"]), ("topic", ["money", "time"]),
              ("number of steps", ["2 steps", "3-4 steps"]), ("setting", ["a farm", "a shop"]),
              ("units", ["dollars", "hours"]), ("quantity type", ["whole numbers", "fractions"])]
PLACEHOLDERS = ("dimension", "attribute", "label", "example", "value", "property")


def git_template(ref: str, name: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:prompts/{name}"], check=True,
                          capture_output=True, text=True).stdout


def work_for(path, pivots=None):
    node = TreeNode(node_id_for(path), None, len(path), None, None, None, list(path), is_leaf=True)
    work = Work(node, list(path))
    work.pivots = list(pivots or [])
    return work


def ask(backend, stage, works, renderer, template, seed, max_tokens):
    requests = []
    for i, work in enumerate(works):
        content = renderer.render(template, stage.variables(work))
        requests.append(GenerationRequest(key=f"{stage.name}{i}", messages=({"role": "user", "content": content},),
                                          sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=max_tokens,
                                                            seed=seed + i), json_schema=stage.schema(work)))
    started = time.perf_counter()
    results = backend.generate(requests)
    wall = time.perf_counter() - started
    outcomes = []
    for work, result in zip(works, results):
        try:
            stage.parse(work, result)
            outcomes.append(("ok", work))
        except Rejected as exc:
            outcomes.append((exc.reject.detail[:70], work))
    tokens = sum(r.completion_tokens for r in results)
    return outcomes, wall, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--before-ref", default="9689dee", help="git ref of the 'before' templates")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    task = recipe.task
    settings = TreeSettings(max_depth=2, pivots_per_node=4, max_values=4)
    seeds = [json.loads(line) for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]
    backend = LlamaCppBackend(model=args.model, n_ctx=2048)
    backend.load()
    current = Renderer()
    report = {"model": backend.model, "nodes": args.nodes, "before_ref": args.before_ref, "stages": {}}
    for stage_cls, build_works in (
            (PivotsStage, lambda: [work_for(p) for p in (PATHS * 3)[:args.nodes]]),
            (DimensionStage, lambda: [work_for((PATHS * 3)[i], [s["question"] for s in seeds[4 * i:4 * i + 4]])
                                      for i in range(args.nodes)]),
            (ExpandStage, lambda: [_expand_work(*(EXPANSIONS * 3)[i]) for i in range(args.nodes)])):
        stage = stage_cls(task, settings)
        name = TEMPLATES[stage.name]
        before_source = git_template(args.before_ref, name)
        versions = {"after": current}
        if before_source != current.source(name):
            versions = {"before": Renderer({name: before_source}), "after": current}
        for label, renderer in versions.items():
            outcomes, wall, tokens = ask(backend, stage, build_works(), renderer, name, 1000, args.max_tokens)
            valid = sum(1 for o, _ in outcomes if o == "ok")
            row = {"valid": valid, "n": len(outcomes), "wall_s": round(wall, 1), "tokens": tokens,
                   "failures": sorted({o for o, _ in outcomes if o != "ok"})}
            if stage.name == "dimension":
                names = [w.dimension for o, w in outcomes if o == "ok"]
                row["meaningful"] = sum(1 for d in names if not any(p in d.lower() for p in PLACEHOLDERS))
                row["dimensions"] = names
            if stage.name == "pivots":
                row["example"] = next((w.pivots[0] for o, w in outcomes if o == "ok"), None)
            report["stages"].setdefault(stage.name, {})[label if len(versions) > 1 else "same"] = row
            print(f"{stage.name:9s} {label if len(versions) > 1 else 'same':6s} valid {valid}/{len(outcomes)}"
                  f"{' meaningful %d' % row['meaningful'] if 'meaningful' in row else ''}  {tokens} tokens "
                  f"{wall:.0f} s  {row.get('dimensions', row['failures'])}", flush=True)
    backend.close()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _expand_work(dimension, values):
    work = work_for([])
    work.dimension, work.values = dimension, list(values)
    return work


if __name__ == "__main__":
    sys.exit(main())
