"""Adding a strategy is one class and its template, an exporter or a filter one class, a backend
or a verifier its settings class and its class; a recipe orders its filters and turns any off; overriding any built-in prompt works, the tree's
included; the chunk pipeline is pure data in, rows out."""

from __future__ import annotations

import itertools
import json
import pickle
from typing import Any, Literal

import pytest
from pydantic import Field

from storage.catalog.catalog import Catalog
from storage.publish.contract import FileExporter
from storage.publish.exporters import EXPORTERS
from storage.runs.recipe_tree import ensure_tree
from synth.backends import BACKENDS, BackendSettingsBase
from synth.backends.scripted import ScriptedBackend, fill_schema
from synth.backends.scripted import asked, reply
from synth.execution.pipeline import ChunkContext, new_attempts, run_chunk
from synth.curation.filters import FILTERS, Filter, FilterContext
from synth.config.recipe import RecipeError, load_recipe
from synth.reject import Reject
from synth.prompting.render import Renderer, user_template_hash
from synth.slot import Slot
from synth.strategies import QUESTION, STRATEGIES, GenerationContext, Stage, Strategy
from synth.verify import VERIFIERS
from synth.verify.base import BaseVerifier, Verdict, VerifierSettingsBase
from synth.verify.math import extract_final_number
from tests.conftest import write_recipe
from tests.harness import run_dataset, run_to_end, start_run

KEEP_TEMPLATE = "test/rephrase_keep_answer.jinja2"
KEEP_SOURCE = "Say this {{ question_field }} again in new words: {{ original }}\nReply as JSON with the keys: question."


class RephraseKeepAnswer(Strategy):
    """Test-only: a seed question in new words, keeping the seed's answer (no answer stage)."""

    name = "rephrase_keep_answer"
    stages = (Stage(QUESTION, KEEP_TEMPLATE),)
    needs_seed = True
    has_reference = True

    def seeded_fields(self, slot: Slot, ctx: GenerationContext) -> dict[str, Any]:
        return {ctx.task.answer: (ctx.seed(slot.seed_row) or {})[ctx.task.answer]}

    def stage_variables(self, stage, slot, ctx, known):
        return {"question_field": ctx.task.question, "original": (ctx.seed(slot.seed_row) or {})[ctx.task.question]}


def test_a_new_strategy_is_one_class_and_a_template(tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, RephraseKeepAnswer.name, RephraseKeepAnswer())
    recipe = load_recipe(write_recipe(tmp_path, generation={"target": 3, "budget": 20, "chunk_size": 8,
                                                            "strategy": "rephrase_keep_answer"},
                                      verify={"kind": "math"}))
    backend = ScriptedBackend(lambda r: json.dumps({"question": f"Retold problem {r.key[:6]} with the same numbers?"}))
    with Catalog(recipe.catalog) as cat:
        from tests.harness import RunHarness

        run = RunHarness(recipe, cat, backend)
        run.ledger.ctx = ChunkContext.from_recipe(recipe, run.ledger.seeds, run.run_id,
                                                  Renderer({KEEP_TEMPLATE: KEEP_SOURCE}))
        run.start()
        run.plan()
        run.generate()
        summary = run.finish()
        rows = cat.samples(("fields", "seed_row", "verified"), status="accepted")
        stages = {r["stage"] for r in cat.requests(("stage",))}
    assert summary["status"] == "finished" and len(rows) == 3 and stages == {"question"}
    for row in rows:  # the seed's answer kept, and verified against itself as the reference
        assert row["fields"]["answer"] == run.ledger.seeds[row["seed_row"]]["answer"]
        assert row["verified"] is True
    assert "Say this question again in new words" in backend.calls[0][0].messages[1]["content"]


