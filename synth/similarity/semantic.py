"""Semantic near-duplicates: samples that say the same thing in other words.

MinHash (synth/similarity/minhash.py) finds texts that share most of their words; a paraphrase
shares few. With `quality.semantic_dup_threshold` set, the dedup step (synth/curation/dedup.py)
also embeds each kept candidate (synth/similarity/embedder.py, e5-small) and calls it a duplicate of the
indexed sample it is closest to when their cosine is at least the threshold. Batched:
one matrix product per chunk against the whole index (n x 384 float32: 1.5 MB per 1,000
samples), and candidates of one chunk are checked against the earlier kept ones of it.

The default threshold, 0.95, is calibrated on GSM8K (benchmarks/embeddings.py,
BENCHMARKS.md): hand-written paraphrases of GSM8K questions against the nearest
neighbours of 2,000 distinct GSM8K train questions. Embedding costs time (about 18 rows a
second on these 2 cores: 10,000 rows, 9 minutes), so a run keeps its vectors in the
catalog (storage/tables/embeddings.py) and the next run of the dataset embeds only its new texts.

Which earlier sample a duplicate points at: the one with the highest cosine, the earliest
indexed on ties.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.95


class SemanticIndex:
    def __init__(self, threshold: float, embed: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.threshold = threshold
        self.embed = embed  # texts -> unit rows (storage/tables/embeddings.py may cache it)
        self._keys: list[Hashable] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def _append(self, keys: Sequence[Hashable], vectors: np.ndarray) -> None:
        self._vectors = vectors if not self._keys else np.vstack([self._vectors, vectors])
        self._keys.extend(keys)

    def add_many(self, keys: Sequence[Hashable], texts: Sequence[str]) -> None:
        if keys:
            self._append(list(keys), self.embed(list(texts)).astype(np.float32))

    def dedup_many(self, keys: Sequence[Hashable], texts: Sequence[str]) -> list[tuple[Hashable, float] | None]:
        """For each text in order: (the indexed key it repeats, cosine), or None and it is indexed."""
        if not keys:
            return []
        vectors = self.embed(list(texts)).astype(np.float32)
        out: list[tuple[Hashable, float] | None] = []
        earlier = (self._vectors @ vectors.T) if self._keys else np.zeros((0, len(keys)), dtype=np.float32)
        kept: list[int] = []
        for i, key in enumerate(keys):
            best_key, best = None, -1.0
            if len(earlier):
                j = int(np.argmax(earlier[:, i]))
                best_key, best = self._keys[j], float(earlier[j, i])
            for k in kept:  # the chunk's own kept candidates, after the index
                cos = float(vectors[k] @ vectors[i])
                if cos > best:
                    best_key, best = keys[k], cos
            if best >= self.threshold:
                out.append((best_key, round(best, 4)))
            else:
                out.append(None)
                kept.append(i)
        self._append([keys[i] for i in kept], vectors[kept])
        return out
