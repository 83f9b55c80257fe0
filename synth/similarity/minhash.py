"""Vectorised MinHash + LSH over word 3-shingles, for near-duplicate detection at scale.

Why not datasketch: it hashes each shingle with SHA-1 from Python and builds one MinHash
object per text, about 200 us a text. Here a whole batch is hashed at once in numpy:

- shingles are the word 3-grams of `normalize_for_hash(text)` (the set `synth.curation.dedup.shingles`
  returns), hashed without Python's salted `hash()`: a polynomial hash of each word's bytes
  over the concatenated batch, then the three word hashes of each shingle mixed together;
- 128 permutations by multiply-add-shift universal hashing, ((a * x + b) mod 2^64) >> 32 of
  the 32-bit shingle hash, for a block of shingles at a time, reduced per text with
  `np.minimum.reduceat`;
- LSH bands x rows chosen like datasketch's `_optimal_param` (equal weights on false
  positives and negatives); candidates sharing a band bucket are verified by the estimated
  Jaccard (the fraction of equal signature slots), as datasketch's `MinHash.jaccard`.

Everything is seeded, so the same texts give the same signatures in every process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Hashable, Iterable, Sequence

import numpy as np

from synth.ids import normalize_for_hash

NUM_PERM = 128
SEED = 1
BLOCK = 1024  # shingles per permutation block: a 1 MB [128, block] matrix stays in cache
TEXTS_PER_BATCH = 8192  # texts hashed together: their bytes and shingles stay a few MB
FLUSH = 4096  # single `add`s buffered before they are hashed as one batch
_U64 = np.uint64
_EMPTY = np.iinfo(np.uint32).max


def _u64(values: Iterable[int]) -> np.ndarray:
    return np.array(list(values), dtype=_U64)


_WORD_BASE = 0x100000001B3 * 0x9E3779B97F4A7C15 % 2**64 | 1  # odd, so invertible mod 2^64
_WORD_BASE_INV = pow(_WORD_BASE, -1, 2**64)
_MIX = _u64([0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53])
_SHINGLE_MULT = _u64([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9])
_SHORT_TAG = _u64([0x27D4EB2F165667C5, 0x85EBCA77C2B2AE63])  # 1- and 2-word texts


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: spreads every input bit over the output."""
    x ^= x >> _U64(33)
    x *= _MIX[0]
    x ^= x >> _U64(33)
    x *= _MIX[1]
    x ^= x >> _U64(33)
    return x


