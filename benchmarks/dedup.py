"""Near-duplicate detection, on the same rows in the same run: datasketch's MinHashLSH (what
the factory used), synth.similarity.minhash batched and one text at a time, and exact Jaccard as ground
truth. Real GSM8K questions plus light rewordings of earlier ones (1-4 random edits: a word
swapped, deleted or added, a number or a name changed, a sentence appended), so some pairs
land above the threshold and some just below.

    python benchmarks/dedup.py [--n 3000] [--threshold 0.5 0.85] [--seeds 10]

Every method runs the factory's loop: check a text against the kept ones, keep it if it is
not a near-duplicate. Prints docs/s (the best run), the speed-up over datasketch, and
recall and precision against the exact answer: recall over the texts exact Jaccard calls
duplicates, precision over the texts a method flags (is the match it named really >= the
threshold). Both MinHash methods use 128 permutations and the same bands x rows, so their
recall is the same in expectation; it is shown as mean ± sd over --seeds hash seeds,
because one seed's figure moves by a few points (3 at threshold 0.85 on 3000 texts).
Exact Jaccard uses an inverted index over shingles, so it covers every pair.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasketch import MinHash, MinHashLSH  # noqa: E402

from synth.curation.dedup import shingles  # noqa: E402
from synth.similarity.minhash import NUM_PERM, MinHashIndex  # noqa: E402

NAMES = ["Maria", "John", "Aisha", "Kenji", "Olga", "Pedro", "Lena", "Tom"]
FILLERS = ["exactly", "in total", "altogether", "each day", "now", "then"]
SENTENCES = [" Explain your answer.", " Show your work.", " Give the answer as a number."]


def load_questions() -> list[str]:
    source = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    if not source.exists():
        source = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
    return [json.loads(line)["question"] for line in source.read_text().splitlines() if line.strip()]


def reword(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(words))
        edit = rng.randrange(5)
        if edit == 0 and len(words) > 3:
            del words[i]
        elif edit == 1:
            words.insert(i, rng.choice(FILLERS))
        elif edit == 2:
            numbers = [j for j, w in enumerate(words) if any(c.isdigit() for c in w)]
            words[rng.choice(numbers) if numbers else i] = str(rng.randint(2, 99))
        elif edit == 3:
            names = [j for j, w in enumerate(words) if j and w[:1].isupper()]
            words[rng.choice(names) if names else i] = rng.choice(NAMES)
        else:
            words.append(rng.choice(SENTENCES).strip())
    return " ".join(words)


def make_texts(n: int, seed: int = 0) -> list[str]:
    questions, rng = load_questions(), random.Random(seed)
    texts: list[str] = []
    for i in range(n):  # about one text in five rewords an earlier one
        texts.append(reword(rng.choice(texts), rng) if texts and rng.random() < 0.2
                     else questions[i % len(questions)])
    return texts


def exact_jaccard(texts: list[str], threshold: float) -> tuple[dict[tuple[int, int], float], list[int | None]]:
    """Every pair (later, earlier) with Jaccard >= threshold, and the factory's answer
    for each text (an earlier kept text it duplicates, or None)."""
    sets = [shingles(t) for t in texts]
    postings: dict[bytes, list[int]] = {}
    pairs: dict[tuple[int, int], float] = {}
    for i, s in enumerate(sets):
        shared = Counter(j for g in s for j in postings.get(g, ()))
        for j, inter in shared.items():
            score = inter / (len(s) + len(sets[j]) - inter)
            if score >= threshold:
                pairs[(i, j)] = score
        for g in s:
            postings.setdefault(g, []).append(i)
    kept: set[int] = set()
    truth: list[int | None] = []
    for i in range(len(texts)):
        match = next((j for j in range(i) if j in kept and (i, j) in pairs), None)
        truth.append(match)
        if match is None:
            kept.add(i)
    return pairs, truth


def run_datasketch(texts: list[str], threshold: float, seed: int) -> list[int | None]:
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    kept: dict[int, MinHash] = {}
    found: list[int | None] = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=seed)
        m.update_batch(list(shingles(text)))
        scores = [(m.jaccard(kept[j]), -j) for j in lsh.query(m)]
        best = max(scores, default=(0.0, 0))
        match = -best[1] if best[0] >= threshold else None
        found.append(match)
        if match is None:
            kept[i] = m
            lsh.insert(i, m)
    return found


def run_batched(texts: list[str], threshold: float, seed: int) -> list[int | None]:
    return MinHashIndex(threshold, seed=seed).dedup_many(range(len(texts)), texts)


def run_single(texts: list[str], threshold: float, seed: int) -> list[int | None]:
    index = MinHashIndex(threshold, seed=seed)
    found: list[int | None] = []
    for i, text in enumerate(texts):
        match = index.find(text)
        found.append(match)
        if match is None:
            index.add(i, text)
    return found


def score(found: list[int | None], truth: list[int | None], pairs: dict) -> tuple[float, float, int]:
    flagged = [i for i, match in enumerate(found) if match is not None]
    true_dups = {i for i, match in enumerate(truth) if match is not None}
    recall = len(true_dups.intersection(flagged)) / len(true_dups) if true_dups else 1.0
    precision = sum((i, found[i]) in pairs for i in flagged) / len(flagged) if flagged else 1.0
    return recall, precision, len(flagged)


def measure(method: Callable, texts: list[str], threshold: float, seeds: int, truth: list[int | None],
            pairs: dict) -> tuple[float, str, str, float]:
    """(best seconds, recall, precision, flagged) over hash seeds 1..seeds: mean +- sd."""
    best, scores = float("inf"), []
    for seed in range(1, seeds + 1):
        started = time.perf_counter()
        found = method(texts, threshold, seed)
        best = min(best, time.perf_counter() - started)
        scores.append(score(found, truth, pairs))
    recall, precision, flagged = zip(*scores)
    return best, spread(recall), spread(precision), statistics.mean(flagged)


def spread(values: tuple[float, ...]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5, 0.85])
    parser.add_argument("--seeds", type=int, default=10, help="hash seeds: recall is their mean, time the best")
    args = parser.parse_args()
    texts = make_texts(args.n)
    MinHashIndex(0.5).dedup_many([0], texts[:1])  # numpy's first-call set-up is not the method's cost
    print(f"{args.n} texts ({sum(len(t) for t in texts) / args.n:.0f} characters on average), "
          f"{NUM_PERM} permutations, {args.seeds} seeds\n")
    print("| threshold | method | docs/s | x datasketch | recall | precision | flagged |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for threshold in args.threshold:
        started = time.perf_counter()
        pairs, truth = exact_jaccard(texts, threshold)
        exact_s = time.perf_counter() - started
        results = {name: measure(method, texts, threshold, args.seeds, truth, pairs) for name, method in
                   [("datasketch MinHashLSH", run_datasketch), ("synth.similarity.minhash, one batch", run_batched),
                    ("synth.similarity.minhash, one text at a time", run_single)]}
        base = args.n / results["datasketch MinHashLSH"][0]
        for name, (seconds, recall, precision, flagged) in results.items():
            print(f"| {threshold} | {name} | {args.n / seconds:,.0f} | {args.n / seconds / base:.1f} | "
                  f"{recall} | {precision} | {flagged:.0f} |")
        print(f"| {threshold} | exact Jaccard (inverted index, ground truth) | {args.n / exact_s:,.0f} | "
              f"{args.n / exact_s / base:.1f} | 1 | 1 | {sum(m is not None for m in truth)} |")


if __name__ == "__main__":
    main()
