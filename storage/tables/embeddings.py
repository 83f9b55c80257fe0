"""Embeddings kept in the catalog, so a growing dataset is embedded once.

Dedup by meaning (`quality.semantic_dup_threshold`) compares every new sample with every
member of the dataset, and embedding is slow on a CPU (about 18 texts a second here): without
a cache each run re-embedded the whole dataset before its first chunk (9 minutes at 10,000
rows, 90 at 100,000), every night of a growing dataset. `CachedEmbedder` wraps the model's
`encode`: a text whose vector the catalog holds (by the text's sha256 and the model's
name and weight hash) is read back, the rest is embedded and written, so a run embeds only
what no earlier run has.

A cache row is derived data: losing one (a crash between the chunk and its vectors) costs
one embedding later, never a wrong verdict, because a vector depends on nothing but the
text and the pinned model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from storage.catalog import faults
from storage.catalog.catalog import Catalog, CatalogError
from synth.ids import text_hash


class CachedEmbedder:
    def __init__(self, catalog: Catalog, encode: Callable[[Sequence[str]], np.ndarray], model: str) -> None:
        self.catalog, self._encode, self.model = catalog, encode, model
        self.embedded = 0  # texts this process embedded (cache misses)
        self.reused = 0  # texts read back from the catalog

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def note(self) -> str:
        return (f"embeddings: {self.reused} read back from the catalog, {self.embedded} computed "
                f"({self.model})")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        hashes = [text_hash(t, 32) for t in texts]  # 128 bits: a collision would reuse a wrong vector
        known = self._lookup(sorted(set(hashes)))
        missing = {h: t for h, t in zip(hashes, texts) if h not in known}
        if missing:
            fresh = np.asarray(self._encode(list(missing.values())), dtype=np.float32)
            new = dict(zip(missing, fresh))
            self._store(new)
            known.update(new)
            self.embedded += len(missing)
        self.reused += sum(h not in missing for h in hashes)
        return np.stack([known[h] for h in hashes])

    def _lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        with self.catalog._lock, faults.raising(CatalogError, self.catalog.path, "the catalog"):
            table = self.catalog.con.sql(
                "SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN (SELECT unnest(?))",
                params=[self.model, hashes]).to_arrow_table()
        if not table.num_rows:
            return {}
        vectors = table.column("vector").combine_chunks()
        width = len(vectors[0])
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
        return dict(zip(table.column("text_hash").to_pylist(), matrix))

    def _store(self, vectors: dict[str, np.ndarray]) -> None:
        matrix = np.stack(list(vectors.values())).astype(np.float32)
        rows = pa.table({
            "text_hash": pa.array(list(vectors), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), matrix.shape[1]),
        })
        with self.catalog.transaction() as con:
            con.register("new_embeddings", rows)
            try:
                con.execute("""INSERT INTO embeddings (model, text_hash, vector, created_at)
                               SELECT ?, n.text_hash, n.vector::FLOAT[], now()::TIMESTAMP FROM new_embeddings n
                               ANTI JOIN embeddings e ON e.model = ? AND e.text_hash = n.text_hash""",
                            [self.model, self.model])
            finally:
                con.unregister("new_embeddings")
