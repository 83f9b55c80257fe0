"""Classifying existing rows down a TreeSynth tree (synth/tree/classify.py) and importing them
into the catalog (storage/runs/existing.py), on scripted backends; one slow test with the real
embedded model."""

from __future__ import annotations

import json
import re
import time

import pytest

from storage.catalog.catalog import Catalog
from storage.runs.existing import import_existing, import_run_id
from synth.backends.base import SamplingSettings
from synth.backends.scripted import ScriptedBackend
from synth.reject import Rejected
from synth.task.task import Task
from synth.tree import ANY, tree_from_yaml
from synth.tree.classify import MAX_TRIES, classify_rows, leaf_distribution, match_value
from tests.conftest import GSM8K_SLICE

TASK = Task(name="gsm", description="Grade school math word problems with 2 to 8 steps.",
            output_fields={"question": {"description": "the problem"}, "answer": {"description": "the solution"}})
SAMPLING = SamplingSettings(max_tokens=24, temperature=0.0, seed=3)

TWO_LEVELS = """
task: gsm
root:
  split: setting
  children:
    - value: farm
      split: operation
      children: [{value: sums}, {value: ratios}]
    - value: city
      split: operation
      children: [{value: sums}, {value: percent}]
"""

WITH_INFINITE = """
task: gsm
root:
  split: setting
  children:
    - value: farm
      split: animal
      children:
        - any_of: [cow, pig, hen]
          split: operation
          children: [{value: sums}, {value: ratios}]
    - value: city
"""

ONE_LEVEL = """
task: gsm
root:
  split: topic
  children: [{value: money}, {value: time}, {value: geometry}]
"""


def prompt(request) -> str:
    return request.messages[0]["content"]


def row_text(request) -> str:
    return prompt(request).split("Example:\n", 1)[1].split("\n\nWhich value of", 1)[0]


def dimension_of(request) -> str:
    return re.search(r'Which value of "([^"]+)"', prompt(request)).group(1)


class Oracle:
    """Answers from the row text: rows read like 'farm sums ...'; `bad(text, dim, n)` may override."""

    def __init__(self, bad=None):
        self.bad = bad
        self.seen: dict[tuple[str, str], int] = {}

    def __call__(self, request):
        text, dim = row_text(request), dimension_of(request)
        n = self.seen.get((text, dim), 0)
        self.seen[(text, dim)] = n + 1
        if self.bad is not None:
            answer = self.bad(text, dim, n)
            if answer is not None:
                return answer
        values = request.json_schema["properties"]["value"]["enum"]
        pick = next(v for v in values if re.search(rf"\b{re.escape(v)}\b", text))
        return json.dumps({"value": pick})


def leaf_by_label(tree) -> dict[str, str]:
    return {" / ".join(f"{d}={v}" for d, v in leaf.path): leaf.node_id for leaf in tree.leaves()}


# -- classify_rows --------------------------------------------------------------------------


def test_rows_reach_the_right_leaves_one_batch_per_level():
    tree = tree_from_yaml(TWO_LEVELS)
    rows = ["farm sums: 3 hens and 4 hens", "city percent: a 20% discount", "farm ratios: 2 cows per pig",
            "city sums: 5 buses and 2 buses", "farm sums again"]
    backend = ScriptedBackend(script=Oracle())
    sink: list = []
    out = classify_rows(tree, TASK, rows, backend, SAMPLING, on_requests=sink.extend)
    labels = {v: k for k, v in leaf_by_label(tree).items()}
    assert [labels[a.leaf_id] for a in out] == [
        "setting=farm / operation=sums", "setting=city / operation=percent", "setting=farm / operation=ratios",
        "setting=city / operation=sums", "setting=farm / operation=sums"]
    assert all(a.status == "assigned" and a.reason is None and a.requests == 2 for a in out)
    # one call a level, rows at different nodes of level 1 in the same batch
    assert [len(batch) for batch in backend.calls] == [5, 5]
    assert {dimension_of(r) for r in backend.calls[1]} == {"operation"}
    # the enum holds exactly the node's child values, so a constrained backend must pick one
    assert backend.calls[0][0].json_schema["properties"]["value"]["enum"] == ["city", "farm"]
    assert len(sink) == 10 and {r["stage"] for r in sink} == {"classify"}
    assert all(r["prompt_tokens"] > 0 and r["error"] is None and r["template"] == "classify/node.jinja2"
               for r in sink)
    assert leaf_distribution(tree, out) == {leaf_by_label(tree)[k]: n for k, n in {
        "setting=city / operation=percent": 1, "setting=city / operation=sums": 1,
        "setting=farm / operation=ratios": 1, "setting=farm / operation=sums": 2}.items()}


