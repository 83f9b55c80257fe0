"""Near-duplicate detection with MinHash LSH over word shingles (synth.minhash).

Exact duplicates are caught earlier by a hash of the normalized text; this index
catches rewordings that share most of their 3-word shingles. synth.minhash hashes a
batch in numpy, about 10x the docs/s of datasketch's MinHashLSH at the same recall
(same 128 permutations, same bands x rows): see BENCHMARKS.md (`benchmarks/dedup.py`).
"""

from __future__ import annotations

from typing import Sequence

from synth.minhash import NUM_PERM, MinHashIndex
from synth.quality import normalize_for_hash

__all__ = ["NUM_PERM", "NearDupIndex", "shingles"]


def shingles(text: str, n: int = 3) -> set[bytes]:
    """The word n-grams of the normalized text, the set synth.minhash hashes."""
    words = normalize_for_hash(text).split()
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDupIndex:
    """Insert accepted texts; `find(text)` returns the id of a near-duplicate, if any.

    A threshold of 1.0 turns near-duplicate detection off (exact dedup still runs).
    `dedup_many` does a whole chunk at once: each text against the index and the
    earlier kept texts of the chunk, the kept ones added.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._index = MinHashIndex(threshold, NUM_PERM)
        self.enabled = self._index.enabled

    def __len__(self) -> int:
        return len(self._index)

    def find(self, text: str) -> str | None:
        return self._index.find(text)

    def add(self, key: str, text: str) -> None:
        self._index.add(key, text)

    def find_many(self, texts: Sequence[str]) -> list[str | None]:
        return self._index.find_many(texts)

    def add_many(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        self._index.add_many(keys, texts)

    def dedup_many(self, keys: Sequence[str], texts: Sequence[str]) -> list[str | None]:
        return self._index.dedup_many(keys, texts)
