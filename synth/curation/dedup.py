"""Deduplication of a chunk's candidates against everything the dataset already holds.

Two checks, in this order:
- exact: the content hash of the normalised fields (synth.ids.content_hash);
- near: MinHash LSH over word 3-grams of one field (the strategy's `dedup_field`:
  the question, or the answer for answer augmentation, whose question is the seed's),
  with synth.similarity.minhash's batched index (about 10x datasketch's docs/s at equal recall,
  BENCHMARKS.md).

Which earlier sample a duplicate points at (deterministic; tests/test_dedup.py):
- the index holds, in this order, the accepted samples the catalog had when it was
  loaded (ordered by created_at, then sample_id), then each chunk's kept candidates in
  the order the chunk lists them (slot, then attempt);
- exact: the first indexed sample with the same content hash;
- near: the indexed sample with the highest estimated Jaccard >= threshold, the
  earliest indexed on ties;
- within a chunk, a candidate identical to an earlier candidate of the same chunk
  follows that one: an exact duplicate of it when it was kept, else a duplicate of
  what it duplicated (the same answer a one-at-a-time check gives).
A threshold of 1.0 turns near-duplicate detection off; exact dedup still runs.

With a `SemanticIndex` (synth/similarity/semantic.py, `quality.semantic_dup_threshold`), a candidate
that passes both checks is also compared by embedding with the indexed samples: a cosine
at or above the threshold makes it a `semantic_duplicate` of the closest one. (It stays in
the MinHash index: a later word-level copy of it is a near duplicate of it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from synth.ids import normalize_for_hash
from synth.similarity.minhash import NUM_PERM, MinHashIndex
from synth.similarity.semantic import SemanticIndex

__all__ = ["Candidate", "Deduper", "DedupVerdict", "shingles"]


def shingles(text: str, n: int = 3) -> set[bytes]:
    """The word n-grams of the normalized text, the set synth.similarity.minhash hashes."""
    words = normalize_for_hash(text).split()
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Candidate:
    key: str  # the sample id
    content_hash: str
    text: str  # the field checked for near-duplicates


@dataclass(frozen=True)
class DedupVerdict:
    duplicate_of: str | None  # None: kept (and now indexed)
    reason: str | None = None  # exact_duplicate / near_duplicate: Jaccard >= t


class Deduper:
    def __init__(self, near_threshold: float, semantic: SemanticIndex | None = None) -> None:
        self.threshold = near_threshold
        self._hashes: dict[str, str] = {}
        self._near = MinHashIndex(near_threshold, NUM_PERM)
        self.semantic = semantic

    def __len__(self) -> int:
        return len(self._hashes)

    def load(self, rows: Iterable[tuple[str, str | None, str]]) -> None:
        """Index accepted samples: (sample id, content hash, near-dup text), oldest first."""
        keys, texts = [], []
        for key, digest, text in rows:
            if digest:
                self._hashes.setdefault(digest, key)
            keys.append(key)
            texts.append(text)
        self._near.add_many(keys, texts)
        if self.semantic is not None:
            self.semantic.add_many(keys, texts)

    def check(self, candidates: Sequence[Candidate]) -> list[DedupVerdict]:
        """One verdict per candidate, in order; kept candidates are indexed."""
        verdicts: list[DedupVerdict | None] = [None] * len(candidates)
        first_of_hash: dict[str, int] = {}  # content hash -> the chunk's first candidate with it
        fresh: list[int] = []  # candidates that go to the near-duplicate check
        for i, cand in enumerate(candidates):
            if cand.content_hash in self._hashes:
                verdicts[i] = DedupVerdict(self._hashes[cand.content_hash], "exact_duplicate")
            elif cand.content_hash in first_of_hash:
                continue  # settled below, once the first of its kind is
            else:
                first_of_hash[cand.content_hash] = i
                fresh.append(i)
        near = self._near.dedup_many([candidates[i].key for i in fresh], [candidates[i].text for i in fresh])
        near_reason = f"near_duplicate: Jaccard >= {self.threshold}"
        if self.semantic is not None:  # the survivors of MinHash, by meaning
            survivors = [i for i, hit in zip(fresh, near) if hit is None]
            by_meaning = dict(zip(survivors, self.semantic.dedup_many([candidates[i].key for i in survivors],
                                                                       [candidates[i].text for i in survivors])))
            for i, (key, cosine) in ((i, hit) for i, hit in by_meaning.items() if hit is not None):
                verdicts[i] = DedupVerdict(str(key), f"semantic_duplicate: cosine {cosine} >= "
                                                     f"{self.semantic.threshold}")
        for i, hit in zip(fresh, near):
            if verdicts[i] is not None:
                continue  # a semantic duplicate
            if hit is None:
                verdicts[i] = DedupVerdict(None)
                self._hashes[candidates[i].content_hash] = candidates[i].key
            else:
                verdicts[i] = DedupVerdict(str(hit), near_reason)
        for i, cand in enumerate(candidates):
            if verdicts[i] is None:
                first = verdicts[first_of_hash[cand.content_hash]]
                verdicts[i] = (DedupVerdict(candidates[first_of_hash[cand.content_hash]].key, "exact_duplicate")
                               if first.duplicate_of is None else first)
        return verdicts  # type: ignore[return-value]  # every slot is filled above
