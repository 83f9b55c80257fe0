"""Near-duplicate detection with MinHash LSH over word shingles (datasketch).

Exact duplicates are caught earlier by a hash of the normalized text; this index
catches rewordings that share most of their 3-word shingles. Chosen by measurement
over a DuckDB/numpy implementation: see BENCHMARKS.md (`benchmarks/dedup.py`).
"""

from __future__ import annotations

from datasketch import MinHash, MinHashLSH

from synth.quality import normalize_for_hash

NUM_PERM = 128  # estimate error ~0.04 at Jaccard 0.7; 64 misjudged borderline pairs in tests


def shingles(text: str, n: int = 3) -> set[bytes]:
    words = normalize_for_hash(text).split()
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def minhash(text: str) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch(list(shingles(text)))
    return m


class NearDupIndex:
    """Insert accepted texts; `find(text)` returns the id of a near-duplicate, if any.

    A threshold of 1.0 turns near-duplicate detection off (exact dedup still runs).
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.enabled = threshold < 1.0
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM) if self.enabled else None
        self._hashes: dict[str, MinHash] = {}

    def __len__(self) -> int:
        return len(self._hashes)

    def find(self, text: str) -> str | None:
        if not self.enabled:
            return None
        probe = minhash(text)
        best, best_score = None, 0.0
        for key in self._lsh.query(probe):
            score = probe.jaccard(self._hashes[key])
            if score >= self.threshold and score > best_score:
                best, best_score = key, score
        return best

    def add(self, key: str, text: str) -> None:
        if not self.enabled or key in self._hashes:
            return
        m = minhash(text)
        self._hashes[key] = m
        self._lsh.insert(key, m)
