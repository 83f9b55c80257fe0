"""Decontamination (synth/curation/decontam.py): recall on copied test items, false positives on
unrelated ones, and throughput at 100 k candidates against a 10 k-item test set.

    python benchmarks/decontam.py [--candidates 100000] [--items 10000] [--seed 0]

Real data from ../shared/data: GSM8K train (7,473 problems; the test split is not here,
so train problems stand in for test items) and HumanEval (164 problems).

Test items are indexed by their question field (GSM8K `question`, HumanEval `prompt`), as
the factory does (synth/curation/decontam.py says why); candidates are checked on all their fields.

Recall (each copy checked against an index of the whole set it came from):
- GSM8K questions: exact; numbers changed (every number replaced by another); lightly
  edited (numbers changed, a name changed, one word dropped, a lead-in sentence added);
- HumanEval prompt + solution: exact; identifiers renamed (function, parameters, locals,
  everywhere, docstring and examples included); renamed and the docstring's first
  sentence reworded.
False positives (nothing here is a copy of an indexed item):
- GSM8K train split in two halves: one half indexed, the other half's questions and
  answers checked (distinct problems, though GSM8K train holds a few near-twins of its own:
  the flagged pairs are printed so a person can judge them);
- HumanEval leave-one-out: each problem against an index of the other 163;
- GSM8K questions against HumanEval, HumanEval against GSM8K.
Throughput: the 10 k-item test set is GSM8K train (7,473) + HumanEval (164) + synthetic
GSM8K-style items (two real problems' sentences spliced: the first half of one, the second
half of another) up to --items; the candidates are GSM8K questions with their numbers changed
and one word dropped, and HumanEval prompts renamed, cycled to --candidates (a share of
them copies by construction). Index build time and candidates a second, one process, and
the ratio to the heuristic filters (synth/curation/filters.py) on the same candidates in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.curation.decontam import DecontamIndex, TestItem, defined_names  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
NAMES = ["Maria", "John", "Aisha", "Kenji", "Olga", "Pedro", "Lena", "Tom"]
LEAD_INS = ["Solve this problem.", "Here is a word problem for you.", "Read carefully and answer."]


def gsm8k() -> list[dict]:
    return [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines() if line.strip()]


def humaneval() -> list[dict]:
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as handle:
        return [json.loads(line) for line in handle]


def change_numbers(text: str, rng: random.Random) -> str:
    def other(m: re.Match) -> str:
        value = m.group(0)
        new = value
        while new == value:
            new = str(rng.randint(2, 10 ** max(1, len(value)) + 9))
        return new
    return re.sub(r"\d+", other, text)


def light_edit(text: str, rng: random.Random) -> str:
    text = change_numbers(text, rng)
    for name in NAMES:
        text = text.replace(name, rng.choice(NAMES))
    words = text.split(" ")
    if len(words) > 6:
        del words[rng.randrange(len(words))]
    return f"{rng.choice(LEAD_INS)} {' '.join(words)}"


def rename(problem: dict, rng: random.Random) -> dict:
    names = defined_names(problem["prompt"] + "\n" + problem["canonical_solution"])
    originals = {n for n in re.findall(r"[A-Za-z_]\w*", problem["prompt"] + problem["canonical_solution"])
                 if n.lower() in names}
    stems = ["val", "item", "arg", "tmp", "res", "acc"]
    mapping = {n: f"{rng.choice(stems)}_{i}" for i, n in enumerate(sorted(originals))}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")\b") \
        if mapping else None

    def apply(text: str) -> str:
        return pattern.sub(lambda m: mapping[m.group(0)], text) if pattern else text
    return {"prompt": apply(problem["prompt"]), "canonical_solution": apply(problem["canonical_solution"])}


def reword_docstring(problem: dict) -> dict:
    prompt = re.sub(r'("""|\'\'\')\s*', r"\1 Given the input below, do the following. ", problem["prompt"], count=1)
    return {**problem, "prompt": prompt}


def index_of(rows: list[dict], fields: tuple[str, ...], prefix: str, key: str | None = None) -> DecontamIndex:
    return DecontamIndex.build([TestItem(f"{prefix}#{r[key] if key else i}", {f: r[f] for f in fields})
                                for i, r in enumerate(rows)])


