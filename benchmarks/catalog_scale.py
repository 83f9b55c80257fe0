"""The catalog at scale: a synthetic catalog of N samples with realistic text, then the bulk
paths of storage/catalog/bulk.py timed against the targets of issue 5.

    python benchmarks/catalog_scale.py [--rows 1000000] [--leaves 1000] [--dir /tmp] [--keep]

Rows are GSM8K-like: each question joins two statements and a question drawn from the
sentences of ../shared/data/gsm8k/train.jsonl, each answer three worked lines and a
`#### N` line; about 5 % of rows copy an earlier row's text (exact duplicates), leaves
follow a Zipf-like skew, `fields` is the JSON the factory writes. Rows are made with
numpy and pyarrow a batch at a time (no Python loop over rows), four runs of one dataset.
Prints a markdown table: ingest rows/s, exact dedup, rebalance planning, downsample, reading
the text back, file size.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.catalog import bulk  # noqa: E402
from storage.catalog.catalog import Catalog  # noqa: E402

BATCH = 1_000_000
RUNS = [f"run{i:016x}" for i in (0xA1, 0xB2, 0xC3, 0xD4)]
STRATEGIES = pa.array(["question_rephrase", "answer_augmentation", "tree_synthesis"])
DUPLICATE_SHARE = 0.05
U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """A bijection on uint64 (MurmurHash3's finaliser): distinct inputs, distinct outputs."""
    x = x.astype(U64)
    x ^= x >> U64(33)
    x *= U64(0xFF51AFD7ED558CCD)
    x ^= x >> U64(33)
    x *= U64(0xC4CEB9FE1A85EC53)
    x ^= x >> U64(33)
    return x


def hex_ids(x: np.ndarray, chars: int) -> pa.Array:
    """Fixed-width lower-case hex strings of uint64 values (the first `chars` of them, <= 16)."""
    nibbles = (x[:, None] >> (U64(4) * np.arange(15, 15 - chars, -1, dtype=U64))) & U64(15)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles.astype(np.intp)]
    return pa.array(digits.view(f"S{chars}").ravel()).cast(pa.string())


class TextPool:
    """GSM8K sentences, JSON-escaped once, to be recombined by index."""

    def __init__(self) -> None:
        source = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
        if not source.exists():
            source = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        sentences = [s for r in rows for s in re.split(r"(?<=[.?!])\s+", r["question"].strip()) if s]

        def escaped(items: list[str]) -> pa.Array:
            return pa.array([json.dumps(s, ensure_ascii=False)[1:-1] for s in items])

        self.statements = escaped([s for s in sentences if not s.endswith("?")])
        self.questions = escaped([s for s in sentences if s.endswith("?")])
        self.steps = escaped([line for r in rows for line in r["answer"].split("\n")[:-1] if line])

    def fields(self, picks: np.ndarray) -> pa.Array:
        """`fields` JSON from [n, 7] picks: two statements, a question, three steps, a number."""
        parts = [
            '{"answer": "', self.steps.take(picks[:, 3] % len(self.steps)), "\\n",
            self.steps.take(picks[:, 4] % len(self.steps)), "\\n", self.steps.take(picks[:, 5] % len(self.steps)),
            "\\n#### ", pa.array(picks[:, 6] % 1000).cast(pa.string()), '", "question": "',
            self.statements.take(picks[:, 0] % len(self.statements)), " ",
            self.statements.take(picks[:, 1] % len(self.statements)), " ",
            self.questions.take(picks[:, 2] % len(self.questions)), '"}',
        ]
        return pc.binary_join_element_wise(*parts, "")