def test_requests_are_deterministic_and_keyed_by_row_and_namespace():
    tree = tree_from_yaml(TWO_LEVELS)
    rows = ["farm sums one", "city percent two"]
    runs = []
    for keys, namespace in [(None, ""), (None, ""), ([10, 11], ""), (None, "other")]:
        backend = ScriptedBackend(script=Oracle())
        classify_rows(tree, TASK, rows, backend, SAMPLING, row_keys=keys, namespace=namespace)
        runs.append([(r.key, r.sampling.seed) for batch in backend.calls for r in batch])
    assert runs[0] == runs[1]
    assert len({key for key, _ in runs[0]}) == 4
    assert not {k for k, _ in runs[0]} & {k for k, _ in runs[2]}
    assert not {k for k, _ in runs[0]} & {k for k, _ in runs[3]}


def test_invalid_answer_is_retried_once_then_unassigned_with_reason():
    tree = tree_from_yaml(TWO_LEVELS)

    def bad(text, dim, n):
        if text.startswith("stubborn") and dim == "operation":
            return ["not json at all {", json.dumps({"value": "division"})][n]
        if text.startswith("flaky") and dim == "setting" and n == 0:
            return ValueError("server hiccup")  # a backend error value: retried like a bad answer
        if text.startswith("fuzzy"):
            return json.dumps({"value": "  FARM. "}) if dim == "setting" else '"rat"'
        return None

    rows = ["stubborn farm sums", "flaky city sums", "fuzzy farm ratios", "plain city percent"]
    backend = ScriptedBackend(script=Oracle(bad))
    sink: list = []
    out = classify_rows(tree, TASK, rows, backend, SAMPLING, on_requests=sink.extend)
    stubborn, flaky, fuzzy, plain = out
    assert stubborn.status == "unassigned" and stubborn.leaf_id is None
    assert stubborn.path == [("setting", "farm")] and stubborn.node_id == tree.children(tree.root.node_id)[1].node_id
    assert "setting=farm" in stubborn.reason and "division" in stubborn.reason
    assert f"{MAX_TRIES} tries" in stubborn.reason
    assert stubborn.requests == 3  # setting, then operation twice
    assert flaky.status == "assigned" and flaky.path == [("setting", "city"), ("operation", "sums")]
    assert fuzzy.status == "assigned" and fuzzy.path == [("setting", "farm"), ("operation", "ratios")]
    assert plain.status == "assigned"
    # round 1: all 4; round 2: the flaky retry with the 3 others at level 1; round 3: stubborn's retry and flaky
    assert [len(batch) for batch in backend.calls] == [4, 4, 2]
    errors = [r["error"] for r in sink if r["error"]]
    assert len(errors) == 3 and any(e.startswith("ValueError") for e in errors)
    assert sum(e.startswith("invalid:") for e in errors) == 2


def test_match_value_exact_then_unique_prefix():
    values = ["money", "time", "geometry", "geography"]
    assert match_value(" Money ", values) == "money"
    assert match_value("tim", values) == "time"
    with pytest.raises(Rejected, match="several"):
        match_value("geo", values)
    with pytest.raises(Rejected, match="not one of"):
        match_value("weather", values)


def test_infinite_node_is_descended_without_a_call():
    tree = tree_from_yaml(WITH_INFINITE)
    backend = ScriptedBackend(script=Oracle())
    out = classify_rows(tree, TASK, ["farm ratios of pigs", "city bus"], backend, SAMPLING)
    assert out[0].status == "assigned"
    assert out[0].path == [("setting", "farm"), ("animal", ANY), ("operation", "ratios")]
    assert out[1].path == [("setting", "city")] and out[1].status == "assigned"
    assert [len(b) for b in backend.calls] == [2, 1]  # the animal level costs nothing
    assert {dimension_of(r) for b in backend.calls for r in b} == {"setting", "operation"}
    level2 = prompt(backend.calls[1][0])
    assert "- setting: farm" in level2 and "animal" not in level2  # `*` says nothing: not in the prompt


