"""How diverse and how clean a set of samples is: pure figures over lists of texts.

`evaluate(rows, ...)` returns plain data that `synth eval`, the run report and the dataset
card all show. Figures, and why each:
- rows; distinct-1/2/3 (distinct word n-grams over all n-grams);
- gzip ratio (compressed / raw bytes of all texts: lower = more redundant) and the share
  of long word n-grams (8 words) that occur in more than one row (templated or copied text);
- exact duplicates (normalised text) and near duplicates (MinHash, Jaccard >= 0.85), as
  the share of rows that repeat an earlier one;
- embedding diversity: the mean cosine of each row to its nearest neighbour (near-copies
  push it towards 1), and the Vendi score of the centred embeddings (the effective number
  of distinct samples: exp of the entropy of the similarity matrix's eigenvalues, taken
  in the dual form from the d x d covariance, O(n d^2)). Mean pairwise cosine alone is not
  reported: it does not move when a set collapses into near-copies;
- leaves: count and normalised entropy of the rows over the tree's leaves;
- length stats (words) per field; format-constraint pass rate (synth/task/formats.py).

Embeddings are optional: without a model the embedding figures are left out and
`left_out` says why. Verifier pass rates need the catalog (storage/reports/evaluation.py).

>>> round(distinct_n(["a b a b"], 1), 3)
0.5
>>> round(vendi_score(np.eye(4, dtype=np.float32)), 3)
4.0
"""

from __future__ import annotations

import gzip
import math
import re
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from synth.ids import normalize_for_hash
from synth.task.formats import OutputField, check_format

LONG_NGRAM = 8
NEAR_DUP_THRESHOLD = 0.85
NN_MAX_ROWS = 20_000  # nearest neighbours are O(n^2): beyond this, a fixed sample of rows
_WORDS = re.compile(r"\w+")


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Share of distinct word n-grams among all n-grams (higher = more lexical variety)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return round(len(set(grams)) / len(grams), 4) if grams else None


def gzip_ratio(texts: Sequence[str]) -> float | None:
    raw = "\n".join(texts).encode("utf-8")
    return round(len(gzip.compress(raw, 6, mtime=0)) / len(raw), 4) if raw else None


def repeated_long_ngrams(texts: Sequence[str], n: int = LONG_NGRAM) -> float | None:
    """Share of the word n-grams (counted once per row) that also occur in another row."""
    per_row = []
    for text in texts:
        words = _WORDS.findall(text.lower())
        per_row.append({tuple(words[i:i + n]) for i in range(len(words) - n + 1)})
    rows_of = Counter(gram for grams in per_row for gram in grams)
    total = sum(rows_of.values())
    return round(sum(c for c in rows_of.values() if c > 1) / total, 4) if total else None


def duplicate_rates(texts: Sequence[str], threshold: float = NEAR_DUP_THRESHOLD) -> dict[str, float | None]:
    if not texts:
        return {"exact_duplicate_rate": None, "near_duplicate_rate": None}
    from synth.similarity.minhash import near_duplicates

    normalised = [normalize_for_hash(t) for t in texts]
    exact = len(normalised) - len(set(normalised))
    near = sum(1 for hit in near_duplicates(list(texts), threshold) if hit is not None)
    return {"exact_duplicate_rate": round(exact / len(texts), 4), "near_duplicate_rate": round(near / len(texts), 4)}


def nearest_neighbour_cosine(vectors: np.ndarray, block: int = 2048) -> float | None:
    """Mean over rows of the cosine to the closest other row (rows of unit length)."""
    n = len(vectors)
    if n < 2:
        return None
    best = np.full(n, -1.0, dtype=np.float32)
    for start in range(0, n, block):
        sims = vectors[start:start + block] @ vectors.T
        idx = np.arange(start, min(start + block, n))
        sims[idx - start, idx] = -np.inf  # not itself
        best[start:start + len(idx)] = sims.max(axis=1)
    return round(float(best.mean()), 4)


def vendi_score(vectors: np.ndarray) -> float | None:
    """exp(entropy) of the eigenvalues of K / n, K = X X^T for unit rows X; computed from
    X^T X / n (d x d, the same non-zero eigenvalues), so 100 k rows cost O(n d^2)."""
    n = len(vectors)
    if n == 0:
        return None
    x = vectors.astype(np.float64)
    cov = x.T @ x / n
    eig = np.clip(np.linalg.eigvalsh(cov), 0, None)
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()
    return round(float(math.exp(-(eig * np.log(eig)).sum())), 3)


def centred(vectors: np.ndarray) -> np.ndarray:
    """Unit rows, minus their mean, made unit again: the shared direction every e5 vector
    has (cosines of unrelated sentences are 0.7-0.8) would otherwise hide the spread."""
    x = vectors - vectors.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def leaf_figures(leaves: Sequence[str | None]) -> dict[str, Any]:
    counts = Counter(leaf for leaf in leaves if leaf)
    if not counts:
        return {"leaf_count": None, "leaf_entropy": None}
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    norm = entropy / math.log(len(counts)) if len(counts) > 1 else 1.0
    return {"leaf_count": len(counts), "leaf_entropy": round(norm, 4)}


