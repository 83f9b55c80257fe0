"""The LLM judge: scores stored with their rationale, low scores filtered, broken replies
handled by the recipe's rule, judge requests in the catalog and in the budget."""

from __future__ import annotations

import json

import duckdb
import pytest

from storage.catalog.catalog import Catalog
from storage.catalog.schema import SCHEMA_VERSION, TABLES
from synth.backends.scripted import ScriptedBackend, asked, fill_schema, reply
from synth.curation.judge import parse_judgement
from synth.config.recipe import load_recipe
from synth.reject import Reject
from tests.conftest import write_recipe
from tests.harness import run_to_end


def judging_script(score_for):
    """Generation requests get schema-filled JSON; judge requests get score_for(prompt)."""
    def script(request):
        if "score" in (request.json_schema or {}).get("properties", {}):
            return score_for(request.messages[-1]["content"])
        return reply(request, {name: fill_schema({"type": "string"}, f"{request.key}/{name}")
                               for name in asked(request)})
    return script


def run(path, backend):
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        job, summary = run_to_end(recipe, backend, cat)
        samples = cat.samples(("sample_id", "status", "reason", "quality", "judge_rationale"))
        judge_requests = cat.requests(stage="judge")
        total_requests = job.ledger.requests_used()
    return summary, samples, judge_requests, total_requests


def test_low_scores_are_filtered_with_the_rationale(tmp_path):
    seen = {"n": 0}

    def score(prompt):
        seen["n"] += 1
        good = seen["n"] % 2 == 0  # every other candidate is poor
        return json.dumps({"rationale": "clear and correct" if good else "the answer is wrong", "score": 5 if good else 2})

    path = write_recipe(tmp_path, generation={"target": 4, "budget": 60, "chunk_size": 8, "max_rounds": 4},
                        quality={"judge": {"min_score": 3}})
    summary, samples, judged, used = run(path, ScriptedBackend(judging_script(score)))
    accepted = [s for s in samples if s["status"] == "accepted"]
    low = [s for s in samples if s["status"] == "filtered"]
    assert summary["status"] == "finished" and len(accepted) == 4
    assert all(s["quality"] == 5.0 and s["judge_rationale"] == "clear and correct" for s in accepted)
    assert low and all(s["reason"].startswith("judge_score: 2 < 3") and s["quality"] == 2.0 for s in low)
    assert len(judged) == seen["n"] and all(r["raw_text"] for r in judged)
    # each attempt costs question + answer + judge, and the budget counts all three
    assert used == 3 * len(samples)


def test_the_judge_sees_the_candidate_as_data(tmp_path):
    prompts = []

    def score(prompt):
        prompts.append(prompt)
        return json.dumps({"rationale": "ok", "score": 4})

    def script(request):
        props = (request.json_schema or {}).get("properties", {})
        if "score" in props:
            return score(request.messages[-1]["content"])
        if "question" in asked(request):
            # unclosed, so the heuristic template filter lets it through; rendered, it would not parse
            return reply(request, {"question": "What is {{ 7*7 plus {% if x? Explain it fully."})
        return reply(request, {"answer": "It is 49 and more words #### 49"})

    path = write_recipe(tmp_path, generation={"target": 1, "budget": 6, "chunk_size": 2},
                        quality={"judge": {}})
    run(path, ScriptedBackend(script))
    assert prompts and "What is {{ 7*7 plus {% if x?" in prompts[0]


@pytest.mark.parametrize("on_failure, status", [("filter", "filtered"), ("keep", "accepted")])
def test_a_broken_judge_reply_follows_the_recipe(tmp_path, on_failure, status):
    path = write_recipe(tmp_path, generation={"target": 2, "budget": 6, "chunk_size": 4, "max_rounds": 1},
                        quality={"judge": {"on_failure": on_failure}})
    summary, samples, judged, _ = run(path, ScriptedBackend(judging_script(lambda prompt: "{the score is high")))
    assert judged and {s["status"] for s in samples} == {status}
    assert all(s["quality"] is None and s["judge_rationale"].startswith("judge failed: judge_unparseable")
               for s in samples)
    if status == "filtered":
        assert all(s["reason"].startswith("judge_unparseable") for s in samples)
        assert summary["status"] == "short"


def test_parse_judgement_cases():
    assert parse_judgement('{"rationale": "fine", "score": 4}') == (4, "fine")
    assert parse_judgement('```json\n{"rationale": "x", "score": "5"}\n```') == (5, "x")
    for text in ("", '{"score": 9, "rationale": "x"}', '{"score": true}', "[1]", '{"rationale": "x"'):
        assert isinstance(parse_judgement(text), Reject), text


V1_RUNS = """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, recipe JSON NOT NULL,
    recipe_hash VARCHAR NOT NULL, backend VARCHAR NOT NULL, model VARCHAR NOT NULL, status VARCHAR NOT NULL,
    strategy VARCHAR, strategy_reason VARCHAR, tree_id VARCHAR, attempts INTEGER NOT NULL DEFAULT 1,
    started_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, message VARCHAR)"""