def test_tree_that_never_split_needs_no_call():
    tree = tree_from_yaml("task: gsm\nroot: {}\n")
    backend = ScriptedBackend(script=Oracle())
    out = classify_rows(tree, TASK, ["anything", ""], backend, SAMPLING)
    assert [a.leaf_id for a in out] == [tree.root.node_id] * 2 and backend.calls == []


def test_hostile_row_text_is_data_not_a_template():
    tree = tree_from_yaml(ONE_LEVEL)
    hostile = "money {{ 7*7 }} {% for x in range(3) %}loop{% endfor %} {{ ''.__class__ }} {% raw %}"
    backend = ScriptedBackend(script=Oracle())
    out = classify_rows(tree, TASK, [hostile, "   "], backend, SAMPLING)
    text = prompt(backend.calls[0][0])
    assert hostile in text and "49" not in text and "looploop" not in text
    assert out[0].status == "assigned"
    assert out[1].status == "unassigned" and out[1].reason == "no text to classify"
    assert len(backend.calls[0]) == 1


# -- import_existing ------------------------------------------------------------------------


def dataset(n: int) -> list[dict]:
    kinds = ["farm sums", "city percent", "farm ratios", "city sums", "farm sums"]
    return [{"question": f"{kinds[i % len(kinds)]} problem {i}", "answer": f"#### {i}", "extra": i}
            for i in range(n)]


def test_import_writes_one_sample_per_row_and_is_idempotent(tmp_path):
    tree = tree_from_yaml(TWO_LEVELS)
    rows = dataset(9) + [{"question": "stubborn nothing fits", "answer": "#### 0"}]

    def bad(text, dim, n):
        return json.dumps({"value": "nowhere"}) if text.startswith("stubborn") else None

    progress: list = []
    with Catalog(tmp_path / "c.duckdb") as cat:
        backend = ScriptedBackend(script=Oracle(bad))
        first = import_existing(cat, TASK, tree, rows, backend, SAMPLING, source="gsm8k/train",
                                question_field="question", on_progress=lambda d, t: progress.append((d, t)),
                                chunk_size=4)
        samples = cat.samples()
        run = cat.run(first.run_id)
        n_requests = cat.count("requests")
        backend2 = ScriptedBackend(script=Oracle(bad))
        second = import_existing(cat, TASK, tree, rows, backend2, SAMPLING, source="gsm8k/train",
                                 question_field="question", chunk_size=4)
        assert cat.count("samples") == 10
        assert cat.count("requests") == n_requests
        assert cat.run(first.run_id)["attempts"] == 1  # the second call wrote nothing, not even the run
        assert cat.count("trees") == 1
    assert backend2.calls == []
    assert [s["slot"] for s in samples] == list(range(10))
    assert first.written == 10 and second.written == 0
    assert (second.counts, second.unassigned, second.requests) == (first.counts, first.unassigned, first.requests)
    labels = leaf_by_label(tree)
    assert first.counts == {labels["setting=farm / operation=sums"]: 3, labels["setting=city / operation=percent"]: 2,
                            labels["setting=farm / operation=ratios"]: 2, labels["setting=city / operation=sums"]: 2}
    assert first.unassigned == 1 and list(first.reasons)[0].startswith("unclassified: at root:")
    assert first.requests == n_requests == 9 * 2 + 2  # the stubborn row: two tries at the root
    assert progress[0] == (0, 10) and progress[-1] == (10, 10)
    assert run["name"] == "gsm" and run["status"] == "finished" and run["strategy"] == "existing"
    assert run["tree_id"] == tree.tree_id and run["backend"] == "scripted"
    assert first.run_id == import_run_id(TASK, tree, "gsm8k/train", 10)
    ok = samples[0]
    assert ok["status"] == "accepted" and ok["fields"] == {"question": rows[0]["question"], "answer": "#### 0"}
    assert ok["strategy"] == "existing" and ok["attempt"] == 0 and ok["content_hash"]
    assert ok["leaf_path"] == [["setting", "farm"], ["operation", "sums"]]
    assert ok["request_id"] is not None
    stubborn = samples[9]
    assert stubborn["status"] == "filtered" and stubborn["leaf_id"] is None
    assert stubborn["reason"].startswith("unclassified: ")


