"""Near-duplicate detection: MinHash LSH (datasketch, what the factory uses) against exact
pairwise Jaccard over the same shingles, on real GSM8K questions, in the same run.

    python benchmarks/dedup.py [--n 2000]

Prints the time per sample of each and the recall of LSH against the exact pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.dedup import NearDupIndex, shingles  # noqa: E402

THRESHOLD = 0.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    source = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    if not source.exists():
        source = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
    rows = [json.loads(line)["question"] for line in source.read_text().splitlines()]
    texts = []
    for i in range(args.n):  # every 5th text is a light rewording of an earlier one
        if i % 5 == 4:
            texts.append(texts[i - 3].replace(" the ", " a ", 1).replace(".", " then.", 1) + " Explain.")
        else:
            texts.append(rows[i % len(rows)])

    started = time.perf_counter()
    index = NearDupIndex(THRESHOLD)
    lsh_pairs = set()
    for i, text in enumerate(texts):
        hit = index.find(text)
        if hit is not None:
            lsh_pairs.add(i)
        index.add(str(i), text)
    lsh_s = time.perf_counter() - started

    started = time.perf_counter()
    sets = []
    exact_pairs = set()
    for i, text in enumerate(texts):
        s = shingles(text)
        for other in sets:
            if s and len(s & other) / len(s | other) >= THRESHOLD:
                exact_pairs.add(i)
                break
        sets.append(s)
    exact_s = time.perf_counter() - started
    recall = len(lsh_pairs & exact_pairs) / len(exact_pairs) if exact_pairs else 1.0
    print(f"| n | LSH ms/sample | exact ms/sample | exact / LSH | LSH recall | LSH flagged | exact flagged |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.n} | {1000 * lsh_s / args.n:.2f} | {1000 * exact_s / args.n:.2f} | {exact_s / lsh_s:.1f} | "
          f"{recall:.3f} | {len(lsh_pairs)} | {len(exact_pairs)} |")


if __name__ == "__main__":
    main()