def test_overriding_the_tree_pivots_prompt_builds_the_tree_with_it(tmp_path):
    mine = "Give {{ n }} examples of {{ field_name }} for: {{ task_description }} (mine)"
    (tmp_path / "pivots.jinja2").write_text(mine)
    recipe = load_recipe(write_recipe(tmp_path, tree={"max_depth": 1}, templates={"tree/pivots.jinja2": "pivots.jinja2"}))
    from flows.preflight import preflight

    preflight(tmp_path / "recipe.yaml")  # trial-renders the override (this used to end in KeyError)
    backend = ScriptedBackend()
    with Catalog(recipe.catalog) as cat:
        tree = ensure_tree(cat, recipe, backend)
        hashes = {r["template_hash"] for r in cat.requests(("template_hash",), stage="pivots")}
        others = {r["template_hash"] for r in cat.requests(("template_hash",), stage="dimension")}
    assert hashes == {user_template_hash(mine)}
    assert others and not any(h.startswith("user-") for h in others)
    assert "(mine)" in backend.calls[0][0].messages[0]["content"]
    plain = load_recipe(write_recipe(tmp_path / "plain" if (tmp_path / "plain").mkdir() is None else tmp_path,
                                     tree={"max_depth": 1}))
    from synth.tree import tree_id_for

    assert tree.tree_id != tree_id_for(plain.task, plain.tree, backend.model)  # another prompt: another tree


def test_the_chunk_pipeline_is_pure_and_its_context_travels(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path))
    from synth.config.seeds import load_seeds

    ctx = ChunkContext.from_recipe(recipe, load_seeds(recipe), "run-x")
    copy = pickle.loads(pickle.dumps(ctx))  # what a Ray replica receives
    slots = [Slot(index=i, strategy="new_question", example_rows=(0,)) for i in range(3)]
    backend = ScriptedBackend(lambda r: json.dumps(fill_schema(r.json_schema, r.key)))
    first = run_chunk(new_attempts([(s, 0) for s in slots], ctx), backend, ctx)
    again = run_chunk(new_attempts([(s, 0) for s in slots], copy), backend, copy)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]  # noqa: E731
    assert strip(first.requests) == strip(again.requests) and first.samples == again.samples
    assert not (tmp_path / "catalog.duckdb").exists()  # nothing was written anywhere


def test_run_to_end_is_the_shared_life_cycle(recipe_path):
    run, summary = run_to_end(recipe_path)
    assert summary["status"] == "finished" and run.catalog.integrity_problems() == []


class CsvExporter(FileExporter):
    """Test-only: one CSV file a split."""

    name = "csv"
    folder = "csv"

    def write_files(self, dataset_dict, folder, shard_rows):
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for split, dataset in dataset_dict.items():
            dataset.to_csv(str(folder / f"{split}.csv"), index=False)
            written.append(folder / f"{split}.csv")
        return written


def test_a_new_exporter_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    """The flow's export step and `synth export` both find it by name."""
    import csv

    from flows.cli import main
    from flows.preflight import preflight
    from storage.publish.export import list_exports

    monkeypatch.setitem(EXPORTERS, CsvExporter.name, CsvExporter())
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 20, "chunk_size": 8},
                        export={"dir": str(tmp_path / "out"), "formats": ["csv", "jsonl"]})
    recipe = preflight(path)  # the name is checked against the registry
    run, _ = run_dataset(recipe, export=True)  # the flow's export step, without Prefect
    run.catalog.close()
    rows = list(csv.DictReader((tmp_path / "out" / "csv" / "train.csv").open(encoding="utf-8")))
    assert len(rows) == 3 and {"question", "answer"} <= set(rows[0])
    assert main(["export", "--catalog", str(recipe.catalog), "--out", str(tmp_path / "cli"), "--format", "csv"]) == 0
    assert (tmp_path / "cli" / "csv" / "train.csv").read_text(encoding="utf-8").count("\n") >= 3
    with Catalog(recipe.catalog, read_only=True) as cat:
        assert "csv" in {row["target"] for row in list_exports(cat)}
    monkeypatch.delitem(EXPORTERS, CsvExporter.name)
    with pytest.raises(RecipeError, match="export.formats: no exporter 'csv'"):
        preflight(path)


class BannedWords(Filter):
    """Test-only: a question that holds one of `words`."""

    kind: Literal["banned_words"] = "banned_words"
    words: tuple[str, ...] = ()

    def check(self, fields, ctx: FilterContext):
        question = str(fields.get(ctx.question_field, ""))
        word = next((w for w in self.words if w in question.lower()), None)
        return Reject("banned_word", f"{ctx.question_field} holds {word!r}") if word else None