def rate(index: DecontamIndex, candidates: list[dict]) -> tuple[float, list]:
    matches = [index.check(c) for c in candidates]
    hits = [(c, m) for c, m in zip(candidates, matches) if m is not None]
    return len(hits) / len(candidates), hits


def recall_table(gsm: list[dict], he: list[dict], rng: random.Random) -> list[tuple[str, int, float]]:
    gsm_index = index_of(gsm, ("question",), "gsm8k")
    he_index = index_of(he, ("prompt",), "humaneval", "task_id")
    sample = rng.sample(gsm, 2000)
    rows = [
        ("GSM8K question, exact", [{"question": r["question"]} for r in sample], gsm_index),
        ("GSM8K question, numbers changed", [{"question": change_numbers(r["question"], rng)} for r in sample],
         gsm_index),
        ("GSM8K question, lightly edited", [{"question": light_edit(r["question"], rng)} for r in sample], gsm_index),
        ("GSM8K question + answer, numbers changed",
         [{"question": change_numbers(r["question"], rng), "answer": change_numbers(r["answer"], rng)}
          for r in sample], gsm_index),
        ("HumanEval prompt + solution, exact", [{k: p[k] for k in ("prompt", "canonical_solution")} for p in he],
         he_index),
        ("HumanEval prompt + solution, renamed", [rename(p, rng) for p in he], he_index),
        ("HumanEval prompt only, renamed", [{"prompt": rename(p, rng)["prompt"]} for p in he], he_index),
        ("HumanEval renamed, docstring reworded", [reword_docstring(rename(p, rng)) for p in he], he_index),
    ]
    out = []
    for label, candidates, index in rows:
        share, _ = rate(index, candidates)
        out.append((label, len(candidates), share))
    return out


def false_positive_table(gsm: list[dict], he: list[dict], rng: random.Random) -> list[tuple[str, int, float, list]]:
    order = list(range(len(gsm)))
    rng.shuffle(order)
    half = len(order) // 2
    gsm_a, gsm_b = [gsm[i] for i in order[:half]], [gsm[i] for i in order[half:]]
    fields_he = ("prompt", "canonical_solution")
    rows = [
        ("GSM8K half B (q + a) vs GSM8K half A", gsm_b, index_of(gsm_a, ("question",), "gsm8k")),
        ("GSM8K (q + a) vs HumanEval", gsm, index_of(he, ("prompt",), "humaneval", "task_id")),
        ("HumanEval vs GSM8K", [{k: p[k] for k in fields_he} for p in he], index_of(gsm, ("question",), "gsm8k")),
    ]
    out = []
    for label, candidates, index in rows:
        share, hits = rate(index, [{k: v for k, v in c.items() if k in ("question", "answer", *fields_he)}
                                   for c in candidates])
        out.append((label, len(candidates), share, hits))
    # each HumanEval problem against the other 163
    hits = [(p, m) for i, p in enumerate(he) for m in [index_of(he[:i] + he[i + 1:], ("prompt",), "humaneval",
                                                                "task_id").check({k: p[k] for k in fields_he})]
            if m is not None]
    out.append(("HumanEval vs the other 163 HumanEval problems", len(he), len(hits) / len(he), hits))
    return out