_powers = (np.ones(1, dtype=_U64), np.ones(1, dtype=_U64))  # base^j and base^-j mod 2^64, j < len


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n powers; the table only grows (by doubling), so it is made a few times."""
    global _powers
    if n > len(_powers[0]):
        size = 1 << max(16, (n - 1).bit_length())
        up, down = np.full(size, _WORD_BASE, dtype=_U64), np.full(size, _WORD_BASE_INV, dtype=_U64)
        up[0] = down[0] = 1
        _powers = (np.cumprod(up), np.cumprod(down))  # numpy's uint64 cumprod wraps
    return _powers[0][:n], _powers[1][:n]


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of each word, index of its text) over the normalised texts of a batch."""
    data = np.frombuffer("\n".join(normalize_for_hash(t) for t in texts).encode(), dtype=np.uint8)
    if data.size == 0:
        return np.empty(0, _U64), np.empty(0, np.int64)
    newline = data == 10  # normalised text has single spaces and no other whitespace
    inside = ~(newline | (data == 32))
    edges = np.diff(np.concatenate(([0], inside.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    doc = np.cumsum(newline)[starts]
    up, down = _power_tables(data.size)
    prefix = np.zeros(data.size + 1, dtype=_U64)
    np.cumsum(data.astype(_U64) * down, out=prefix[1:])
    words = (prefix[ends] - prefix[starts]) * up[starts]  # sum b[j] base^-(j - start): position-free
    return _fmix(words), doc


def shingle_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word 3-shingles (one shingle for 1-2 word texts, none
    for empty ones), grouped by text; and how many each text has."""
    words, doc = _word_hashes(texts)
    n = len(texts)
    per_doc = np.bincount(doc, minlength=n)
    whole = np.flatnonzero(doc[2:] == doc[:-2]) if words.size > 2 else np.empty(0, np.int64)
    hashes = (words[whole] * _SHINGLE_MULT[0] + words[whole + 1] * _SHINGLE_MULT[1]
              + words[whole + 2] * _SHINGLE_MULT[2])
    owner = doc[whole]
    short = np.flatnonzero((per_doc > 0) & (per_doc < 3))
    if short.size:
        first = np.searchsorted(doc, short)
        two = per_doc[short] == 2
        extra = np.where(two, words[np.minimum(first + 1, words.size - 1)] * _SHINGLE_MULT[1], _U64(0))
        short_hashes = words[first] * _SHINGLE_MULT[0] + extra + _SHORT_TAG[two.astype(np.int64)]
        hashes, owner = np.concatenate((hashes, short_hashes)), np.concatenate((owner, short))
        order = np.argsort(owner, kind="stable")
        hashes, owner = hashes[order], owner[order]
    counts = np.bincount(owner, minlength=n)
    return _fmix(hashes) >> _U64(32), counts


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False) | _U64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False)
    return a, b


def signatures(texts: Sequence[str], num_perm: int = NUM_PERM, seed: int = SEED, *,
               texts_per_batch: int = TEXTS_PER_BATCH, block: int = BLOCK) -> np.ndarray:
    """[len(texts), num_perm] uint32 MinHash signatures; a text without words gets all slots
    at the uint32 maximum (`is_empty`). Hashed `texts_per_batch` at a time, so memory stays
    small, `block` shingles per step; neither changes the result."""
    out = np.full((len(texts), num_perm), _EMPTY, dtype=np.uint32)
    for start in range(0, len(texts), texts_per_batch):
        _fill_signatures(texts[start:start + texts_per_batch], out[start:start + texts_per_batch],
                         *_permutations(num_perm, seed), block)
    return out


def _fill_signatures(texts: Sequence[str], out: np.ndarray, a: np.ndarray, b: np.ndarray, block_size: int) -> None:
    hashes, counts = shingle_hashes(texts)
    a, b = a[:, None], b[:, None]
    ends = np.cumsum(counts)
    buffer = np.empty((len(a), min(block_size, hashes.size)), dtype=_U64)  # [perm, shingle]: reduceat along rows
    begin = 0
    while begin < len(texts):
        lo = int(ends[begin] - counts[begin])
        stop = max(int(np.searchsorted(ends, lo + block_size, side="right")), begin + 1)
        docs = begin + np.flatnonzero(counts[begin:stop])
        if docs.size:
            x = hashes[lo:int(ends[stop - 1])]
            block = buffer[:, :x.size] if x.size <= block_size else np.empty((len(a), x.size), dtype=_U64)
            np.multiply(a, x, out=block)  # wraps mod 2^64
            block += b
            mins = np.minimum.reduceat(block, ends[docs] - counts[docs] - lo, axis=1)
            out[docs] = (mins >> _U64(32)).T
        begin = stop


def is_empty(signature: np.ndarray) -> np.ndarray:
    return (signature == _EMPTY).all(axis=-1)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.count_nonzero(a == b, axis=-1) / a.shape[-1]


@lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int = NUM_PERM, recall_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + false negative probability mass,
    the integrals datasketch's `_optimal_param` takes with scipy, here on a fine grid.
    recall_weight 0.5 is datasketch's default (equal weights); more buys recall with bands."""
    below, above = np.linspace(0.0, threshold, 513), np.linspace(threshold, 1.0, 513)
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1)[:, None]
        fp = np.trapezoid(1 - (1 - below ** rows) ** bands, below, axis=1)
        fn = np.trapezoid((1 - above ** rows) ** bands, above, axis=1)
        error = (1 - recall_weight) * fp + recall_weight * fn
        i = int(np.argmin(error))
        if error[i] < best_error:
            best, best_error = (bands, int(rows[i, 0])), float(error[i])
    return best


class MinHashIndex:
    """Near-duplicate index: `find` returns the key of the indexed text with the highest
    estimated Jaccard >= threshold (the earliest on ties), or None.

    Batch methods hash a whole batch at once; single `add`s are buffered and hashed
    together before the next query, so loading an index one text at a time stays fast.
    A threshold of 1.0 disables it (nothing is indexed, nothing found).
    """

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, seed: int = SEED, *, flush: int = FLUSH) -> None:
        self.threshold, self.flush = threshold, flush  # flush: single `add`s buffered before one batch
        self.enabled = threshold < 1.0
        self.num_perm, self.seed = num_perm, seed
        self.bands, self.rows = lsh_params(threshold, num_perm) if self.enabled else (0, 0)
        rng = np.random.default_rng([seed, 7])
        self._band_mult = rng.integers(0, 2**64, size=(self.bands, self.rows), dtype=_U64) | _U64(1)
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)  # by row; rows of rejected texts stay unused
        self._keys: list[Hashable | None] = []  # by row
        self._ids: dict[Hashable, int] = {}  # key -> row
        self._first: dict[int, int] = {}  # band key -> first row in that bucket
        self._more: dict[int, list[int]] = {}  # band key -> later rows (only near-duplicates share one)
        self._pending: dict[Hashable, str] = {}
        self._last: tuple[str, np.ndarray] | None = None  # the last text `find` hashed, for `add`

    def __len__(self) -> int:
        return len(self._ids) + len(self._pending)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._ids or key in self._pending

    # -- single texts --------------------------------------------------------------------

    def add(self, key: Hashable, text: str) -> None:
        if not self.enabled or key in self:
            return
        if self._last is not None and self._last[0] == text and not self._pending:
            self._add_signatures([key], self._last[1])  # find(text) then add: hashed once
            return
        self._pending[key] = text
        if len(self._pending) >= self.flush:
            self._flush()

    def find(self, text: str) -> Hashable | None:
        if not self.enabled:
            return None
        self._flush()
        sigs = signatures([text], self.num_perm, self.seed)
        self._last = (text, sigs)
        return None if is_empty(sigs)[0] else self._best(sigs, 0, self._band_keys(sigs)[0])

    # -- batches -------------------------------------------------------------------------

    def add_many(self, keys: Sequence[Hashable], texts: Sequence[str]) -> None:
        """Index every text (keys already present are skipped), without checking them."""
        if not self.enabled:
            return
        self._flush()
        self._add_signatures(keys, signatures(texts, self.num_perm, self.seed))

    def find_many(self, texts: Sequence[str]) -> list[Hashable | None]:
        """The near-duplicate of each text among the indexed ones (not each other)."""
        if not self.enabled:
            return [None] * len(texts)
        self._flush()
        sigs = signatures(texts, self.num_perm, self.seed)
        empty = is_empty(sigs)
        return [None if empty[pos] else self._best(sigs, pos, band_keys)
                for pos, band_keys in enumerate(self._band_keys(sigs))]

    def dedup_many(self, keys: Sequence[Hashable], texts: Sequence[str]) -> list[Hashable | None]:
        """What the factory does with a chunk: each text is checked against the index and the
        earlier texts of the batch that were kept; kept texts (None) are then indexed.
        Returns the key each text duplicates, or None. Same result as find+add in a loop."""
        if not self.enabled:
            return [None] * len(texts)
        self._flush()
        sigs = signatures(texts, self.num_perm, self.seed)
        base, empty = self._stage(sigs), is_empty(sigs)
        found: list[Hashable | None] = []
        for pos, (key, band_keys) in enumerate(zip(keys, self._band_keys(sigs))):
            hit = None if empty[pos] else self._best(self._sigs, base + pos, band_keys)
            found.append(hit)
            if hit is None and key not in self._ids:
                self._insert(key, base + pos, band_keys, empty[pos])
        return found

    # -- internals -----------------------------------------------------------------------

    def _flush(self) -> None:
        if self._pending:
            keys, texts = list(self._pending), list(self._pending.values())
            self._pending = {}
            self.add_many(keys, texts)

    def _add_signatures(self, keys: Sequence[Hashable], sigs: np.ndarray) -> None:
        base, empty = self._stage(sigs), is_empty(sigs)
        for pos, (key, band_keys) in enumerate(zip(keys, self._band_keys(sigs))):
            if key not in self._ids:
                self._insert(key, base + pos, band_keys, empty[pos])

    def _band_keys(self, sigs: np.ndarray) -> list[list[int]]:
        bands = sigs[:, :self.bands * self.rows].reshape(len(sigs), self.bands, self.rows)
        return (bands.astype(_U64) * self._band_mult).sum(axis=2, dtype=_U64).tolist()

    def _stage(self, sigs: np.ndarray) -> int:
        """Copy a batch's signatures in as rows not yet indexed; returns the first row."""
        base, need = len(self._keys), len(self._keys) + len(sigs)
        if need > len(self._sigs):
            grown = np.empty((max(need, 2 * len(self._sigs), 1024), self.num_perm), dtype=np.uint32)
            grown[:base] = self._sigs[:base]
            self._sigs = grown
        self._sigs[base:need] = sigs
        self._keys.extend([None] * len(sigs))
        return base

    def _best(self, sigs: np.ndarray, row: int, band_keys: list[int]) -> Hashable | None:
        first, more = self._first, self._more
        candidates: set[int] = set()
        for band_key in band_keys:
            hit = first.get(band_key)
            if hit is not None:
                candidates.add(hit)
                if band_key in more:
                    candidates.update(more[band_key])
        if not candidates:
            return None
        rows = np.fromiter(sorted(candidates), dtype=np.int64, count=len(candidates))
        equal = np.count_nonzero(self._sigs[rows] == sigs[row], axis=1)
        i = int(np.argmax(equal))  # the first maximum: the earliest indexed text
        return self._keys[rows[i]] if equal[i] / self.num_perm >= self.threshold else None

    def _insert(self, key: Hashable, row: int, band_keys: list[int], empty: bool) -> None:
        self._keys[row] = key
        self._ids[key] = row
        if empty:  # no words: never anyone's near-duplicate
            return
        first, more = self._first, self._more
        for band_key in band_keys:
            if first.setdefault(band_key, row) != row:
                more.setdefault(band_key, []).append(row)


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int | None]:
    """For each text, the position of an earlier kept text it near-duplicates, or None."""
    return MinHashIndex(threshold).dedup_many(range(len(texts)), texts)
