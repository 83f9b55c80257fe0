"""Free-text stages: the reply is the field, its format checked after; answer extraction."""

from __future__ import annotations

import json

import pytest

from synth.backends.scripted import ScriptedBackend
from synth.prompting.parsing import parse_text
from synth.config.recipe import parse_recipe
from synth.reject import Reject
from synth.task.formats import OutputField

ANSWER = {"answer": OutputField(description="solution ending in #### N", pattern=r"####[ ]*-?[0-9][0-9,]*$",
                                ending="#### <number>")}
CODE = {"solution": OutputField(description="the function body")}


def test_the_reply_is_the_field():
    assert parse_text("She has 3 + 2 = 5 apples.\n#### 5\n", ANSWER) == {"answer": "She has 3 + 2 = 5 apples.\n#### 5"}


@pytest.mark.parametrize("reply", ["Answer: 2 + 2 = 4\n#### 4", "**Answer:** 2 + 2 = 4\n#### 4",
                                   "Final answer:\n2 + 2 = 4\n#### 4", '{"answer": "2 + 2 = 4\\n#### 4"}'])
def test_own_label_and_json_are_taken_off(reply):
    assert parse_text(reply, ANSWER) == {"answer": "2 + 2 = 4\n#### 4"}


def test_a_code_body_keeps_its_indentation_and_loses_its_fence():
    reply = "```python\n    total = sum(xs)\n    return total\n```"
    assert parse_text(reply, CODE) == {"solution": "    total = sum(xs)\n    return total"}


@pytest.mark.parametrize("reply, finish, reason", [
    ("", "stop", "empty_output"), ("   \n ", "stop", "empty_output"), ("Tom has", "length", "truncated"),
    ("Answer:", "stop", "empty_field"), ("x" * 300_000, "stop", "too_long"),
])
def test_bad_replies_are_rejects(reply, finish, reason):
    out = parse_text(reply, ANSWER, finish)
    assert isinstance(out, Reject) and out.reason == reason


def test_free_text_takes_one_field():
    with pytest.raises(ValueError, match="one field"):
        parse_text("x", {**ANSWER, **CODE})


def _recipe(tmp_path, **generation):
    return parse_recipe({
        "task": {"name": "t", "description": "grade-school math problems with worked solutions",
                 "output_fields": {"question": {"description": "a problem"},
                                   "answer": {"description": "solution ending in #### N",
                                              "pattern": r"####[ ]*-?[0-9][0-9,]*$", "ending": "#### <number>"}},
                 "question_field": "question", "answer_field": "answer"},
        "generation": {"target": 2, "strategy": "new_question", "chunk_size": 4, **generation},
        "backend": {"kind": "scripted"}, "verify": {"kind": "none"}, "catalog": str(tmp_path / "c.duckdb"),
    }, base_dir=tmp_path)


def _run(recipe, script):
    from synth.execution.pipeline import ChunkContext, run_work
    from synth.slot import Slot

    ctx = ChunkContext.from_recipe(recipe, [], "run1")
    slots = [Slot(index=i, leaf_id=None, constraints=(), strategy="new_question") for i in range(2)]
    backend = ScriptedBackend(script)
    return run_work([(slot, 0) for slot in slots], backend, ctx), backend


def test_stages_ask_for_free_text_and_extraction_adds_the_final_line(tmp_path):
    def script(request):
        user = request.messages[-1]["content"]
        if "required form" in user:
            return "#### 12"
        if "Work out the answer" in user:
            return "Each box holds 4, so 3 boxes hold 3 x 4 = 12 pens."  # no ending: extraction asks for it
        return "A shop packs 4 pens in a box. How many pens are in 3 boxes?"

    result, backend = _run(_recipe(tmp_path), script)
    assert all(r.json_schema is None for batch in backend.calls for r in batch)  # no JSON, no grammar
    stages = [row["stage"] for row in result.requests]
    assert stages.count("answer_extract") == 2  # its own request, with its tokens
    extract = next(row for row in result.requests if row["stage"] == "answer_extract")
    assert extract["completion_tokens"] > 0 and extract["sample_id"]
    accepted = [row for row in result.samples if row["status"] == "accepted"]
    assert len(accepted) == 2
    assert accepted[0]["fields"]["answer"] == "Each box holds 4, so 3 boxes hold 3 x 4 = 12 pens.\n#### 12"


