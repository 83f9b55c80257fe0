"""Reliability: bad recipes, hostile model output and servers, the template sandbox, and two
runs on one catalog. (The kill/resume soak with the embedded model is tests/test_soak.py.)"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import pytest
import yaml

from flows.cli import main
from storage.catalog.catalog import Catalog, CatalogBusy
from synth.backends.openai import OpenAIBackend
from synth.backends.scripted import ScriptedBackend
from synth.config.recipe import load_recipe
from tests.conftest import base_recipe, write_recipe
from tests.harness import run_to_end, start_run
from tests.fault_env import catalog_held
from tests.http_stub import StubResponse, StubServer, chat_reply


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# -- bad recipes: exit code 2, a message naming the problem, nothing written ----------------

BAD_RECIPES = [
    ("unknown top-level key", {"colour": "blue"}, "unknown key 'colour'"),
    ("unknown nested key", {"generation": {"targte": 5}}, "generation.targte"),
    ("target wrong type", {"generation": {"target": "lots"}}, "generation.target"),
    ("target zero", {"generation": {"target": 0}}, "generation.target"),
    ("target negative", {"generation": {"target": -3}}, "generation.target"),
    ("budget zero", {"generation": {"budget": 0}}, "generation.budget"),
    ("chunk size negative", {"generation": {"chunk_size": -1}}, "generation.chunk_size"),
    ("temperature wrong type", {"backend": {"sampling": {"temperature": "hot"}}}, "backend.sampling.temperature"),
    ("max_tokens zero", {"backend": {"sampling": {"max_tokens": 0}}}, "backend.sampling.max_tokens"),
    ("unknown backend", {"backend": {"kind": "gpt-9"}}, "unknown backend 'gpt-9'"),
    ("unknown strategy", {"generation": {"strategy": "vibes"}}, "unknown strategy 'vibes'"),
    ("strategy weight for unknown strategy", {"generation": {"strategy_weights": {"magic": 1}}}, "'magic'"),
    ("all weights zero", {"generation": {"strategy_weights": {"new_question": 0}}}, "at least one strategy weight"),
    ("missing seed file", {"seeds": {"path": "nope.jsonl"}}, "seeds.path: no file"),
    ("seed column missing", {"seeds": {"path": "seeds.jsonl", "fields": {"question": "problem"}}},
     "seeds.fields.question"),
    ("missing task", {"task": None}, "task: required"),
    ("output field not an identifier", {"task": {"name": "t", "description": "a long enough description",
                                                 "output_fields": {"my field": {"description": "x"}}}},
     "plain identifier"),
    ("tree depth zero", {"tree": {"max_depth": 0}}, "tree.max_depth"),
    ("tree infinite below max values", {"tree": {"max_values": 9, "infinite_threshold": 3}}, "infinite_threshold"),
    ("tree file missing", {"tree": {"file": "tree.yaml"}}, "tree.file: no file"),
    ("verify kind unknown", {"verify": {"kind": "astrology"}}, "verify.kind"),
    ("quality bounds inverted", {"quality": {"min_chars": 100, "max_chars": 10}}, "max_chars"),
    ("filter kind unknown", {"quality": {"filters": [{"kind": "vibes"}]}}, "quality.filters.0.kind"),
    ("filter setting out of range", {"quality": {"filters": [{"kind": "repetition", "max_share": 2}]}},
     "quality.filters.0.max_share"),
    ("key in api_key_env", {"backend": {"kind": "openai", "api_key_env": "sk-live-123 456"}}, "NAME of an environment variable"),
    ("unknown template name", {"templates": {"generate/nope.jinja2": "t.jinja2"}}, "no built-in prompt"),
    ("template syntax error", {"templates": {"generate/new_question.jinja2": "broken.jinja2"}}, "syntax error"),
]


@pytest.mark.parametrize("label, overrides, needle", BAD_RECIPES, ids=[b[0] for b in BAD_RECIPES])
def test_bad_recipe_exit_2_names_it_writes_nothing(tmp_path, monkeypatch, capsys, label, overrides, needle):
    (tmp_path / "broken.jinja2").write_text("{% for x in %}")
    path = write_recipe(tmp_path, **overrides)
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert main(["run", str(path)]) == 2
    assert needle in capsys.readouterr().err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("text, needle", [
    ("task: [unclosed\n", "not readable YAML at line"),
    ("- just\n- a list\n", "a recipe is a YAML mapping"),
    ("\xff\xfe garbage".encode("latin-1"), "not a UTF-8 text file"),
])
def test_unreadable_recipe_files(tmp_path, monkeypatch, capsys, text, needle):
    path = tmp_path / "r.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert main(["run", str(path)]) == 2
    assert needle in capsys.readouterr().err
    assert files_under(tmp_path) == before


# -- the template sandbox on user templates ---------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ question_field|attr('__class__')|attr('__mro__') }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ lipsum.__globals__['os'].system('touch /tmp/pwned') }}",
    "{{ request.application.__globals__ }}",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_user_template_escapes_are_refused(tmp_path, monkeypatch, capsys, payload):
    (tmp_path / "evil.jinja2").write_text(payload)
    path = write_recipe(tmp_path, templates={"generate/new_question.jinja2": "evil.jinja2"})
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "user template for generate/new_question.jinja2" in err
    assert files_under(tmp_path) == before


def test_a_good_user_template_is_used(tmp_path):
    (tmp_path / "mine.jinja2").write_text("Invent a {{ question_field }} about trains. Keys: {{ fields|join(',') }}")
    recipe = load_recipe(write_recipe(tmp_path, templates={"generate/new_question.jinja2": "mine.jinja2"}))
    backend = ScriptedBackend()
    with Catalog(recipe.catalog) as cat:
        job = start_run(recipe, backend, cat)
        job.generate()
        hashes = {r["template_hash"] for r in cat.requests(("template_hash",), stage="question")}
    assert "Invent a question about trains." in backend.calls[0][0].messages[1]["content"]
    assert len(hashes) == 1 and next(iter(hashes)).startswith("user-")


# -- hostile model output: every bad output is a reject with its raw text and reason -------------

HOSTILE = [
    ("", "empty_output"),
    ("{not json", "invalid_json"),
    ('{"question": "cut off mid', "truncated"),
    ("x" * 10_000_000, "too_long"),
    ('{"question": "\\u0000\\u0000"}', "empty_field"),
    ('{"question": {"nested": "object"}}', "wrong_type"),
    ('[{"question": "a list"}]', "wrong_type"),
    (RuntimeError("backend fell over"), "backend_error"),
]
GOOD_BUT_ODD = [
    "What is {{ 7*7 }} and {% if true %}yes{% endif %} in this story about counting?",
    "Robert'); DROP TABLE samples; -- counts 3 apples. How many?",
    "\u202eRTL override\u202c: \u05e9\u05dc\u05d5\u05dd has 3 cats and 4 dogs, how many pets in all?",
    "lone surrogate \ud800 in a question with enough words to pass the filters?",
]


def test_hostile_outputs_become_rejects_and_odd_text_stays_data(tmp_path):
    # hostile JSON is what this test plays: the stages are asked for JSON
    path = write_recipe(tmp_path, generation={"target": len(GOOD_BUT_ODD), "budget": 200, "chunk_size": 16,
                                              "max_rounds": 8, "output": {"question": "json", "answer": "json"}})
    question_outputs = iter([h for h, _ in HOSTILE] + [json.dumps({"question": q}) for q in GOOD_BUT_ODD])

    def script(request):
        if "question" in request.json_schema["properties"]:
            return next(question_outputs, json.dumps({"question": f"spare {request.key}"}))
        return json.dumps({"answer": "Count them. #### 3"})

    recipe = load_recipe(path)
    backend = ScriptedBackend(script)
    # truncation is a finish_reason: play it through a backend wrapper that reports "length"
    original = backend.generate

    def generate(requests):
        results = original(requests)
        return [dataclasses.replace(r, finish_reason="length") if r.text.startswith('{"question": "cut')
                else r for r in results]

    backend.generate = generate
    with Catalog(recipe.catalog) as cat:
        job, summary = run_to_end(recipe, backend, cat)
        rejects = cat.samples(("reason", "raw_text"), status="rejected")
        kept = [r["fields"]["question"] for r in cat.samples(("fields",), status=("accepted", "filtered", "dropped"))]
        template_rows = [r for r in cat.samples(("status", "reason", "fields")) if "{{ 7*7 }}" in json.dumps(r["fields"])]
        # SQL: SQL-looking model output must leave the schema itself alone
        tables = {r["table_name"] for r in cat.query("SELECT table_name FROM information_schema.tables")}
    assert summary["status"] == "finished"
    kinds = sorted(r["reason"].split(":")[0] for r in rejects)
    assert kinds == sorted(k for _, k in HOSTILE)
    assert all(r["raw_text"] is not None for r in rejects if not r["reason"].startswith("backend_error"))
    assert any(len(r["raw_text"]) == 10_000_000 for r in rejects)  # kept whole, for inspection
    # jinja-looking text is data: stored verbatim, never rendered (the filter marks it as leftover template text)
    assert GOOD_BUT_ODD[0] in kept and not any(q.startswith("What is 49") for q in kept)
    assert template_rows[0]["status"] == "filtered" and template_rows[0]["reason"].startswith("template_text")
    assert GOOD_BUT_ODD[1] in kept and "samples" in tables  # SQL-looking text is data too
    assert GOOD_BUT_ODD[2] in kept
    assert any("\\ud800" in q for q in kept)  # a lone surrogate is kept, spelled out, not a crash


def test_hostile_http_server_429_500_timeouts_garbage(tmp_path):
    """The openai backend against a server that throttles, fails, stalls and garbles: the run
    completes, bad answers become rejects, retries stay within max_retries."""
    state = {"n": 0}

    def handler(request):
        state["n"] += 1
        n = state["n"]
        wants_question = "question" in json.dumps(request.json.get("response_format", {}))
        if n % 7 == 1:
            return StubResponse(status=429, json={"error": "slow down"}, headers={"Retry-After": "0"})
        if n % 7 == 2:
            return StubResponse(status=500, body="internal error")
        if n % 7 == 3:
            return StubResponse(delay_s=3.0, json=chat_reply("late"))
        if n % 7 == 4:
            return StubResponse(body=b"\x00\xff not json at all")
        field = "question" if wants_question else "answer"
        return StubResponse(json=chat_reply(json.dumps({field: f"a {field} number {n} with words"})))

    with StubServer(handler) as stub:
        data = base_recipe(tmp_path, generation={"target": 4, "budget": 60, "chunk_size": 8, "max_rounds": 4,
                                                 "output": {"question": "json", "answer": "json"}},
                           backend={"kind": "openai", "base_url": stub.url + "/v1", "model": "stub",
                                    "timeout_s": 1.0, "max_retries": 2, "concurrency": 4})
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(data))
        recipe = load_recipe(path)
        backend = OpenAIBackend.from_settings(recipe.backend)
        backend.backoff_base_s = 0.01
        with Catalog(recipe.catalog) as cat:
            job, summary = run_to_end(recipe, backend, cat)
            stats = cat.stats(job.run_id)
        backend.close()
    assert summary["accepted"] == 4
    assert stats["request_errors"] >= 1 and stats["samples"]["rejected"] >= 1
    assert len(stub.requests) <= stats["requests"] * (2 + 1) + 8  # at most max_retries + 1 tries each, plus probes


# -- two runs on one catalog --------------------------------------------------------------------

def test_second_writer_gets_a_clear_error_and_nothing_breaks(tmp_path, monkeypatch, capsys):
    path = write_recipe(tmp_path)
    recipe = load_recipe(path)
    with catalog_held(recipe.catalog):
        with pytest.raises(CatalogBusy, match="in use by another process"):
            Catalog(recipe.catalog)
        monkeypatch.chdir(tmp_path)
        started = time.monotonic()
        assert main(["run", str(path), "--no-export"]) == 1
        assert "in use by another process" in capsys.readouterr().err
        assert time.monotonic() - started < 120
    assert main(["run", str(path), "--no-export"]) == 0
    with Catalog(recipe.catalog, read_only=True) as cat:
        assert cat.integrity_problems() == []  # ids written once, no sample's request row missing
        assert all(r["request_id"] for r in cat.samples(("request_id",)))  # and every sample has one
        assert cat.count("samples", distinct="slot", status="accepted") == 6