def throughput(gsm: list[dict], he: list[dict], n_items: int, n_candidates: int, rng: random.Random) -> dict:
    items = [TestItem(f"gsm8k#{i}", {"question": r["question"]}) for i, r in enumerate(gsm)]
    items += [TestItem(p["task_id"], {"question": p["prompt"]}) for p in he]
    while len(items) < n_items:
        a, b = rng.sample(gsm, 2)
        sa, sb = re.split(r"(?<=[.?!])\s+", a["question"]), re.split(r"(?<=[.?!])\s+", b["question"])
        spliced = " ".join(sa[:len(sa) // 2 or 1] + sb[len(sb) // 2:])
        items.append(TestItem(f"spliced#{len(items)}", {"question": spliced}))
    items = items[:n_items]
    start = time.perf_counter()
    index = DecontamIndex.build(items)
    built = time.perf_counter() - start
    pool = [{"question": light_edit(r["question"], rng)} for r in rng.sample(gsm, 3000)]
    pool += [{"question": rename(p, rng)["prompt"]} for p in he]
    candidates = [pool[i % len(pool)] for i in range(n_candidates)]
    from synth.curation.filters import FilterContext, default_filters, first_problem

    filter_ctx, filters = FilterContext(question_field="question"), default_filters()
    sample = candidates[:10_000]
    start = time.perf_counter()
    for c in sample:  # the baseline: the heuristic filters every candidate already goes through
        first_problem(c, filter_ctx, filters)
    filters_s = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    flagged = sum(index.check(c) is not None for c in candidates)
    took = time.perf_counter() - start
    return {"items": len(items), "postings": len(index.keys_long) + len(index.keys_span), "build_s": built,
            "candidates": n_candidates, "check_s": took, "per_s": n_candidates / took, "flagged": flagged,
            "vs_filters": took / n_candidates / filters_s}


def drop_words(text: str, share: float, rng: random.Random) -> str:
    """A heavier edit than the recall table's: `share` of the words removed at random, which
    leaves few 13-word runs intact (what the embedding rule is for)."""
    return " ".join(w for w in text.split(" ") if rng.random() >= share)


def calibrate_embedding(gsm: list[dict], n: int, rng: random.Random) -> None:
    """The embedding rule's cosine: n GSM8K questions indexed; negatives are n other GSM8K
    questions (their nearest indexed neighbour's cosine), positives are copies of the indexed
    ones with numbers changed and 30 % of their words dropped. Prints the negatives' quantiles,
    and at each candidate threshold the false-positive rate, the recall, and the recall of the
    lexical rules alone on the same copies."""
    import numpy as np

    from synth.similarity.embedder import get_embedder

    picked = rng.sample(gsm, 2 * n)
    indexed, others = picked[:n], picked[n:]
    copies = [{"question": drop_words(change_numbers(r["question"], rng), 0.3, rng)} for r in indexed]
    embed = get_embedder().encode
    start = time.perf_counter()
    vectors = embed([r["question"] for r in indexed])
    negatives = (embed([r["question"] for r in others]) @ vectors.T).max(axis=1)
    positives = (embed([c["question"] for c in copies]) * vectors).sum(axis=1)
    took = time.perf_counter() - start
    lexical = index_of(indexed, ("question",), "gsm8k")
    lexical_hits = np.array([lexical.check(c) is not None for c in copies])
    print(f"\nembedding calibration: {3 * n} texts embedded in {took:.0f} s; negatives' nearest cosine "
          f"p50 {np.quantile(negatives, 0.5):.3f}, p99 {np.quantile(negatives, 0.99):.3f}, max {negatives.max():.3f}")
    print("| cosine | false positives | recall, 30 % words dropped | lexical rules alone | either |")
    print("|---|---|---|---|---|")
    for threshold in (0.88, 0.90, 0.92, 0.94, 0.95):
        caught = positives >= threshold
        print(f"| {threshold} | {(negatives >= threshold).mean():.2%} | {caught.mean():.2%} "
              f"| {lexical_hits.mean():.2%} | {(caught | lexical_hits).mean():.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=5, help="flagged false positives to print per set")
    parser.add_argument("--embed", type=int, default=0, metavar="N",
                        help="also calibrate the embedding rule on N GSM8K questions (3 N texts embedded)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    gsm, he = gsm8k(), humaneval()
    print("| recall: copies of indexed items | n | flagged |\n|---|---|---|")
    for label, n, share in recall_table(gsm, he, rng):
        print(f"| {label} | {n} | {share:.2%} |")
    print("\n| false positives: unrelated sets | n | flagged |\n|---|---|---|")
    shown = []
    for label, n, share, hits in false_positive_table(gsm, he, rng):
        print(f"| {label} | {n} | {share:.2%} ({len(hits)}) |")
        shown += [(label, m) for _, m in hits[:args.show]]
    for label, m in shown:
        print(f"  {label}: {m.reject()}"[:300])
    if args.embed:
        calibrate_embedding(gsm, args.embed, rng)
    if not args.candidates:
        return
    t = throughput(gsm, he, args.items, args.candidates, rng)
    print(f"\nthroughput: {t['items']} test items ({t['postings']} postings) indexed in {t['build_s']:.1f} s; "
          f"{t['candidates']} candidates checked in {t['check_s']:.1f} s = {t['per_s']:.0f}/s "
          f"({t['flagged']} flagged); {t['vs_filters']:.1f} x the time of the heuristic filters per candidate")


if __name__ == "__main__":
    main()
