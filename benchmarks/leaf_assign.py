"""Embedding leaf assignment (`balance.assign: embedding`) against the LLM classifier, on a
labelled set: the 40 GSM8K rows that recipes/gsm8k_rebalance.yaml rebalances, labelled by
hand onto the four topics of recipes/trees/gsm8k_topics.yaml.

Prints each method's agreement with the hand labels, the agreement of the two methods
with each other, and the time each took.

    python benchmarks/leaf_assign.py                       # embedding only
    python benchmarks/leaf_assign.py --llm embedded        # and the LLM classifier on this model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.backends.base import SamplingSettings  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402
from synth.similarity.embedder import get_embedder  # noqa: E402
from synth.tree import tree_from_yaml  # noqa: E402
from synth.tree.classify import classify_rows  # noqa: E402
from synth.tree.embed_assign import assign_by_embedding  # noqa: E402

M, T, C, G = "money and shopping", "time and rates", "counting and groups", "measurement and geometry"
# Rows 0-39 of recipes/seeds/gsm8k_120.jsonl, read and labelled by hand (a judgement call
# where a problem mixes topics: e.g. an hourly wage is money, pages read per minute is a rate).
HAND = [C, M, M, C, C, C, C, G, M, M, C, M, C, M, T, M, M, C, T, T,
        C, C, C, M, M, C, G, C, C, M, C, M, G, G, M, C, M, M, G, C]


def agreement(a, b) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", help="also classify with the LLM on this model (embedded, embedded-1.5b, a GGUF)")
    args = parser.parse_args()
    recipe = load_recipe(ROOT / "recipes" / "gsm8k_rebalance.yaml")
    tree = tree_from_yaml((ROOT / "recipes" / "trees" / "gsm8k_topics.yaml").read_text())
    rows = [json.loads(line) for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]
    texts = [r["question"] for r in rows[:len(HAND)]]
    value = {leaf.node_id: leaf.value for leaf in tree.leaves()}
    get_embedder().encode(["warm up"])
    started = time.perf_counter()
    by_embedding = [value.get(a.leaf_id) for a in assign_by_embedding(tree, texts, get_embedder().encode)]
    print(f"embedding: {agreement(by_embedding, HAND):.0%} agree with the hand labels "
          f"({time.perf_counter() - started:.1f} s, no requests)")
    if args.llm:
        from synth.backends.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(model=args.llm, n_ctx=2048)
        backend.load()
        sampling = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=48, seed=7)
        started = time.perf_counter()
        by_llm = [value.get(a.leaf_id) for a in classify_rows(tree, recipe.task, texts, backend, sampling)]
        wall = time.perf_counter() - started
        backend.close()
        print(f"LLM classifier ({backend.model}): {agreement(by_llm, HAND):.0%} agree with the hand labels "
              f"({wall:.1f} s); embedding and LLM agree on {agreement(by_llm, by_embedding):.0%}")
        print("LLM labels:", [(v or "-")[:5] for v in by_llm])
    print("embedding :", [(v or "-")[:5] for v in by_embedding])
    print("hand      :", [v[:5] for v in HAND])
    return 0


if __name__ == "__main__":
    sys.exit(main())
