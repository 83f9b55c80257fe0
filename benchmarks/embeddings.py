"""The embedding model (synth/similarity/embedder.py) measured: speed, paraphrase against unrelated
cosine on a small hand-made set, and the semantic-dedup threshold calibrated on GSM8K.

1. sentences a second on GSM8K train questions (batched, every free core);
2. cosine of 12 hand-written paraphrases of GSM8K questions with their originals, against
   the same questions paired with another GSM8K question (same domain, different problem)
   and with a sentence from another domain;
3. the threshold for `quality.semantic_dup_threshold`: the nearest-neighbour cosine of
   distinct GSM8K train questions (what must stay apart) against the paraphrases (what
   should be caught); printed as the share of each above candidate thresholds;
4. the catalog's embedding cache (storage/tables/embeddings.py), what the next run of a growing
   dataset pays to load its semantic-dedup index: embedding and storing the questions
   (cold) against reading them back from a reopened catalog (warm), both against the
   plain embedding time of step 1.

    python benchmarks/embeddings.py [--questions 2000] [--cache-only]
    python benchmarks/embeddings.py --cache-scale 100000   # the cache alone, random vectors, no model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.similarity.embedder import get_embedder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
PARAPHRASES = [  # (GSM8K train question, a paraphrase written by hand: same facts, other words)
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?",
     "In April Natalia sold 48 clips to friends; in May she sold only half that number. What is the total "
     "number of clips she sold over the two months?"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?",
     "Babysitting pays Weng $12 per hour. She babysat for 50 minutes yesterday. What did she get paid?"),
    ("Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents "
     "decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more "
     "money does Betty need to buy the wallet?",
     "A wallet costs $100 and Betty has saved half of that. Her parents give her $15 and her grandparents give "
     "double what her parents gave. How much is Betty still short?"),
    ("Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read twice as many "
     "pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages should she read?",
     "Julie's book has 120 pages. She read 12 pages yesterday and double that today. Tomorrow she plans to read half "
     "of what is left. How many pages will that be?"),
    ("James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
     "Twice every week, James sends a 3-page letter to each of 2 friends. How many pages does he write in a year?"),
    ("Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. A large "
     "pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does he eat that day?",
     "Albert buys two large pizzas with 16 slices each and two small ones with 8 slices each, and eats every slice. "
     "How many slices does he eat in the day?"),
    ("Tina makes $18.00 an hour.  If she works more than 8 hours per shift, she is eligible for overtime, which is "
     "paid by your hourly wage + 1/2 your hourly wage.  If she works 10 hours every day for 5 days, how much money "
     "does she make?",
     "Tina's wage is $18 an hour, and any hours beyond 8 in a shift pay time and a half. She works 10-hour shifts "
     "for 5 days. What does she earn in total?"),
    ("Tobias is buying a new pair of shoes that costs $95. He has been saving up his money each month for the past "
     "three months. He gets a $5 allowance a month. He also mows lawns and shovels driveways. He charges $15 to mow "
     "a lawn and $7 to shovel. After buying the shoes, he has $15 in change. If he mows 4 lawns, how many driveways "
     "did he shovel?",
     "Tobias saved for three months to buy $95 shoes: a $5 monthly allowance, $15 per lawn mowed and $7 per driveway "
     "shoveled. He mowed 4 lawns and had $15 left after the purchase. How many driveways did he shovel?"),
    ("Randy has 60 mango trees on his farm. He also has 5 less than half as many coconut trees as mango trees. "
     "How many trees does Randy have in all on his farm?",
     "On Randy's farm there are 60 mango trees, and the number of coconut trees is half the mango trees minus 5. "
     "How many trees grow on the farm altogether?"),
    ("Joy can read 8 pages of a book in 20 minutes. How many hours will it take her to read 120 pages?",
     "Reading at 8 pages every 20 minutes, how many hours does Joy need for 120 pages?"),
    ("Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow, and "
     "there are 80% more of those in purple. There are only 25% as many green flowers as there are yellow and purple "
     "flowers. How many flowers does Mark have in his garden?",
     "Mark's garden has 10 yellow flowers, 80% more purple ones than yellow, and green flowers numbering a quarter of "
     "the yellow and purple together. How many flowers are in the garden?"),
    ("A deep-sea monster rises from the waters once every hundred years to feast on a ship and sate its hunger. Over "
     "three hundred years, it has consumed 847 people. Ships have been built larger over time, so each new ship has "
     "twice as many people as the last ship. How many people were on the ship the monster ate in the first hundred "
     "years?",
     "Every hundred years a sea monster eats one ship. In three hundred years it ate 847 people, and each ship carried "
     "twice the people of the one before. How many people were aboard the first ship?"),
]
OTHER_DOMAIN = "Write a Python function that returns the longest word in a sentence, breaking ties by first position."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--cache-only", action="store_true", help="steps 1 and 4 only")
    parser.add_argument("--cache-scale", type=int, metavar="ROWS",
                        help="only the cache at this many rows, with random vectors (no model)")
    args = parser.parse_args()
    if args.cache_scale:
        cache_scale(args.cache_scale)
        return 0
    source = SHARED if SHARED.exists() else ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
    questions = [json.loads(line)["question"] for line in source.read_text().splitlines() if line.strip()]
    questions = questions[:args.questions]
    embedder = get_embedder()
    embedder.encode(questions[:8])  # warm up
    started = time.perf_counter()
    vectors = embedder.encode(questions)
    wall = time.perf_counter() - started
    print(f"speed: {len(questions)} GSM8K questions in {wall:.1f} s = {len(questions) / wall:.1f} sentences/s")
    cache_figures(embedder, questions, wall)
    if args.cache_only:
        return 0
    originals = embedder.encode([a for a, _ in PARAPHRASES])
    rewrites = embedder.encode([b for _, b in PARAPHRASES])
    other = embedder.encode([OTHER_DOMAIN])[0]
    para = (originals * rewrites).sum(axis=1)
    same_domain = (originals * np.roll(originals, 1, axis=0)).sum(axis=1)
    cross = originals @ other
    for name, values in (("paraphrase", para), ("another GSM8K question", same_domain), ("another domain", cross)):
        print(f"cosine, {name:24s}: min {values.min():.3f}  mean {values.mean():.3f}  max {values.max():.3f}")
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    nearest = sims.max(axis=1)
    print(f"nearest-neighbour cosine of {len(questions)} distinct questions: p50 {np.median(nearest):.3f}  "
          f"p99 {np.percentile(nearest, 99):.3f}  max {nearest.max():.3f}")
    print("| threshold | paraphrases caught | distinct questions flagged (nearest >= t) |\n|---:|---:|---:|")
    for t in (0.90, 0.92, 0.93, 0.94, 0.95, 0.96):
        print(f"| {t:.2f} | {(para >= t).sum()}/{len(para)} | {(nearest >= t).mean():.2%} |")
    return 0


def cache_scale(rows: int) -> None:
    """Storing and reading back `rows` vectors (what a dataset of that size loads each run)."""
    import tempfile

    from storage.catalog.catalog import Catalog
    from storage.tables.embeddings import CachedEmbedder

    vectors = np.random.default_rng(0).standard_normal((rows, 384)).astype(np.float32)
    texts = [f"question {i}: how many apples are left?" for i in range(rows)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.duckdb"
        with Catalog(path) as catalog:
            started = time.perf_counter()
            CachedEmbedder(catalog, lambda batch: vectors[:len(batch)], "random").encode(texts)
            store_s = time.perf_counter() - started
        with Catalog(path) as catalog:
            started = time.perf_counter()
            cache = CachedEmbedder(catalog, lambda batch: vectors[:len(batch)], "random")
            back = cache.encode(texts)
            read_s = time.perf_counter() - started
        size = path.stat().st_size
    assert cache.embedded == 0 and np.array_equal(back, vectors)
    print(f"cache, {rows} rows of 384 floats: store (hash, lookup, insert) {store_s:.2f} s, read back {read_s:.2f} s, "
          f"catalog file {size / 1e6:.0f} MB; embedding them at 18-29 sentences/s would take "
          f"{rows / 29 / 60:.0f}-{rows / 18 / 60:.0f} min")


def cache_figures(embedder, questions: list[str], plain_s: float) -> None:
    """Cold: the cache's own work (hashing, lookup, storing) is timed apart from the model's
    (the embedding speed drifts by several % between passes, more than that work costs)."""
    import tempfile

    from storage.catalog.catalog import Catalog
    from storage.tables.embeddings import CachedEmbedder

    model_s = [0.0]

    def timed_encode(texts):
        started = time.perf_counter()
        try:
            return embedder.encode(texts)
        finally:
            model_s[0] += time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.duckdb"
        with Catalog(path) as catalog:
            started = time.perf_counter()
            cold = CachedEmbedder(catalog, timed_encode, embedder.cache_key).encode(questions)
            cold_s = time.perf_counter() - started
        with Catalog(path) as catalog:
            started = time.perf_counter()
            cache = CachedEmbedder(catalog, timed_encode, embedder.cache_key)
            warm = cache.encode(questions)
            warm_s = time.perf_counter() - started
            size = path.stat().st_size
    assert cache.embedded == 0 and np.array_equal(cold, warm)
    own = cold_s - model_s[0]
    print(f"cache, {len(questions)} questions: cold {cold_s:.2f} s, of which the cache's own work (hash, lookup, "
          f"store) {own:.3f} s = {own / model_s[0]:.2%} of the embedding time; warm (read back from a reopened "
          f"catalog) {warm_s:.3f} s = {warm_s / plain_s:.4f} x embedding them ({plain_s / warm_s:.0f}x faster); "
          f"catalog file {size / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