def scripted_questions(question):
    """A backend whose question stage writes `question(request)` and whose answers are plain."""
    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": "3 + 4 = 7 apples in all.\n#### 7"})
        return reply(request, {"question": question(request)})

    return ScriptedBackend(script)


def test_a_new_filter_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    """A recipe lists it with its settings, beside built-in ones; the ledger's run filters with it."""
    monkeypatch.setitem(FILTERS, "banned_words", BannedWords)  # its registry line
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 40, "chunk_size": 4},
                        quality={"filters": ["length", {"kind": "banned_words", "words": ["lottery"]}, "refusal"]})
    recipe = load_recipe(path)
    assert [f.kind for f in recipe.quality.filter_chain()] == ["length", "banned_words", "refusal"]
    asked_for = itertools.count()  # every other question is about lottery tickets
    backend = scripted_questions(lambda r: f"Shop {r.key[:6]} sells {'lottery ' if next(asked_for) % 2 else ''}"
                                           "tickets at 4 dollars each. How many dollars for 3 tickets?")
    run, summary = run_to_end(recipe, backend)
    with run.catalog as cat:
        rows = cat.samples(("status", "reason", "fields"))
    filtered = [r for r in rows if r["status"] == "filtered"]
    accepted = [r["fields"]["question"] for r in rows if r["status"] == "accepted"]
    assert filtered and all(r["reason"] == "banned_word: question holds 'lottery'" for r in filtered)
    assert summary["status"] == "finished" and len(accepted) == 4 and not any("lottery" in q for q in accepted)
    monkeypatch.delitem(FILTERS, "banned_words")
    with pytest.raises(RecipeError, match=r"quality\.filters\.1\.kind: unknown filter 'banned_words'"):
        load_recipe(path)


class EchoSettings(BackendSettingsBase):
    """Test-only backend settings: `backend: {kind: echo, voice: ...}`."""

    kind: Literal["echo"] = "echo"
    voice: str = Field(default="plain", pattern=r"^[a-z]+$")

    def build(self) -> "EchoBackend":
        return EchoBackend(self.voice)


class EchoBackend(ScriptedBackend):
    """Test-only: the scripted backend's replies, under its own name and model."""

    name = "echo"

    def __init__(self, voice: str) -> None:
        super().__init__(model=f"echo-{voice}")


def test_a_new_backend_is_a_settings_class_a_backend_class_and_one_registry_line(tmp_path, monkeypatch):
    """The recipe reads it by kind, the run builds it from the recipe, the catalog names it."""
    from flows.preflight import preflight
    from synth.execution import backend_for

    monkeypatch.setitem(BACKENDS, "echo", EchoSettings)  # its registry line
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 20, "chunk_size": 4},
                        backend={"kind": "echo", "voice": "quiet"})
    recipe = preflight(path)
    backend = backend_for(recipe)  # the run's own way to its backend
    assert isinstance(backend, EchoBackend) and recipe.model_dump()["backend"]["voice"] == "quiet"
    run, summary = run_to_end(recipe, backend)
    with run.catalog as cat:
        (row,) = cat.runs(("backend", "model"))
    assert summary["status"] == "finished" and (row["backend"], row["model"]) == ("echo", "echo-quiet")
    with pytest.raises(RecipeError, match="backend.voice"):  # its settings are checked like any other
        load_recipe(write_recipe(tmp_path, backend={"kind": "echo", "voice": "LOUD!"}))
    monkeypatch.delitem(BACKENDS, "echo")
    with pytest.raises(RecipeError, match="backend.kind: unknown backend 'echo'"):
        load_recipe(path)


class ParitySettings(VerifierSettingsBase):
    """Test-only verifier settings: `verify: {kind: parity, even: true}`."""

    kind: Literal["parity"] = "parity"
    even: bool = True

    def build(self) -> "ParityVerifier":
        return ParityVerifier(self.even)


