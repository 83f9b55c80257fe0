"""Every strategy, filter and verifier run on the same cases, in one table each.

Adding a member to one of these registries adds it to the table: a strategy must make
a sample from the scripted backend in `len(stages)` requests, a filter must catch its
own case and pass the clean one, a verifier must pass the right answer and refuse the
wrong one."""

from __future__ import annotations

import json

import pytest

from synth.backends.base import SamplingSettings
from synth.backends.scripted import ScriptedBackend
from synth.execution.pipeline import ChunkContext, new_attempts, run_chunk
from synth.planning.plan import plan_slots
from synth.prompting.render import Renderer
from synth.curation.filters import FILTERS, FilterContext, first_problem
from synth.strategies import ANSWER, STRATEGIES
from synth.task.formats import OutputField
from synth.task.task import Task
from synth.verify import VERIFIERS, VerifyCase

TASK = Task(name="t", description="Grade-school math word problems.",
            output_fields={"question": {"description": "a math word problem"},
                           "answer": {"description": "worked solution ending in #### <number>"}})
SEEDS = [{"question": "Tom has 3 apples and buys 2 more. How many apples does he have?", "answer": "3 + 2 = 5 #### 5"},
         {"question": "A box holds 6 pens; how many pens are in 2 boxes?", "answer": "6 * 2 = 12 #### 12"}]
FILTER_CTX = FilterContext(question_field="question",
                           prompt_markers=("Reply as JSON with the key",),
                           formats=(("answer", OutputField(description="a", pattern=r"####[ ]*-?[0-9]+$")),),
                           scaffold_labels=("Answer", "Question"), prose_fields=("question",))


def context(verify: str = "none", **settings) -> ChunkContext:
    return ChunkContext("run", TASK, SEEDS, Renderer(), SamplingSettings(seed=1), VERIFIERS[verify](**settings),
                        FILTER_CTX)


def answering(request) -> str:
    """JSON where the stage asks for it, else the field as free text (one-field stages)."""
    fields = (request.json_schema or {}).get("properties") or {}
    if "answer" in fields or "Work out the answer" in request.messages[-1]["content"]:
        answer = {"answer": "Add them up: 3 + 2 = 5 #### 5"}
    else:
        answer = {"question": f"How many marbles are in jar {request.key[:8]} after 3 more are added?"}
    return json.dumps(answer) if request.json_schema else next(iter(answer.values()))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_makes_a_sample_with_lineage(name):
    strategy = STRATEGIES[name]
    slots = plan_slots({None: 2}, {name: 2}, n_seeds=len(SEEDS), examples_per_prompt=1, seed=3)
    assert all((s.seed_row is not None) == strategy.needs_seed for s in slots)
    backend = ScriptedBackend(answering)
    ctx = context()
    result = run_chunk(new_attempts([(s, 0) for s in slots], ctx), backend, ctx)
    assert len(backend.calls) == len(strategy.stages)  # stage k of every attempt: one batch
    assert [r["stage"] for r in result.requests] == [st.name for st in strategy.stages for _ in slots]
    assert all(r["status"] == "accepted" and r["strategy"] == name for r in result.samples)
    answer_requests = {r["request_id"] for r in result.requests if r["stage"] == ANSWER}
    assert {r["request_id"] for r in result.samples} <= answer_requests  # lineage: the request that made it
    for row, slot in zip(result.samples, slots):
        assert set(row["fields"]) == {"question", "answer"}
        if strategy.keeps_seed_question:
            assert row["fields"]["question"] == SEEDS[slot.seed_row]["question"]
        assert strategy.dedup_field(TASK) in row["fields"]


CLEAN = {"question": "A farmer has 12 cows and sells 4. How many cows are left?", "answer": "12 - 4 = 8 #### 8"}
FILTER_CASES = {  # filter name -> a sample only that filter refuses
    "length": {"question": "Hi?", "answer": "2 + 2 = 4 #### 4"},
    "refusal": {**CLEAN, "question": "I'm sorry, I cannot help with that request."},
    "template_text": {**CLEAN, "question": CLEAN["question"] + " Reply as JSON with the key: answer"},
    "language": {**CLEAN, "question": "Сколько будет два плюс два, если сложить их вместе и ещё раз?"},
    "repetition": {**CLEAN, "answer": "She buys 3 apples for 2 dollars each: 3 x 2 = 6. " * 6 + "#### 6"},
    "symbol_lines": {**CLEAN, "answer": "12 - 4 = 8\n" + "```\n" * 10 + "#### 8"},
    "format": {**CLEAN, "answer": "12 - 4 = 8, so 8 cows are left."},
    "leading_punctuation": {**CLEAN, "question": "} " + CLEAN["question"]},
    "scaffold_echo": {**CLEAN, "answer": "12 - 4 = 8\nQuestion: Ann has 3 hats. #### 8"},
    "degenerate_ending": {**CLEAN, "answer": "12 - 4 = 8 cows. #### 9"},
    "arithmetic": {**CLEAN, "answer": "She has 7 + 5 = 13 apples.\n#### 13"},
    "negative_ending": {**CLEAN, "answer": "12 - 14 = -2 #### -2"},
}


def test_the_filter_table_covers_every_filter():
    assert set(FILTER_CASES) == set(FILTERS)


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
@pytest.mark.parametrize("case", sorted(FILTER_CASES) + ["clean"])
def test_each_filter_refuses_its_case_and_only_it(filter_name, case):
    fields = CLEAN if case == "clean" else FILTER_CASES[case]
    reject = FILTERS[filter_name]().check(fields, FILTER_CTX)
    assert (reject is not None) == (case == filter_name), (filter_name, case, reject)
    if reject is not None:
        assert str(reject).startswith(reject.reason + ": ") and str(first_problem(fields, FILTER_CTX)) == str(reject)


CODE_SEED = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}
VERIFY_CASES = {  # kind -> (fields that hold up, fields that do not), for the same seed
    "none": ({"question": "q", "answer": "#### 5"}, None),
    "math": ({"question": "q", "answer": "2 + 3 = 5 #### 5"}, {"question": "q", "answer": "2 + 3 = 6 #### 6"}),
    "code": ({"question": "q", "answer": "def add(a, b):\n    return a + b\n"},
             {"question": "q", "answer": "def add(a, b):\n    return a - b\n"}),
}


def test_the_verifier_table_covers_every_verifier():
    assert set(VERIFY_CASES) == set(VERIFIERS)


@pytest.mark.parametrize("kind", sorted(VERIFIERS))
def test_each_verifier_passes_the_right_answer_and_refuses_the_wrong_one(kind):
    verifier = VERIFIERS[kind]().build()
    good, bad = VERIFY_CASES[kind]
    seed = {**CODE_SEED, "answer": "#### 5"}
    for fields, expected in ((good, True), (bad, False)):
        if fields is None:
            continue
        case = VerifyCase(fields=fields, answer_field="answer", question_field="question", answers=(fields["answer"],),
                          seed=seed, reference="#### 5")
        verdict = verifier.verify_many([(fields, verifier.context(case))])[0]
        assert verdict.ok == expected, (kind, fields, verdict.reason)
        if not expected:
            assert verdict.reject is not None and verdict.reason == str(verdict.reject)
