"""The run engine on a scripted backend: generation, rejects, dedup, budget, resume."""

from __future__ import annotations

import json

from storage.catalog import Catalog
from storage.job import Job, chunks
from synth.backends.scripted import ScriptedBackend
from synth.recipe import load_recipe
from tests.conftest import write_recipe


def run_all(job: Job, limit_chunks: int | None = None) -> int:
    done = 0
    while True:
        work = job.pending()
        if not work:
            return done
        for chunk in chunks(work, job.recipe.generation.chunk_size):
            if limit_chunks is not None and done >= limit_chunks:
                return done
            job.run_chunk(chunk)
            done += 1


def make_job(path, backend=None):
    recipe = load_recipe(path)
    cat = Catalog(recipe.catalog)
    job = Job(recipe, cat, backend or ScriptedBackend())
    job.start()
    job.plan()
    return job


def test_fills_the_target_with_lineage(recipe_path):
    job = make_job(recipe_path)
    run_all(job)
    assert job.finish()["status"] == "finished"
    stats = job.catalog.stats(job.run_id)
    assert stats["samples"]["accepted"] == 6
    assert stats["requests"] == 12  # question + answer stage per sample
    row = job.catalog.query("SELECT * FROM samples WHERE status = 'accepted' LIMIT 1")[0]
    assert set(json.loads(row["fields"])) == {"question", "answer"}
    req = job.catalog.query("SELECT * FROM requests WHERE request_id = ?", [row["request_id"]])[0]
    assert req["stage"] == "answer" and req["template"] == "generate/answer.jinja2" and req["raw_text"]


def test_malformed_outputs_become_rejects_then_retried(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 100, "chunk_size": 8, "max_rounds": 3})
    calls = {"n": 0}

    def script(request):
        calls["n"] += 1
        if calls["n"] <= 3:
            return ["", "{not json", RuntimeError("server on fire")][calls["n"] - 1]
        key = request.key
        field = "answer" if "answer" in request.json_schema["properties"] else "question"
        return json.dumps({field: f"text for {key} is long enough"})

    job = make_job(path, ScriptedBackend(script))
    run_all(job)
    rejects = job.catalog.query("SELECT reason, raw_text FROM samples WHERE status = 'rejected' ORDER BY reason")
    assert [r["reason"].split(":")[0] for r in rejects] == ["backend_error", "empty_output", "invalid_json"]
    assert any(r["raw_text"] == "{not json" for r in rejects)
    assert job.finish()["accepted"] == 4


def test_duplicates_are_marked_and_replaced(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 60, "chunk_size": 8, "max_rounds": 4})
    seen = {"q": 0}

    def script(request):
        if "question" in request.json_schema["properties"]:
            seen["q"] += 1
            text = "Same question every time?" if seen["q"] <= 3 else f"Question number {seen['q']}?"
            return json.dumps({"question": text})
        return json.dumps({"answer": "It is 4. #### 4"})

    job = make_job(path, ScriptedBackend(script))
    run_all(job)
    dups = job.catalog.query("SELECT duplicate_of FROM samples WHERE status = 'duplicate'")
    assert len(dups) == 2 and all(d["duplicate_of"] for d in dups)
    assert job.finish()["accepted"] == 3


def test_budget_stops_the_run_and_says_so(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 10, "budget": 7, "chunk_size": 4})
    job = make_job(path)
    run_all(job)
    assert job.requests_used() <= 7
    summary = job.finish()
    assert summary["status"] == "short" and "budget" in summary["message"]


def test_resume_after_interruption_writes_nothing_twice(recipe_path):
    job = make_job(recipe_path)
    assert run_all(job, limit_chunks=1) == 1  # "killed" after one committed chunk
    first = {r["sample_id"] for r in job.catalog.query("SELECT sample_id FROM samples")}
    job.catalog.close()

    backend = ScriptedBackend()
    job2 = make_job(recipe_path, backend)
    run_all(job2)
    assert job2.catalog.scalar("SELECT attempts FROM runs") == 2
    rows = job2.catalog.query("SELECT sample_id, slot FROM samples WHERE status = 'accepted'")
    assert len(rows) == 6 and len({r["slot"] for r in rows}) == 6
    assert first <= {r["sample_id"] for r in rows}
    generated_again = {r.key for batch in backend.calls for r in batch}
    assert len(generated_again) == 2 * (6 - len(first))  # only the missing slots, two stages each
    assert job2.catalog.scalar("SELECT count(*) - count(DISTINCT sample_id) FROM samples") == 0