class ParityVerifier(BaseVerifier):
    """Test-only: the answer's final number must be even (or odd)."""

    kind = "parity"

    def __init__(self, even: bool) -> None:
        self.even = even

    def verify(self, fields, ctx) -> Verdict:
        number = extract_final_number(str(fields[ctx.answer_field]))
        if number is not None and (int(number) % 2 == 0) == self.even:
            return Verdict.passed({"verifier": "parity"})
        return Verdict.failed(f"wrong_parity: {number} is not {'even' if self.even else 'odd'}")


def test_a_new_verifier_is_a_settings_class_a_verifier_class_and_one_registry_line(tmp_path, monkeypatch):
    """A recipe names it with its settings; the ledger's run verifies with it."""
    monkeypatch.setitem(VERIFIERS, "parity", ParitySettings)  # its registry line
    path = write_recipe(tmp_path, generation={"target": 3, "budget": 40, "chunk_size": 4},
                        verify={"kind": "parity", "even": True})
    count = itertools.count()

    def script(request):  # answers end in 1, 2, 3, ...: every other one is odd
        if "answer" in asked(request):
            n = next(count) + 1
            return reply(request, {"answer": f"There are {n} apples.\n#### {n}"})
        return reply(request, {"question": f"Shop {request.key[:6]} has some apples. How many?"})

    run, summary = run_to_end(load_recipe(path), ScriptedBackend(script))
    with run.catalog as cat:
        rows = cat.samples(("status", "reason", "fields"))
    rejected = [r["reason"] for r in rows if r["status"] == "rejected"]
    accepted = [r["fields"]["answer"] for r in rows if r["status"] == "accepted"]
    assert summary["status"] == "finished" and len(accepted) == 3
    assert all(int(a.rsplit("#### ", 1)[1]) % 2 == 0 for a in accepted)
    assert rejected and all(r.startswith("wrong_parity: ") and r.endswith("is not even") for r in rejected)
    monkeypatch.delitem(VERIFIERS, "parity")
    with pytest.raises(RecipeError, match="verify.kind: unknown verifier 'parity'"):
        load_recipe(path)


def refusing(request) -> str:
    """A refusal (`as an ai model`) of 43 characters, one a request."""
    return f"As an AI model, I can't count {request.key[:4]} or {request.key[4:8]}."


@pytest.mark.parametrize("quality, reason", [
    ({"min_chars": 60}, "too_short"),  # no list: every filter in the registry's order, length first
    ({"filters": [{"kind": "length", "min_chars": 60}, "refusal"]}, "too_short"),
    ({"filters": ["refusal", {"kind": "length", "min_chars": 60}]}, "refusal"),  # reordered: refusal runs first
    ({"filters": [{"kind": "refusal", "enabled": False}, {"kind": "length", "min_chars": 60}]}, "too_short"),
    ({"filters": ["language", "repetition"]}, None),  # neither length nor refusal runs
])
def test_a_recipe_orders_its_filters_and_turns_them_off(tmp_path, quality, reason):
    """The reject reason says which filter ran first; a filter switched off or left out does not run."""
    path = write_recipe(tmp_path, generation={"target": 2, "budget": 8, "chunk_size": 4, "max_rounds": 1},
                        quality=quality)
    run = start_run(path, scripted_questions(refusing))
    run.generate()
    rows = run.catalog.samples(("status", "reason"))
    run.catalog.close()
    filtered = {r["reason"].split(":")[0] for r in rows if r["status"] == "filtered"}
    if reason is None:
        assert not filtered and "accepted" in {r["status"] for r in rows}
    else:
        assert filtered == {reason} and {r["status"] for r in rows} == {"filtered"}


def test_every_registry_names_each_part_by_its_own_name():
    """Strategies, backends, verifiers, filters and exporters: one dict each, one line a member."""
    from synth.backends import BACKENDS
    from synth.strategies import DEFAULT_KIND
    from synth.verify import VERIFIERS

    assert all(name == strategy.name for name, strategy in STRATEGIES.items()) and DEFAULT_KIND in STRATEGIES
    assert all(name == exporter.name for name, exporter in EXPORTERS.items())
    for registry in (BACKENDS, VERIFIERS, FILTERS):
        assert all(settings.model_fields["kind"].default == kind for kind, settings in registry.items())