def test_json_mode_is_still_there(tmp_path):
    recipe = _recipe(tmp_path, output={"question": "json", "answer": "json"})

    def script(request):
        props = request.json_schema["properties"]
        return json.dumps({"question": "A shop packs 4 pens in a box. How many pens are in 3 boxes?"}
                          if "question" in props else {"answer": "3 x 4 = 12\n#### 12"})

    result, backend = _run(recipe, script)
    assert all(r.json_schema is not None for batch in backend.calls for r in batch)
    assert sum(row["status"] == "accepted" for row in result.samples) == 2


def test_extraction_off_leaves_the_reply_to_the_format_gate(tmp_path):
    def script(request):
        if "Work out the answer" in request.messages[-1]["content"]:
            return "3 x 4 = 12 pens."
        return "A shop packs 4 pens in a box. How many pens are in 3 boxes?"

    result, _ = _run(_recipe(tmp_path, extract=False), script)
    assert not any(row["stage"].endswith("_extract") for row in result.requests)
    assert {row["reason"].split(":")[0] for row in result.samples} == {"pattern_mismatch"}


def test_text_for_several_question_fields_is_a_recipe_error(tmp_path):
    from synth.config.recipe import RecipeError

    with pytest.raises((RecipeError, ValueError), match="generation.output.question"):
        parse_recipe({"task": {"name": "t", "description": "python problems with tests",
                               "output_fields": {"prompt": {"description": "p"}, "test": {"description": "t"},
                                                 "solution": {"description": "s"}},
                               "question_field": "prompt", "answer_field": "solution"},
                      "generation": {"output": {"question": "text"}}})


# -- labels by majority vote ------------------------------------------------------------------

def test_the_majority_is_the_label_and_agreement_counts_every_sampled_solution():
    from synth.verify.math import MathContext, MathVerifier

    verifier = MathVerifier(samples=4, min_agreement=0.7)
    three = ("2 + 2 = 4 #### 4", "4 #### 4", "so 4. #### 4")
    ok = verifier.verify({"answer": three[0]}, MathContext("answer", solutions=three + ("#### 5",), sampled=4,
                                                            min_agreement=0.7))
    assert ok.ok and ok.detail["agreement"] == 0.75 and ok.detail["k"] == 4
    # two of four agree, one did not parse (it is not among the solutions but was sampled): no majority
    tie = verifier.verify({"answer": "#### 4"}, MathContext("answer", solutions=("#### 4", "#### 4", "#### 5"),
                                                             sampled=4))
    assert tie.kind == "no_majority"
    low = verifier.verify({"answer": "#### 4"}, MathContext("answer", solutions=three + ("#### 5",), sampled=4,
                                                             min_agreement=0.8))
    assert low.kind == "low_agreement"


def majority_run(tmp_path, **verify):
    recipe = parse_recipe({**_recipe(tmp_path).model_dump(mode="json", exclude={"base_dir"}),
                           "verify": {"kind": "math", "samples": 3, **verify}}, base_dir=tmp_path)
    answers = iter(["3 x 4 = 12\n#### 12", "4 + 4 + 4 = 12\n#### 12", "3 + 4 = 7\n#### 7", "3 x 4 = 12\n#### 12",
                    "4 x 3 = 12\n#### 12", "3 + 4 = 7\n#### 7"])

    def script(request):
        if "Work out the answer" in request.messages[-1]["content"]:
            return next(answers)
        return "A shop packs 4 pens in a box. How many pens are in 3 boxes?"

    return _run(recipe, script)


