"""The gates that catch junk, each on outputs that tripped it for real (the demo's accepted
rows before these gates, issue 22), and on real data they must let through."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from synth.curation.filters import (DegenerateEnding, FilterContext, LeadingPunctuation, NegativeEnding, ScaffoldEcho,
                           first_problem, prose_fields, scaffold_labels)
from synth.config.recipe import load_recipe
from synth.task.formats import OutputField

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
GSM_PATTERN = r"####[ ]*-?[0-9][0-9,]{0,12}(\.[0-9]{1,4})?$"
ANSWER = OutputField(description="solution", pattern=GSM_PATTERN)
CTX = FilterContext(question_field="question",
                    formats=(("question", OutputField(description="q")), ("answer", ANSWER)),
                    scaffold_labels=("Answer", "Example #", "Question"), prose_fields=("question", "answer"))
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def reason(fields):
    problem = first_problem(fields, CTX)
    return problem.reason if problem else None


# Replies of the 135M and 1.5B demo runs that the old gates accepted (issue 22):
@pytest.mark.parametrize("answer, gate", [
    ("} 3 + 4 = 7 apples.\n#### 7", "leading_punctuation"),
    ("); She has 3 + 4 = 7 apples.\n#### 7", "leading_punctuation"),
    ("]){ 3 + 4 = 7\n#### 7", "leading_punctuation"),
    ("3 + 4 = 7 apples.\n#### 7\nQuestion: Mary has 5 pears and eats 2. How many are left?\nAnswer: 5 - 2 = 3\n#### 3",
     "scaffold_echo"),
    ("He has 3 + 4 = 7.\nExample 3: A farmer has 12 cows.\n#### 7", "scaffold_echo"),
    ("He buys 10 and 100 and 14 of them, 0.49 each.\n####10100,110,14,.49", "degenerate_ending"),
    ("3 x 40 = 120 so the answer is\n#### 120.0000000000000100", "pattern_mismatch"),  # the recipe's pattern
    ("#### 7", "degenerate_ending"),  # no working at all
    ("Tom now has a lot of apples.\n#### 7", "degenerate_ending"),  # a working with no number
    ("He had 3 and bought 4, so he has 3 + 4 = 8.\n#### 1000.4098", "degenerate_ending"),  # never reached
    # stop 29's demo accepted it (the majority agreed on 10): a working that never calculates
    ("Alicia needs to buy a new shirt that costs $10. She currently has $20. To find out how much more money "
     "she needs, we subtract the amount of money she has from the total cost of the shirt.\n#### 10",
     "degenerate_ending"),
    # the 1.5B demo's one wrong row: both of its first solutions made the slip, so the vote settled
    ("2 + 1 + 1/2 = 4.5\n#### 4.5", "arithmetic_slip"),
    ("Tim has 68+5 = <<68+5=74>>74 apples.\n#### 74", "arithmetic_slip"),  # a calculator note checked too
    # the last demo's one wrong row: a division rounded to a whole number without saying so
    ("The area of each section is 456 / 9 = <<456/9=51>>51 square meters.\n#### 51", "arithmetic_slip"),
    # stop 29's 12-row demo: a sum after a label's colon was not read (taken for a clock's `10:30`)
    ("Tomatoes: 150 * 5 = 750 leaves\nCucumbers: 90 * 7 = 630 leaves\nPeppers: 60 * 10 = 600 leaves\n"
     "Total leaves: 750 + 630 + 600 = 2080 leaves\n#### 2080", "arithmetic_slip"),
])
def test_junk_is_rejected_with_a_reason(answer, gate):
    assert reason({"question": QUESTION, "answer": answer}) == gate


def test_degenerate_digits_even_where_the_pattern_allows_them():
    loose = OutputField(description="s", pattern=r"####[ ]*[0-9.,]+$")
    ctx = FilterContext(question_field="q", formats=(("a", loose),))
    out = DegenerateEnding().check({"a": "3 x 40 = 120\n#### 120.00000000000001"}, ctx)
    assert out is not None and "run of digits" in out.detail


def test_calculations_are_read_only_where_they_are_whole():
    from synth.curation.filters import calculation_slips

    right = ["$9 x 4 = $<<9*4=36>>36", "10 / 3 = 3.33", "1,200 + 300 = 1,500", "(3 + 4) * 2 = 14", "<<3*.5=1.5>>",
             "17/3 = 5 and 2/3 loads", "250 / 4 = 62.5",
             "360 / 42 = <<360/42=8.571428571428572>>8.571428571428572"]  # a float's digits, the last off by one
    unread = ["8 x 1 1/2 = 12", "24 students * 1/2 = 12", "2x + 3 = 7", "$2.50 - $2.24 = 26 cents",
              "25 / 1/3 = 75", "600 x 30 = 18 000 watts", "12 x 1 and 1/4 = 15", "6:00+48=6:48 PM",
              "Total: 3 + 4 = 8 + 1"]  # a label's colon before it does not hide the `+` after it
    assert [t for t in right + unread if calculation_slips(t)] == []
    assert calculation_slips("So 5 + 3 = 9 apples.") == [("5 + 3 = 9", 8)]
    assert calculation_slips("Total: 5 + 3 = 9 apples.") == [("5 + 3 = 9", 8)]  # a label's colon, not a clock's


def test_a_hyphenated_number_is_not_a_calculation():
    assert reason({"question": QUESTION, "answer": "It is a 3-day trip and a 2-hour drive each day.\n#### 2"}) \
        == "degenerate_ending"


def test_gsm8k_reference_answers_rarely_trip_the_arithmetic_check():
    """The shipped seed slice: none; GSM8K train: 16 of 7,473, slips in the reference itself
    (`14*20=140`, `4+4+6 = 18`, `70 + 40 = 100`; benchmarks/gates.py)."""
    from synth.curation.filters import calculation_slips

    rows = [json.loads(line) for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows if calculation_slips(r["answer"])] == []


def test_a_worked_solution_passes():
    assert reason({"question": QUESTION, "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"}) is None
    assert reason({"question": QUESTION, "answer": "Cost: 2 x $1,250 = $2,500.\n#### 2,500"}) is None


def test_an_indented_docstring_label_is_not_an_echo():
    ctx = FilterContext(question_field="prompt", scaffold_labels=("Example #",))
    prompt = 'def f(x):\n    """Double x.\n    Example 1:\n        f(2) == 4\n    """\n'
    assert ScaffoldEcho().check({"prompt": prompt}, ctx) is None
    assert ScaffoldEcho().check({"prompt": prompt + "Example 2: def g(): pass"}, ctx) is not None


def test_labels_come_from_the_prompts_as_they_render():
    from synth.execution.pipeline import prompt_scaffold
    from synth.prompting.render import Renderer

    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    assert set(prompt_scaffold(Renderer(), recipe.task)) >= {"Question", "Answer", "Example #"}
    assert scaffold_labels(["Here is how answers look:\nTopic: x\n- setting: farm"]) == ("Topic",)


def test_prose_fields_come_from_the_seeds():
    seeds = [{"q": "Tom has 3", "code": "    return x"}, {"q": "Ann buys", "code": "{1: 2}"}]
    assert prose_fields(seeds, ["q", "code"]) == ("q",)
    assert LeadingPunctuation().check({"q": "{\"q\": 1}"}, FilterContext("q", prose_fields=("q",))) is not None
    assert LeadingPunctuation().check({"code": "{1: 2}"}, FilterContext("q", prose_fields=("q",))) is None


def _gsm8k_rows():
    return [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").open()]


def _humaneval_rows():
    return [json.loads(line) for line in gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt")]


def _context_of(recipe_name, seeds):
    from synth.execution.pipeline import prompt_scaffold
    from synth.prompting.render import Renderer

    recipe = load_recipe(ROOT / "recipes" / recipe_name)
    return FilterContext(question_field=recipe.task.question, formats=tuple(recipe.task.output_fields.items()),
                         scaffold_labels=prompt_scaffold(Renderer(), recipe.task),
                         prose_fields=prose_fields(seeds, recipe.task.output_fields))


@pytest.mark.skipif(not (DATA / "gsm8k").exists(), reason="needs ../shared/data (GSM8K train)")
def test_false_positives_on_gsm8k_train_stay_below_half_a_percent():
    rows = _gsm8k_rows()
    ctx = _context_of("gsm8k.yaml", rows[:100])
    gates = (ScaffoldEcho(), LeadingPunctuation(), DegenerateEnding())
    flagged = [r for r in rows if any(g.check({"question": r["question"], "answer": r["answer"]}, ctx) for g in gates)]
    assert len(flagged) / len(rows) <= 0.005, len(flagged)


@pytest.mark.skipif(not (DATA / "humaneval").exists(), reason="needs ../shared/data (HumanEval)")
def test_false_positives_on_humaneval_stay_below_half_a_percent():
    rows = _humaneval_rows()
    ctx = _context_of("humaneval.yaml", rows[:40])
    gates = (ScaffoldEcho(), LeadingPunctuation(), DegenerateEnding())
    fields = ("prompt", "test", "entry_point", "canonical_solution")
    flagged = [r for r in rows if any(g.check({f: r[f] for f in fields}, ctx) for g in gates)]
    assert len(flagged) / len(rows) <= 0.005, [r["task_id"] for r in flagged]


# stop 29's demo accepted it: all three solutions reached -1, so the majority agreed
NEGATIVE_APPLES = {
    "question": "Ava's mom bought apples from the store. She bought 24 apples, and she decided to eat 15 apples "
                "for breakfast and 10 apples for lunch. How many apples did Ava's mom have left after eating?",
    "answer": "Ava's mom bought a total of 24 apples.\nShe ate 15 apples for breakfast, leaving 24 - 15 = "
              "<<24-15=9>>9 apples.\nShe then ate 10 apples for lunch, leaving 9 - 10 = <<9-10=-1>>-1 apple.\n#### -1"}


def test_a_count_below_zero_is_refused():
    assert reason(NEGATIVE_APPLES) == "negative_answer"
    assert reason({**NEGATIVE_APPLES, "answer": NEGATIVE_APPLES["answer"].replace("-1", "1")}) != "negative_answer"


@pytest.mark.parametrize("question", [
    "The temperatures were -14 degrees, -8 degrees and +1 degree. What was the average?",
    "Three consecutive odd integers have a sum of \u2212147. What is the largest?",
    "The lake was 5 degrees below zero at dawn and cooled by 3 more. What was it then?",
])
def test_a_negative_answer_to_a_question_with_a_negative_quantity_passes(question):
    assert NegativeEnding().check({"question": question, "answer": "-14 - 8 + 1 = -21\n#### -21"}, CTX) is None


@pytest.mark.skipif(not (DATA / "gsm8k").exists(), reason="needs ../shared/data (GSM8K train)")
def test_every_negative_gsm8k_answer_passes():
    rows = _gsm8k_rows()
    negative = [r for r in rows if r["answer"].rsplit("####", 1)[-1].strip().startswith("-")]
    assert len(negative) == 3
    ctx = _context_of("gsm8k.yaml", rows[:100])
    assert [NegativeEnding().check(r, ctx) for r in negative] == [None, None, None]


# stop 29's last demo accepted both: questions about the task, not of it (the majority agreed)
@pytest.mark.parametrize("question", [
    "A teacher is giving a math test to her class. She decides to include a question that takes 4 steps of basic "
    "arithmetic and involves division. Here is the new question:\nA farmer has 360 apples. He wants to divide the "
    "apples equally among 4 baskets. How many apples will be in each basket?",
    "A teacher asked her students to solve a problem that involves multiplying two numbers together. She provided "
    "a step-by-step solution that ends with the number \"120\".",
])
def test_a_question_that_restates_the_task_is_refused(question):
    from synth.curation.filters import TemplateText

    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    ctx = FilterContext(question_field="question", task_markers=(recipe.task.description,))
    reject = TemplateText().check({"question": question, "answer": "360 / 4 = 90\n#### 90"}, ctx)
    assert reject is not None and reject.reason == "task_echo"
    # the same words in the answer are the solution's own ("a step-by-step solution"): not looked at there
    assert TemplateText().check({"question": QUESTION, "answer": question + "\n3 + 4 = 7\n#### 7"}, ctx) is None


@pytest.mark.skipif(not (DATA / "gsm8k").exists(), reason="needs ../shared/data (GSM8K train)")
def test_no_gsm8k_question_restates_the_recipe_task():
    from synth.curation.filters import TemplateText

    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    ctx = FilterContext(question_field="question", task_markers=(recipe.task.description,))
    assert [r["question"] for r in _gsm8k_rows() if TemplateText().check({"question": r["question"]}, ctx)] == []