def length_stats(texts: Sequence[str]) -> dict[str, float] | None:
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    if not len(words):
        return None
    return {"mean": round(float(words.mean()), 1), "p10": float(np.percentile(words, 10)),
            "median": float(np.median(words)), "p90": float(np.percentile(words, 90)),
            "min": int(words.min()), "max": int(words.max())}


def format_pass_rate(rows: Sequence[Mapping[str, Any]], specs: Mapping[str, OutputField]) -> dict[str, Any] | None:
    constrained = {name: spec for name, spec in specs.items() if spec.constrained}
    if not constrained or not rows:
        return None
    passing, misses = 0, Counter()
    for row in rows:
        bad = [check_format(name, row.get(name, ""), spec) for name, spec in constrained.items()]
        bad = [b for b in bad if b is not None]
        passing += not bad
        misses.update(b.reason for b in bad)
    return {"rate": round(passing / len(rows), 4), "fields": sorted(constrained), "misses": dict(misses)}


def agreement_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How many of each row's sampled solutions its verifier accepted (the `agreement` column:
    for math self-consistency, the majority's votes / n_solutions): mean and distribution."""
    values = [float(r["agreement"]) for r in rows if isinstance(r.get("agreement"), (int, float))]
    if not values:
        return None
    spread = Counter(f"{v:.2f}" for v in values)
    return {"rate": round(sum(values) / len(values), 4), "rows": len(values),
            "distribution": dict(sorted(spread.items(), reverse=True))}


def evaluate(rows: Sequence[Mapping[str, Any]], text_fields: Sequence[str], *,
             specs: Mapping[str, OutputField] | None = None, leaf_field: str = "leaf_id",
             embed: Callable[[Sequence[str]], np.ndarray] | None = None, embed_sample: int = 1000,
             embed_missing: str | None = None) -> dict[str, Any]:
    """Every figure for `rows` (dicts); the texts are `text_fields` joined by newlines.
    `embed` maps texts to unit vectors (synth.similarity.embedder); without it, `embed_missing` says why."""
    texts = ["\n".join(str(row.get(f) or "") for f in text_fields) for row in rows]
    out: dict[str, Any] = {"rows": len(rows), "text_fields": list(text_fields)}
    out.update({f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)})
    out["gzip_ratio"] = gzip_ratio(texts)
    out["repeated_8gram_share"] = repeated_long_ngrams(texts)
    out.update(duplicate_rates(texts))
    out["lengths"] = {f: length_stats([str(row.get(f) or "") for row in rows]) for f in text_fields}
    leaves = [row.get(leaf_field) for row in rows]
    out.update(leaf_figures(leaves) if any(leaves) else {"leaf_count": None, "leaf_entropy": None})
    out["format_pass"] = format_pass_rate(rows, specs or {})
    out["agreement"] = agreement_figures(rows)
    left_out: dict[str, str] = {}
    if not any(leaves):
        left_out["leaves"] = f"no {leaf_field} values (made without a tree, or exported without lineage)"
    if embed is None:
        reason = embed_missing or "no embedding model given"
        out.update({"nn_cosine": None, "vendi": None, "embedded_rows": 0})
        left_out["nn_cosine"] = left_out["vendi"] = reason
    elif texts:
        picked = texts if len(texts) <= embed_sample else _sample(texts, embed_sample)
        vectors = embed(picked)
        out["embedded_rows"] = len(picked)
        out["nn_cosine"] = nearest_neighbour_cosine(vectors if len(vectors) <= NN_MAX_ROWS
                                                    else vectors[:NN_MAX_ROWS])
        out["vendi"] = vendi_score(centred(vectors))
    out["left_out"] = left_out
    return out


def _sample(texts: Sequence[str], k: int) -> list[str]:
    """k texts picked by a fixed hash of their position: the same rows every time."""
    order = sorted(range(len(texts)), key=lambda i: (i * 2654435761) % 4294967296)
    return [texts[i] for i in sorted(order[:k])]


# Names and formats of the figures, in the order tables show them.
FIGURES: tuple[tuple[str, str], ...] = (
    ("rows", "rows"), ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("distinct_3", "distinct-3"),
    ("gzip_ratio", "gzip ratio (lower = more redundant)"), ("repeated_8gram_share", "repeated 8-gram share"),
    ("exact_duplicate_rate", "exact duplicate rate"), ("near_duplicate_rate", "near-duplicate rate (MinHash 0.85)"),
    ("nn_cosine", "mean nearest-neighbour cosine (lower = more diverse)"),
    ("vendi", "Vendi score (centred embeddings)"), ("leaf_count", "leaves"),
    ("leaf_entropy", "leaf normalized entropy"), ("format_pass", "format-constraint pass rate"),
    ("verifier_pass", "verifier pass rate"),
    ("agreement", "solutions agreeing with the label (mean; rows per share)"),
    ("g_vendi", "G-Vendi (student gradients, `--proxy`)"),
)
OPTIONAL_FIGURES = {"g_vendi"}  # shown only where some set has it


def figure_text(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "agreement" and isinstance(value, dict):
        return f"{value['rate']:.2f} (" + ", ".join(f"{k}: {n}" for k, n in value["distribution"].items()) + ")"
    if key == "format_pass" or key == "verifier_pass":
        return f"{value['rate']:.1%}" if isinstance(value, dict) and value.get("rate") is not None else "-"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def figure_value(key: str, value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("rate")
    return float(value) if isinstance(value, (int, float)) else None