def leaf_table(leaves: int) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Leaf ids, their JSON paths, and a Zipf-like share of the rows for each."""
    ids = hex_ids(_mix(np.arange(leaves, dtype=U64) + U64(7)), 16)
    paths = pa.array([json.dumps([["topic", f"topic {i // 40}"], ["skill", f"skill {i % 40}"]])
                      for i in range(leaves)])
    weights = 1.0 / np.arange(1, leaves + 1) ** 0.8
    return ids, paths, weights / weights.sum()


def make_batch(start: int, n: int, total: int, pool: TextPool, leaves: tuple, seed: int) -> pa.Table:
    """Rows [start, start + n) of the catalog; the same arguments give the same rows."""
    rng = np.random.default_rng([seed, start])
    rows = np.arange(start, start + n, dtype=np.int64)
    text = rows.copy()  # the text of row i is made from text id i, except copies of earlier rows
    copy = (rng.random(n) < DUPLICATE_SHARE) & (rows > 0)
    text[copy] = rng.integers(0, rows[copy])
    salt = U64(seed) << U64(40)
    picks = (_mix((text.astype(U64)[:, None] << U64(3)) + np.arange(7, dtype=U64) + salt) >> U64(33)).astype(np.int64)
    ids, paths, share = leaves
    leaf = rng.choice(len(ids), size=n, p=share)
    per_run = -(-total // len(RUNS))
    status = np.where(rng.random(n) < 0.9, 0, rng.integers(1, 3, n))
    created = np.datetime64(datetime(2026, 1, 1), "us") + rows.astype("timedelta64[ms]") * 10
    return pa.table({
        "sample_id": hex_ids(_mix(rows.astype(U64) + salt), 16),
        "run_id": pa.array(RUNS).take(rows // per_run),
        "slot": pa.array((rows % per_run).astype(np.int32)),
        "attempt": pa.array(np.zeros(n, np.int32)),
        "leaf_id": ids.take(leaf),
        "leaf_path": paths.take(leaf),
        "strategy": STRATEGIES.take(rng.integers(0, len(STRATEGIES), n)),
        "seed_row": pa.array(rng.integers(0, 7473, n).astype(np.int32)),
        "request_id": hex_ids(_mix(rows.astype(U64) + salt + U64(1 << 39)), 16),
        "fields": pool.fields(picks),
        "raw_text": pa.nulls(n, pa.string()),
        "content_hash": hex_ids(_mix(text.astype(U64) + salt + U64(1 << 38)), 16),
        "status": pa.array(["accepted", "filtered", "rejected"]).take(status),
        "reason": pa.array([None, "too_short: question", "verification failed"], pa.string()).take(status),
        "duplicate_of": pa.nulls(n, pa.string()),
        "quality": pa.array(rng.random(n)),
        "verified": pa.array(rng.random(n) < 0.8),
        "created_at": pa.array(created, pa.timestamp("us")),
    })


def build(catalog: Catalog, rows: int, leaves: int, seed: int) -> tuple[float, float]:
    """Fill the catalog batch by batch; returns (seconds making rows, seconds ingesting them)."""
    pool, leaf_info = TextPool(), leaf_table(leaves)
    making = ingesting = 0.0
    for start in range(0, rows, BATCH):
        started = time.perf_counter()
        batch = make_batch(start, min(BATCH, rows - start), rows, pool, leaf_info, seed)
        making += time.perf_counter() - started
        started = time.perf_counter()
        bulk.ingest_samples(catalog, batch)
        ingesting += time.perf_counter() - started
        print(f"  {start + len(batch):,} rows", file=sys.stderr)
    started = time.perf_counter()
    catalog.con.execute("CHECKPOINT")  # what is on disk counts as ingested
    return making, ingesting + time.perf_counter() - started


def timed(action, *args):
    started = time.perf_counter()
    result = action(*args)
    return result, time.perf_counter() - started


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the catalog goes (default: a temp dir in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the catalog file")
    parser.add_argument("--memory-limit", default="12GB", help="DuckDB's memory_limit")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="catalog_scale_", dir=args.dir or "/tmp"))
    path = folder / "catalog.duckdb"
    try:
        with Catalog(path) as catalog:
            catalog.con.execute("SET memory_limit = ?", [args.memory_limit])
            making, ingest_s = build(catalog, args.rows, args.leaves, args.seed)
            marked, dedup_s = timed(bulk.mark_exact_duplicates, catalog, RUNS)
            accepted = sum(bulk.accepted_per_leaf(catalog, RUNS).values())
            uniform = {leaf: accepted // args.leaves for leaf in leaf_table(args.leaves)[0].to_pylist()}
            plan, plan_s = timed(bulk.rebalance_plan, catalog, RUNS, uniform, uniform, args.seed)
            dropped, downsample_s = timed(bulk.downsample, catalog, RUNS, uniform, args.seed)
            catalog.con.execute("CHECKPOINT")
            # the text of bulk rows lives in Parquet segments: what reading it all back costs
            text_rows, text_s = timed(lambda: catalog.scalar(
                "SELECT count(*) FROM samples_text WHERE status = 'accepted' AND fields IS NOT NULL"))
            segment_bytes = sum(f.stat().st_size for f in catalog.segment_dir.glob("*.parquet")) \
                if catalog.segment_dir.exists() else 0
        size = path.stat().st_size + segment_bytes
        rate = args.rows / ingest_s
        print(f"\n{args.rows:,} samples, {args.leaves} leaves, 4 runs; rows made in {making:.1f} s "
              f"(not counted); {marked:,} exact duplicates marked; uniform target {accepted // args.leaves:,} "
              f"per leaf: deficit {plan['deficit']:,}, surplus {plan['surplus']:,}, {dropped:,} dropped\n")
        print("| measure | value | target | result |")
        print("|---|---:|---:|---|")
        print(f"| ingest (storage.catalog.bulk.ingest_samples) | {rate:,.0f} rows/s ({ingest_s:.1f} s) "
              f"| >= 500,000 rows/s | {verdict(rate >= 500_000)} |")
        print(f"| exact dedup (mark_exact_duplicates) | {dedup_s:.2f} s | < 15 s | {verdict(dedup_s < 15)} |")
        print(f"| rebalance planning (rebalance_plan) | {plan_s:.2f} s | < 3 s | {verdict(plan_s < 3)} |")
        print(f"| downsample to the uniform cap | {downsample_s:.2f} s | | |")
        print(f"| read back the text of every accepted row (`samples_text`, {text_rows:,} rows) | {text_s:.2f} s | | |")
        print(f"| catalog file + segments | {size / 1e6:,.0f} MB ({size / args.rows:.0f} B/row; "
              f"segments {segment_bytes / 1e6:,.0f} MB) | | |")
        if args.keep:
            print(f"\nkept: {path}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