V1_REQUESTS = """CREATE TABLE requests (request_id VARCHAR PRIMARY KEY, run_id VARCHAR, tree_id VARCHAR,
    stage VARCHAR NOT NULL, strategy VARCHAR, leaf_id VARCHAR, template VARCHAR, template_hash VARCHAR,
    prompt_hash VARCHAR NOT NULL, sampling JSON, raw_text VARCHAR, finish_reason VARCHAR,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, latency_s DOUBLE,
    error VARCHAR, created_at TIMESTAMP NOT NULL)"""


def test_an_old_catalog_gains_the_judge_column(tmp_path):
    """A catalog written before the judge existed (schema 1) is migrated when opened.
    A migration test: it writes and reads the tables as SQL, since the schema is what it checks."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    con.execute("INSERT INTO schema_version VALUES (1, now())")
    con.execute("CREATE TABLE samples (sample_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, slot INTEGER NOT NULL,"
                " attempt INTEGER NOT NULL, leaf_id VARCHAR, leaf_path JSON, strategy VARCHAR NOT NULL,"
                " seed_row INTEGER, request_id VARCHAR, fields JSON, raw_text VARCHAR, content_hash VARCHAR,"
                " status VARCHAR NOT NULL, reason VARCHAR, duplicate_of VARCHAR, quality DOUBLE, verified BOOLEAN,"
                " created_at TIMESTAMP NOT NULL)")
    con.execute(V1_RUNS)
    con.execute(V1_REQUESTS)
    con.execute("INSERT INTO samples (sample_id, run_id, slot, attempt, strategy, fields, status, created_at) "
                "VALUES ('s1', 'r1', 0, 0, 'new_question', '{\"q\": \"kept\"}', 'accepted', now())")
    con.close()
    with Catalog(path, read_only=True) as cat:  # not migrated: still readable and checkable
        assert cat.scalar("SELECT fields->>'q' FROM samples_text") == "kept"
        assert cat.integrity_problems() == []
    with Catalog(path) as cat:
        columns = {r["column_name"] for r in cat.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'samples'")}
        assert {"judge_rationale", "segment", "seed_key"} <= columns  # versions 2, 3 and 4
        requests = {r["column_name"] for r in cat.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'")}
        assert {"sample_id", "worker", "node"} <= requests  # versions 4 and 5
        assert cat.scalar("SELECT count(*) FROM failed_chunks") == 0  # version 5
        assert cat.scalar("SELECT count(*) FROM probes") == 0  # version 8
        assert cat.scalar("SELECT max(version) FROM schema_version") == SCHEMA_VERSION == 8
        assert {"agreement", "n_solutions"} <= columns  # version 7
        assert cat.scalar("SELECT fields->>'q' FROM samples_text WHERE sample_id = 's1'") == "kept"
        # version 3 has no key on samples (see storage/catalog/schema.py); ids stay unique through inserts
        assert cat.scalar("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'samples' "
                          "AND constraint_type = 'PRIMARY KEY'") == 0
        cat.commit_chunk([], [{"sample_id": "s1", "run_id": "r1", "slot": 0, "attempt": 0,
                               "strategy": "new_question", "status": "accepted"}])
        assert cat.scalar("SELECT count(*) FROM samples") == 1


class RealJudge:
    """Real GSM8K rows (not the run's seeds) as the generated candidates, so the gates pass
    them whatever a 135M model would write; every judge request goes to the real model."""

    def __init__(self, judge) -> None:
        from tests.conftest import GSM8K_SLICE

        self.judge, self.name, self.model = judge, "real-judge", judge.model
        self.rows = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[20:]]
        self.written = 0

    def load(self) -> None:
        self.judge.load()

    def close(self) -> None:
        self.judge.close()

    def write(self, request):
        if "question" in asked(request):  # a new problem: the next row
            row, self.written = self.rows[self.written], self.written + 1
        else:  # its answer: the row whose question the prompt shows
            row = next(r for r in self.rows if r["question"] in request.messages[-1]["content"])
        return reply(request, {name: row[name] for name in asked(request)})

    def generate(self, requests):
        judged = [r for r in requests if "score" in (r.json_schema or {}).get("properties", {})]
        real = dict(zip([r.key for r in judged], self.judge.generate(judged))) if judged else {}
        written = ScriptedBackend(self.write).generate([r for r in requests if r.key not in real])
        by_key = {**real, **{r.key: r for r in written}}
        return [by_key[r.key] for r in requests]


@pytest.mark.slow
def test_the_embedded_model_judges_for_real(tmp_path):
    from synth.backends.llamacpp import LlamaCppBackend

    path = write_recipe(
        tmp_path, generation={"target": 2, "budget": 12, "chunk_size": 4, "max_rounds": 2},
        quality={"min_chars": 1, "judge": {"min_score": 1, "max_tokens": 96}},
        backend={"kind": "llamacpp", "n_ctx": 2048, "sampling": {"max_tokens": 96, "temperature": 0.7, "seed": 3}})
    backend = RealJudge(LlamaCppBackend(n_ctx=2048))
    try:
        _, samples, judged, _ = run(path, backend)
    finally:
        backend.close()
    assert judged and all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in judged)
    scored = [s for s in samples if s["quality"] is not None]
    assert scored, samples  # grammar-constrained replies parse into a score
    assert all(1 <= s["quality"] <= 5 and s["judge_rationale"] is not None for s in scored)