def test_content_hash_matches_the_job(tmp_path):
    from synth.ids import text_hash
    from synth.ids import normalize_for_hash

    tree = tree_from_yaml(ONE_LEVEL)
    rows = [{"question": "money: Tom has $5.", "answer": "#### 5"}]
    with Catalog(tmp_path / "c.duckdb") as cat:
        import_existing(cat, TASK, tree, rows, ScriptedBackend(script=Oracle()), SAMPLING, "x", "question")
        (digest,) = [r["content_hash"] for r in cat.samples(("content_hash",))]
    assert digest == text_hash(normalize_for_hash("#### 5\nmoney: Tom has $5."))


class CrashOnCall(ScriptedBackend):
    """Answers like the oracle, but raises on the n-th batch: a kill in the middle of an import."""

    def __init__(self, crash_at: int):
        super().__init__(script=Oracle())
        self.crash_at = crash_at

    def generate(self, requests):
        if len(self.calls) + 1 == self.crash_at:
            self.calls.append(list(requests))
            raise RuntimeError("killed")
        return super().generate(requests)


def test_a_crashed_import_resumes_without_duplicates(tmp_path):
    tree = tree_from_yaml(ONE_LEVEL)
    rows = [{"question": f"{topic} question {i}", "answer": str(i)}
            for i, topic in enumerate(["money", "time", "geometry", "money", "time", "money"])]
    with Catalog(tmp_path / "c.duckdb") as cat:
        crashing = CrashOnCall(crash_at=2)  # one call a chunk on a one-level tree: dies in chunk 2
        with pytest.raises(RuntimeError, match="killed"):
            import_existing(cat, TASK, tree, rows, crashing, SAMPLING, "src", "question", chunk_size=2)
        assert cat.count("samples") == 2
        assert cat.count("requests") == 2
        again = ScriptedBackend(script=Oracle())
        result = import_existing(cat, TASK, tree, rows, again, SAMPLING, "src", "question", chunk_size=2)
        slots = [r["slot"] for r in cat.samples(("slot",))]
        request_ids = [r["request_id"] for r in cat.requests(("request_id",))]
        run = cat.run(result.run_id)
    assert slots == list(range(6))
    assert len(request_ids) == len(set(request_ids)) == 6 == result.requests
    assert sum(len(b) for b in again.calls) == 4  # the two rows already in were not classified again
    assert result.written == 4 and sum(result.counts.values()) == 6 and result.unassigned == 0
    labels = leaf_by_label(tree)
    assert result.counts == {labels["topic=money"]: 3, labels["topic=time"]: 2, labels["topic=geometry"]: 1}
    assert run["status"] == "finished" and run["attempts"] == 2


# -- the real embedded model ------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_classifies_real_gsm8k_rows(tmp_path):
    from synth.backends.llamacpp import LlamaCppBackend

    tree = tree_from_yaml(ONE_LEVEL)
    rows = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:4]]
    backend = LlamaCppBackend(n_ctx=1024)
    started = time.perf_counter()
    try:
        with Catalog(tmp_path / "c.duckdb") as cat:
            result = import_existing(cat, TASK, tree, rows, backend, SAMPLING, "gsm8k_120[:4]", "question")
            samples = cat.samples(("status", "leaf_id", "reason"))
            requests = cat.requests(("stage", "prompt_tokens", "completion_tokens", "raw_text", "run_id"))
    finally:
        backend.close()
    elapsed = time.perf_counter() - started
    leaves = {leaf.node_id for leaf in tree.leaves()}
    assert len(samples) == 4
    for s in samples:
        assert (s["status"] == "accepted" and s["leaf_id"] in leaves) or (
            s["status"] == "filtered" and s["reason"].startswith("unclassified: "))
    assert 4 <= len(requests) <= 8 and all(r["stage"] == "classify" and r["run_id"] == result.run_id
                                            for r in requests)
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in requests)
    print(f"\nembedded classify: {elapsed:.1f} s, counts {result.counts}, unassigned {result.unassigned}, "
          f"answers {[r['raw_text'] for r in requests]}")
