"""synth.similarity.minhash: the vectorised MinHash LSH behind synth.curation.dedup."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth.curation.dedup import shingles
from synth.similarity import minhash
from synth.similarity.minhash import MinHashIndex, estimated_jaccard, near_duplicates, shingle_hashes, signatures

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [json.loads(line)["question"]
             for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]


def reword(text: str) -> str:
    """A light rewording: one word changed and a sentence appended (Jaccard about 0.8)."""
    words = text.split()
    words[len(words) // 2] = "exactly"
    return " ".join(words) + " Show your work."


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_shingle_hashes_are_the_shingle_sets():
    texts = QUESTIONS[:20] + ["", "one", "two words", "Tom's 3 apples!!", "a a a a a"]
    hashes, counts = shingle_hashes(texts)
    groups = np.split(hashes, np.cumsum(counts)[:-1])
    assert [len(set(g.tolist())) for g in groups] == [len(shingles(t)) for t in texts]
    # the same word 3-gram gets the same hash wherever it occurs
    again, _ = shingle_hashes(["x " + texts[0] + " y"])
    assert set(groups[0].tolist()) < set(again.tolist())


def test_finds_rewordings_and_not_unrelated_texts():
    index = MinHashIndex(0.5)
    index.add_many([f"q{i}" for i in range(60)], QUESTIONS[:60])
    assert index.find_many([reword(q) for q in QUESTIONS[:60]]) == [f"q{i}" for i in range(60)]
    assert index.find_many(QUESTIONS[60:120]) == [None] * 60


def test_dedup_many_checks_the_index_and_earlier_texts_of_the_batch():
    index = MinHashIndex(0.5)
    index.add_many(["old"], [QUESTIONS[0]])
    batch = [reword(QUESTIONS[0]), QUESTIONS[1], reword(QUESTIONS[1]), QUESTIONS[2]]
    assert index.dedup_many(["a", "b", "c", "d"], batch) == ["old", None, "b", None]
    assert len(index) == 3  # the two duplicates are not indexed
    assert index.find(reword(QUESTIONS[2])) == "d"


def test_batch_and_single_text_paths_agree():
    texts = QUESTIONS[:40] + [reword(q) for q in QUESTIONS[:40:3]] + [QUESTIONS[5]]
    batched = MinHashIndex(0.6).dedup_many(list(range(len(texts))), texts)
    single, index = [], MinHashIndex(0.6)
    for i, text in enumerate(texts):
        single.append(index.find(text))
        if single[-1] is None:
            index.add(i, text)
    assert batched == single
    assert sum(hit is not None for hit in batched) == 15  # the 14 rewordings and the repeat
    assert near_duplicates(texts, 0.6) == batched


def test_buffered_adds_are_found():
    index = MinHashIndex(0.5, flush=7)
    for i, text in enumerate(QUESTIONS[:30]):
        index.add(f"q{i}", text)
    index.add("q0", "a different text under a key already there")
    assert len(index) == 30
    assert [index.find(reword(q)) for q in QUESTIONS[:30]] == [f"q{i}" for i in range(30)]


def test_threshold_one_disables():
    for index in (MinHashIndex(1.0),):
        index.add("a", QUESTIONS[0])
        index.add_many(["b"], [QUESTIONS[1]])
        assert not index.enabled and len(index) == 0
        assert index.find(QUESTIONS[0]) is None
        assert index.dedup_many(["c", "d"], [QUESTIONS[2], QUESTIONS[2]]) == [None, None]


def test_empty_texts_are_nobodys_duplicate():
    assert near_duplicates(["", "?!", "", QUESTIONS[0]], 0.5) == [None, None, None, None]


def test_estimated_jaccard_is_close_to_the_true_jaccard():
    pairs = [(q, reword(q)) for q in QUESTIONS[:5]]
    pairs += [(QUESTIONS[i], " ".join(QUESTIONS[i].split()[: len(QUESTIONS[i].split()) // 2 + 4])) for i in range(5)]
    pairs += [(QUESTIONS[i], QUESTIONS[i + 1]) for i in range(3)]
    sigs = signatures([text for pair in pairs for text in pair])
    estimates = estimated_jaccard(sigs[0::2], sigs[1::2])
    truths = np.array([jaccard(a, b) for a, b in pairs])
    assert truths.min() < 0.1 and truths.max() > 0.6
    assert np.abs(estimates - truths).max() < 0.1


def test_signatures_are_the_same_in_every_process():
    code = ("import hashlib, json, sys; from synth.similarity.minhash import signatures; "
            "texts = json.load(sys.stdin); print(hashlib.sha256(signatures(texts).tobytes()).hexdigest())")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(QUESTIONS[:50]), capture_output=True,
                             text=True, cwd=ROOT, env=env, check=True)
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(signatures(QUESTIONS[:50]).tobytes()).hexdigest()}


@pytest.mark.parametrize("threshold, bands_rows", [(0.5, (25, 5)), (0.85, (8, 16)), (0.9, (5, 25))])
def test_lsh_bands_match_datasketch_choice(threshold, bands_rows):
    assert minhash.lsh_params(threshold) == bands_rows


def test_near_dup_index_keeps_its_api():
    index = MinHashIndex(0.6)
    assert index.enabled and index.threshold == 0.6
    index.add("s1", QUESTIONS[0])
    index.add("s1", QUESTIONS[1])  # a key already there is skipped
    assert len(index) == 1
    assert index.find(reword(QUESTIONS[0])) == "s1"
    assert index.find(QUESTIONS[1]) is None


def test_signatures_do_not_depend_on_how_texts_are_batched():
    whole = signatures(QUESTIONS[:40])
    # blocks smaller than a long text still work
    assert np.array_equal(signatures(QUESTIONS[:40], texts_per_batch=7, block=50), whole)
    assert np.array_equal(np.vstack([signatures([q]) for q in QUESTIONS[:40]]), whole)
