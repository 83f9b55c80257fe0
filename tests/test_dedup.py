"""synth.curation.dedup: which earlier sample a duplicate points at, batched per chunk, deterministic."""

from __future__ import annotations

from synth.curation.dedup import Candidate, Deduper
from synth.ids import content_hash

Q = "Tom has {} apples and buys 3 more apples at the big market today. How many apples does he have now?"


def cand(key: str, text: str) -> Candidate:
    return Candidate(key, content_hash({"question": text}), text)


def one_at_a_time(index_rows, candidates, threshold=0.7):
    """The reference: check and insert candidates one by one."""
    d = Deduper(threshold)
    d.load(index_rows)
    return [d.check([c])[0] for c in candidates]


def test_exact_duplicates_point_at_the_first_indexed_sample():
    d = Deduper(0.7)
    d.load([("old-1", content_hash({"question": Q.format(5)}), Q.format(5)),
            ("old-2", content_hash({"question": Q.format(5)}), Q.format(5))])
    verdicts = d.check([cand("new-1", Q.format(5) + "  "), cand("new-2", "Something else entirely about trains?")])
    assert verdicts[0].duplicate_of == "old-1" and verdicts[0].reason == "exact_duplicate"
    assert verdicts[1].duplicate_of is None


def test_near_duplicates_point_at_the_best_match_and_the_earliest_on_ties():
    d = Deduper(0.6)  # a and b normalise to the same text: a tie, the earliest indexed wins
    d.load([("a", content_hash({"q": 1}), Q.format(5)), ("b", content_hash({"q": 2}), Q.format(5).replace("?", "!"))])
    verdict = d.check([cand("c", Q.format(5) + " Explain.")])[0]
    assert verdict.duplicate_of == "a" and verdict.reason.startswith("near_duplicate")


def test_within_a_chunk_a_copy_follows_the_first_of_its_kind():
    index = [("x", content_hash({"question": Q.format(9)}), Q.format(9))]
    chunk = [cand("k1", "A train leaves at noon and travels 60 miles an hour for three hours. How far does it go?"),
             cand("k2", "A train leaves at noon and travels 60 miles an hour for three hours. How far does it go?"),
             cand("k3", Q.format(9).replace("today", "now")),  # near x
             cand("k4", Q.format(9).replace("today", "now"))]  # identical to k3, which is a duplicate itself
    batched = Deduper(0.7)
    batched.load(index)
    got = batched.check(chunk)
    assert [(v.duplicate_of, (v.reason or "").split(":")[0]) for v in got] == [
        (None, ""), ("k1", "exact_duplicate"), ("x", "near_duplicate"), ("x", "near_duplicate")]
    assert got == one_at_a_time(index, chunk)  # the batched rule gives the one-at-a-time answer here


def test_the_same_input_gives_the_same_pointers_every_time():
    chunk = [cand(f"k{i}", Q.format(i % 4)) for i in range(12)]
    runs = []
    for _ in range(3):
        d = Deduper(0.7)
        d.load([("seed", content_hash({"question": Q.format(0)}), Q.format(0))])
        runs.append([(v.duplicate_of, v.reason) for v in d.check(chunk)])
    assert runs[0] == runs[1] == runs[2]
    assert sum(v is None for v, _ in runs[0]) >= 1


def test_threshold_one_turns_near_dedup_off_but_not_exact():
    d = Deduper(1.0)
    got = d.check([cand("a", Q.format(5)), cand("b", Q.format(5)), cand("c", Q.format(5).replace("today", "now"))])
    assert [v.duplicate_of for v in got] == [None, "a", None]
