"""What a TreeSynth tree costs: rounds, requests and tokens per leaf, failure and retry
rates by stage, wall time; printed as a markdown table for BENCHMARKS.md.

Two backends:
- `sim` (default): a scripted LLM that partitions sensibly, answers a set share of
  requests badly (cut-off JSON) and sleeps like a batched server: each call costs
  `--call-s` plus the longest answer's tokens at `--tok-s` tokens/s per stream,
  `--concurrency` streams at a time. Token counts are characters / 4.
- `--embedded`: one tiny real build with SmolLM2-135M on the CPU, and the pivot-request
  comparison behind the choice made in synth/tree/build.py: one request for N pivots
  against N requests for one pivot each.

    python benchmarks/tree_build.py                 # simulated, four sizes (about 30 s)
    python benchmarks/tree_build.py --embedded      # plus the embedded model (minutes)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.backends.base import GenerationRequest, GenerationResult, SamplingSettings  # noqa: E402
from synth.config.recipe import Task, TreeSettings  # noqa: E402
from synth.tree import Tree, build_tree  # noqa: E402

TASK = Task(name="gsm", description="Grade school math word problems that need 2 to 8 steps of arithmetic.",
            output_fields={"question": {"description": "the word problem"}, "answer": {"description": "the solution"}})
# The simulated model's view of the space: a dimension per depth, values per dimension
# ("topic" has more values than infinite_threshold: an infinite dimension).
DIMS = ["setting", "operation", "topic", "steps", "units"]
VALUES = {"setting": ["farm", "shop", "school", "kitchen"], "operation": ["sums", "ratios", "percent", "rates", "units"],
          "topic": [f"topic {i}" for i in range(14)], "steps": ["2-3", "4-5", "6-8"],
          "units": ["money", "time", "length", "weight"]}
FAIL = {"pivots": 0.05, "dimension": 0.20, "expand": 0.10}  # share of answers cut off (a weak-ish model)
FAULTS = dict(FAIL)  # the rates in force: each size runs clean (0) and faulty (FAIL)


def _stage(request: GenerationRequest) -> str:
    props = request.json_schema["properties"]
    return "pivots" if "samples" in props else "dimension" if "labels" in props else "expand"


def _unit(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def simulated_answer(request: GenerationRequest) -> str:
    stage, content = _stage(request), request.messages[0]["content"]
    path = re.findall(r"^- ([^:\n\"]+): (.+)$", content, re.M)
    dim = DIMS[min(len(path), len(DIMS) - 1)]
    if stage == "pivots":
        n = request.json_schema["properties"]["samples"]["minItems"]
        text = json.dumps({"samples": [f"A word problem {i} about {', '.join(v for _, v in path) or 'anything'}: "
                                       "Tom buys 3 boxes of 12 pencils and gives away 7. How many are left?"
                                       for i in range(n)]})
    elif stage == "dimension":
        n = request.json_schema["properties"]["labels"]["minItems"]
        values = VALUES[dim][:3]
        text = json.dumps({"dimension": dim, "labels": [values[i % len(values)] for i in range(n)]})
    else:
        known = re.search(r"^Values so far: (.*)$", content, re.M).group(1).split(", ")
        new = [v for v in VALUES[dim] if v not in known]
        text = json.dumps({"new_values": new, "answer": "more_complete" if new else "nothing_to_add"})
    if _unit(request.key) < FAULTS[stage]:
        return text[: len(text) // 2]  # cut off, as at max_tokens
    return text


class SimulatedServer:
    name = "sim"
    model = "simulated"

    def __init__(self, call_s: float, tok_s: float, concurrency: int) -> None:
        self.call_s, self.tok_s, self.concurrency = call_s, tok_s, concurrency

    def load(self) -> None: ...

    def close(self) -> None: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            text = simulated_answer(r)
            prompt = sum(len(m["content"]) for m in r.messages) // 4
            out.append(GenerationResult(key=r.key, text=text, finish_reason="stop", prompt_tokens=prompt,
                                        completion_tokens=max(1, len(text) // 4)))
        longest = max((r.completion_tokens for r in out), default=0)
        waves = math.ceil(len(requests) / self.concurrency)
        time.sleep(self.call_s + waves * longest / self.tok_s)
        return out


def measure(tree: Tree, wall: float, label: str) -> dict:
    leaves = len(tree.leaves())
    tried = {n.depth for n in tree.nodes if not n.is_leaf or (n.reason or "").startswith("unsplittable")}
    row = {"tree": label, "leaves": leaves, "depth": tree.depth, "rounds": tree.rounds,
           "rounds/level": tree.rounds / max(1, len(tried)), "requests": tree.requests,
           "requests/leaf": tree.requests / leaves,
           "tokens/leaf": (tree.prompt_tokens + tree.completion_tokens) / leaves}
    rates = []
    for stage in ("pivots", "dimension", "expand"):
        s = tree.stats[stage]
        rates.append(f"{s['invalid'] / s['requests']:.0%}" if s["requests"] else "-")
    row["invalid p/d/e"] = " / ".join(rates)
    row["retry share"] = sum(s["retries"] for s in tree.stats.values()) / max(1, tree.requests)
    row["nodes given up"] = sum(tree.stats[st]["failed_nodes"] for st in ("pivots", "dimension"))
    row["wall s"] = wall
    return row


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [f"{row[c]:.0%}" if c == "retry share" else f"{row[c]:.1f}" if isinstance(row[c], float)
                 else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SIZES = [  # (label, max_depth, max_leaves)
    ("d1", 1, 10), ("d2", 2, 30), ("d3", 3, 200), ("d4", 4, 1000),
]


def run_simulated(args) -> list[dict]:
    rows = []
    for (label, depth, max_leaves), faulty in [(size, f) for f in (False, True) for size in SIZES]:
        FAULTS.update({k: v if faulty else 0.0 for k, v in FAIL.items()})
        settings = TreeSettings(max_depth=depth, pivots_per_node=6, max_values=6, infinite_threshold=10,
                                max_leaves=max_leaves, max_retries=2)
        backend = SimulatedServer(args.call_s, args.tok_s, args.concurrency)
        started = time.perf_counter()
        tree = build_tree(TASK, settings, backend, SamplingSettings(max_tokens=512))
        rows.append(measure(tree, time.perf_counter() - started,
                            f"sim {label}, max_leaves {max_leaves}{', faulty' if faulty else ''}"))
    return rows


def _reason_kind(row: dict) -> str:
    """`dimension: value 'x' is given twice` -> `dimension: value # is given twice`: counts group by kind."""
    return f"{row['stage']}: " + re.sub(r"[0-9]+|'[^']*'", "#", row["error"])[:70]


def run_embedded() -> tuple[list[dict], str]:
    from synth.backends.base import Sampling
    from synth.backends.llamacpp import LlamaCppBackend
    from synth.prompting.render import Renderer
    from synth.tree.answers import parse_pivots, pivots_schema

    render = Renderer().render

    backend = LlamaCppBackend()
    backend.load()
    settings = TreeSettings(max_depth=2, pivots_per_node=4, max_values=4, infinite_threshold=8, max_leaves=6,
                            max_retries=1)
    started = time.perf_counter()
    requests: list[dict] = []
    tree = build_tree(TASK, settings, backend, SamplingSettings(max_tokens=200, temperature=0.7),
                      on_requests=requests.extend)
    reasons = Counter(_reason_kind(r) for r in requests if r["error"])
    rows = [measure(tree, time.perf_counter() - started, "SmolLM2-135M CPU d2, pivots 4, max_leaves 6")]

    # Pivots: one request asking for N, or N requests asking for one each.
    n, trials, lines = 4, 4, []
    for mode in ("one request, N pivots", "N requests, 1 pivot"):
        per, count = (n, 1) if mode.startswith("one") else (1, n)
        content = render("tree/pivots.jinja2", {"task_description": TASK.description, "field_name": "question",
                                                "field_description": "the word problem", "path": [], "n": per})
        valid = distinct = tokens = 0
        wall = 0.0
        for t in range(trials):
            reqs = [GenerationRequest(key=f"{mode}{t}{i}", messages=({"role": "user", "content": content},),
                                      sampling=Sampling(temperature=0.7, max_tokens=200, seed=100 * t + i),
                                      json_schema=pivots_schema(per)) for i in range(count)]
            t0 = time.perf_counter()
            results = backend.generate(reqs)
            wall += time.perf_counter() - t0
            got: set[str] = set()
            for r in results:
                tokens += r.prompt_tokens + r.completion_tokens
                try:
                    got |= {p.casefold() for p in parse_pivots(r, per)} if per > 1 else {
                        s.casefold() for s in json.loads(r.text)["samples"] if isinstance(s, str) and s.strip()}
                except Exception:  # a bad answer counts as no pivots
                    pass
            distinct += len(got)
            valid += len(got) >= 2
        lines.append(f"| {mode} | {valid}/{trials} | {distinct / trials:.1f} | {tokens / trials:.0f} | "
                     f"{wall / trials:.1f} |")
    backend.close()
    head = ("| pivots for one node (n=4, embedded) | nodes with >= 2 pivots | distinct pivots/node | "
            "tokens/node | wall s/node |\n|---|---|---|---|---|")
    why = "\n".join(f"- {n} x {reason}" for reason, n in reasons.most_common(8))
    return rows, head + "\n" + "\n".join(lines) + "\n\nInvalid answers of the embedded build:\n" + why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true", help="also build a tiny tree with SmolLM2-135M")
    parser.add_argument("--call-s", type=float, default=0.2, help="simulated fixed cost of a backend call")
    parser.add_argument("--tok-s", type=float, default=400.0, help="simulated decode tokens/s per stream")
    parser.add_argument("--concurrency", type=int, default=64, help="simulated parallel streams")
    args = parser.parse_args(argv)
    rows = run_simulated(args)
    pivot_table = ""
    if args.embedded:
        more, pivot_table = run_embedded()
        rows += more
    print(f"TreeSynth build cost (pivots 6, max_values 6, infinite_threshold 10, max_retries 2; sim: "
          f"{args.call_s} s a call + longest answer at {args.tok_s:.0f} tok/s, {args.concurrency} streams; "
          f"faulty: the sim cuts off {', '.join(f'{k} {v:.0%}' for k, v in FAIL.items())} of answers, drawn per request id: a small tree may draw none)\n")
    print(table(rows))
    if pivot_table:
        print()
        print(pivot_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