def test_new_questions_get_their_label_by_majority_with_the_agreement_recorded(tmp_path):
    result, backend = majority_run(tmp_path, settle_early=False)
    assert len(backend.calls[1]) == 6  # three solutions per question, in one batched call
    accepted = [row for row in result.samples if row["status"] == "accepted"]
    assert len(accepted) == 2
    for row in accepted:
        assert row["agreement"] == pytest.approx(2 / 3) and row["n_solutions"] == 3
        assert row["fields"]["answer"].endswith("#### 12")  # a solution that reached the label


def test_a_vote_the_first_solutions_settle_samples_no_more(tmp_path):
    """Two of three agreeing decide the vote: the first question stops there; the second,
    whose first two disagree (7, 12), gets its third solution (12) in a second batch."""
    result, backend = majority_run(tmp_path)
    assert [len(call) for call in backend.calls[1:]] == [4, 1]
    rows = sorted((row for row in result.samples if row["status"] == "accepted"), key=lambda r: r["n_solutions"])
    assert [(row["n_solutions"], round(row["agreement"], 3)) for row in rows] == [(2, 1.0), (3, 0.667)]
    assert all(row["fields"]["answer"].endswith("#### 12") for row in rows)
    assert len([r for r in result.requests if r["stage"] == "answer"]) == 5  # every paid answer is recorded


def test_the_first_wave_is_the_fewest_solutions_that_decide_the_vote():
    from synth.verify.math import MathVerifier

    assert [MathVerifier(k).first_wave(False) for k in (1, 2, 3, 4, 5, 8)] == [1, 2, 2, 3, 3, 5]
    assert MathVerifier(5, min_agreement=0.8).first_wave(False) == 4  # 4 of 5 must agree
    assert MathVerifier(5, settle_early=False).first_wave(False) == 5
    assert MathVerifier(3).first_wave(True) == 1  # a reference answer: one solution
    verifier = MathVerifier(3)
    assert verifier.settled(["#### 12", "so 12"], 2)
    assert not verifier.settled(["#### 12", "#### 7"], 2)
    assert not verifier.settled(["#### 12"], 2)  # the other did not parse: it counts against


def test_a_new_code_problem_keeps_a_solution_that_passes_its_own_tests(tmp_path):
    """The tests come from the question request; `tries` solutions are sampled in one batch and
    the first that passes them in the sandbox is kept."""
    from synth.execution.pipeline import ChunkContext, run_work
    from synth.slot import Slot

    recipe = parse_recipe({
        "task": {"name": "code", "description": "python functions with their tests",
                 "output_fields": {"prompt": {"description": "signature and docstring"},
                                   "test": {"description": "def check(candidate)"},
                                   "entry_point": {"description": "name"},
                                   "solution": {"description": "the function"}},
                 "question_field": "prompt", "answer_field": "solution"},
        "generation": {"target": 1, "strategy": "new_question"},
        "backend": {"kind": "scripted"}, "verify": {"kind": "code", "tries": 3},
        "catalog": str(tmp_path / "c.duckdb")}, base_dir=tmp_path)
    solutions = iter(["def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b",
                      "def add(a, b):\n    return 0"])

    def script(request):
        if request.json_schema is not None:  # several question fields: JSON
            return json.dumps({"prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n",
                               "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
                               "entry_point": "add"})
        return next(solutions)

    ctx = ChunkContext.from_recipe(recipe, [], "run1")
    result = run_work([(Slot(index=0, strategy="new_question"), 0)], ScriptedBackend(script), ctx)
    (row,) = result.samples
    assert row["status"] == "accepted", row.get("reason")
    assert row["fields"]["solution"].endswith("return a + b") and row["n_solutions"] == 3
    assert row["agreement"] == pytest.approx(1 / 3)
