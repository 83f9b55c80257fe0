"""The run engine on a scripted backend: generation, rejects, dedup, budget, resume."""

from __future__ import annotations

from collections import Counter

from synth.backends.scripted import ScriptedBackend, asked, reply
from tests.conftest import write_recipe
from tests.harness import start_run


def test_fills_the_target_with_lineage(recipe_path):
    job = start_run(recipe_path)
    job.generate()
    assert job.finish()["status"] == "finished"
    stats = job.catalog.stats(job.run_id)
    assert stats["samples"]["accepted"] == 6
    assert stats["requests"] == 12  # question + answer stage per sample
    row = job.catalog.samples(status="accepted")[0]
    assert set(row["fields"]) == {"question", "answer"}
    (req,) = job.catalog.requests(request_id=row["request_id"])
    assert req["stage"] == "answer" and req["template"] == "generate/answer.jinja2" and req["raw_text"]


def test_malformed_outputs_become_rejects_then_retried(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 100, "chunk_size": 8, "max_rounds": 3})
    calls = {"n": 0}

    def script(request):
        calls["n"] += 1
        if calls["n"] <= 3:
            return ["", "{not json", RuntimeError("server on fire")][calls["n"] - 1]
        key = request.key
        field = "answer" if "answer" in asked(request) else "question"
        return reply(request, {field: f"text for {key} is long enough"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rejects = job.catalog.samples(("reason", "raw_text"), status="rejected", order_by="reason")
    assert [r["reason"].split(":")[0] for r in rejects] == ["backend_error", "empty_output"]
    # free text: a reply that opens with JSON debris is the gate's to refuse, raw text kept
    junk = job.catalog.samples(("reason",), status="filtered")
    assert [r["reason"] for r in junk] == ["leading_punctuation: question opens with '{not json'"]
    assert job.finish()["accepted"] == 4


def test_duplicates_are_marked_and_replaced(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 60, "chunk_size": 8, "max_rounds": 4})
    seen = {"q": 0}

    def script(request):
        if "question" in asked(request):
            seen["q"] += 1
            text = "Same question every time?" if seen["q"] <= 3 else f"Question number {seen['q']}?"
            return reply(request, {"question": text})
        return reply(request, {"answer": "It is 4. #### 4"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    dups = job.catalog.samples(("duplicate_of",), status="duplicate")
    assert len(dups) == 2 and all(d["duplicate_of"] for d in dups)
    assert job.finish()["accepted"] == 3


def test_budget_stops_the_run_and_says_so(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 10, "budget": 7, "chunk_size": 4})
    job = start_run(path)
    job.generate()
    assert job.ledger.requests_used() <= 7
    summary = job.finish()
    assert summary["status"] == "short" and "budget" in summary["message"]


def test_resume_after_interruption_writes_nothing_twice(recipe_path):
    job = start_run(recipe_path)
    assert job.generate(max_chunks=1) == 1  # "killed" after one committed chunk
    first = {r["sample_id"] for r in job.catalog.samples(("sample_id",))}
    job.catalog.close()

    backend = ScriptedBackend()
    job2 = start_run(recipe_path, backend)
    job2.generate()
    assert job2.catalog.run(job2.run_id)["attempts"] == 2
    rows = job2.catalog.samples(("sample_id", "slot"), status="accepted")
    assert len(rows) == 6 and len({r["slot"] for r in rows}) == 6
    assert first <= {r["sample_id"] for r in rows}
    generated_again = {r.key for batch in backend.calls for r in batch}
    assert len(generated_again) == 2 * (6 - len(first))  # only the missing slots, two stages each
    assert job2.catalog.integrity_problems() == []  # no sample id written twice


def test_weak_leaf_gets_parallel_attempts_and_surplus_is_dropped(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 200, "chunk_size": 4, "max_rounds": 5})
    state = {"n": 0}

    def script(request):
        state["n"] += 1
        if state["n"] <= 8:  # the first round's questions all fail: acceptance rate ~0
            return ""
        field = "answer" if "answer" in asked(request) else "question"
        return reply(request, {field: f"unique text {request.key} with words"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.samples(("slot", "status"))
    attempts = Counter(r["slot"] for r in rows)
    assert all(n >= 2 for n in attempts.values())
    assert max(attempts.values()) >= 3  # after failures, several attempts per slot at once
    accepted = Counter(r["slot"] for r in rows if r["status"] == "accepted")
    assert accepted == {slot: 1 for slot in attempts}
    dropped = job.catalog.count("samples", status="dropped")
    assert dropped >= 1 and job.finish()["accepted"] == 4


def test_near_duplicates_are_caught(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 2, "budget": 40, "chunk_size": 8, "max_rounds": 3},
                        quality={"near_dup_threshold": 0.6})
    base = "Tom has 5 apples and buys 3 more apples at the market. How many apples does {} have now?"
    names = iter(["Tom", "he", "she", "Ann", "Bob"])

    def script(request):
        if "question" in asked(request):
            return reply(request, {"question": base.format(next(names))})
        return reply(request, {"answer": "5 + 3 = 8. #### 8"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    dup = job.catalog.samples(("reason", "duplicate_of"), status="duplicate")
    assert dup and all(d["reason"].startswith("near_duplicate") and d["duplicate_of"] for d in dup)


def test_math_verification_reference_and_self_consistency(tmp_path):
    # answer augmentation: compared with the seed's answer (the GSM8K slice's first rows)
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 30, "chunk_size": 8, "max_rounds": 2,
                                              "strategy": "answer_augmentation"},
                        verify={"kind": "math"})
    job = start_run(path, ScriptedBackend(lambda r: reply(r, {"answer": "I think it is 72. #### 72"})))
    job.generate()
    rows = job.catalog.samples(("seed_row", "status", "reason", "verified"))
    for row in rows:
        expected = job.ledger.seeds[row["seed_row"]]["answer"].rsplit("####", 1)[1].strip()
        if expected == "72":
            assert row["status"] == "accepted" and row["verified"] is True
        else:
            assert row["status"] == "rejected" and row["reason"].startswith("wrong_answer") and not row["verified"]
    assert job.catalog.stats(job.run_id)["verified"]["failed"] >= 1

    # new question: k = 3 sampled answers at once, the majority decides, a minority answer is not
    # kept (a vote settled by its first answers: tests/test_free_text.py)
    path = write_recipe(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path,
                        generation={"target": 2, "budget": 40, "chunk_size": 8},
                        verify={"kind": "math", "samples": 3, "settle_early": False})
    votes = iter(["#### 5", "#### 7", "#### 7", "#### 9", "#### 9", "#### 9"] * 3)

    def script(request):
        if "question" in asked(request):
            return reply(request, {"question": f"How many pencils are in box {request.key}?"})
        return reply(request, {"answer": f"Counting them: {next(votes)}"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    answers = [r["fields"]["answer"] for r in job.catalog.samples(("fields",), status="accepted")]
    assert answers == ["Counting them: #### 7", "Counting them: #### 9"]
    assert job.catalog.count("requests", stage="answer") == 6


def test_auto_strategy_follows_the_budget_and_records_why(tmp_path):
    small = start_run(write_recipe(tmp_path, generation={"target": 4, "budget": 12, "strategy": "auto"}))
    run = small.catalog.run(small.run_id)
    assert run["strategy"] == "answer_augmentation" and "below the switch point" in run["strategy_reason"]
    small.catalog.close()
    big = start_run(write_recipe(tmp_path / "big" if (tmp_path / "big").mkdir() is None else tmp_path,
                                generation={"target": 4, "budget": 5000, "strategy": "auto"}))
    run = big.catalog.run(big.run_id)
    assert run["strategy"] == "new_question" and "switch point" in run["strategy_reason"]
