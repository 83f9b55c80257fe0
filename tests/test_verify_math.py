"""The math verifier: final-number extraction, majority vote, and the verdicts."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from synth.verify import VERIFIERS, Verdict, VerifyCase, make_verifier
from synth.verify.math import MathContext, MathVerifier, MathVerifySettings, extract_final_number, majority_answer

GSM8K = Path(__file__).resolve().parent.parent / "recipes" / "seeds" / "gsm8k_120.jsonl"
ROWS = [json.loads(line) for line in GSM8K.read_text().splitlines()]


def gold(answer: str) -> Decimal:
    """GSM8K's own reading: the text after '####', commas removed."""
    return Decimal(answer.split("####")[-1].strip().replace(",", ""))


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
    ("The answer is 72", "72"),
    ("so the answer is 72.", "72"),
    ("Final answer: 72", "72"),
    ("The final answer is $\\boxed{72}$.", "72"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("\\boxed{1{,}234}", "1234"),
    ("She paid $1,234.50 in total.\n#### $1,234.50", "1234.50"),
    ("The answer is -5.", "-5"),
    ("The answer is −5", "-5"),
    ("#### 3/4", "0.75"),
    ("The answer is 50%.", "50"),
    ("It costs .5 dollars. The answer is 0.5", "0.5"),
    ("#### 1,000,000", "1000000"),
])
def test_extract_final_number_formats(text, expected):
    assert extract_final_number(text) == Decimal(expected)


def test_the_last_marker_wins():
    assert extract_final_number("The answer is 12.\nWait, recheck.\nThe answer is 13.") == 13
    assert extract_final_number("\\boxed{5} ... on reflection #### 6") == 6
    assert extract_final_number("#### 6\nAlternatively \\boxed{7}") == 7
    # a marker that carries no number does not hide an earlier one
    assert extract_final_number("The answer is 9.\nThe answer is above.") == 9


def test_no_marker_falls_back_to_the_last_number():
    assert extract_final_number("She has 3 apples and buys 4 more, so 7 apples.") == 7


@pytest.mark.parametrize("text", ["", "I do not know.", "The answer is unclear.", "####", "\\boxed{x}" * 1])
def test_no_number_is_none(text):
    assert extract_final_number(text) is None


def test_calculator_notes_do_not_count():
    assert extract_final_number("48/2 = <<48/2=24>>24") == 24


def test_every_gsm8k_seed_answer_reads_as_its_gold_number():
    assert len(ROWS) == 120
    for row in ROWS:
        assert extract_final_number(row["answer"]) == gold(row["answer"]), row["answer"][-80:]


def test_huge_text_does_not_hang_and_reads_the_end():
    assert extract_final_number("1 " * 200_000 + "#### 42") == 42


# --- majority vote --------------------------------------------------------------------------

def test_majority_answer_counts_equal_numbers_written_differently():
    assert majority_answer(["#### 72", "The answer is 72.0", "#### 71"]) == (Decimal(72), 2)
    value, votes = majority_answer(["\\boxed{\\frac{3}{4}}", "#### 0.75", "#### 1"])
    assert value == Decimal("0.75") and votes == 2


def test_majority_answer_needs_more_than_half():
    assert majority_answer(["#### 72", "#### 71", "#### 70"]) == (None, 1)
    assert majority_answer(["#### 72", "#### 71"]) == (None, 1)  # a tie
    assert majority_answer(["#### 72", "no idea", "nothing"]) == (None, 1)  # no number counts against
    assert majority_answer([]) == (None, 0)
    assert majority_answer(["#### 5", "#### 5", "#### 4", "#### 5", "x"]) == (Decimal(5), 3)


# --- verdicts ---------------------------------------------------------------------------------

def ctx(**kw) -> MathContext:
    return MathContext(answer_field="answer", **kw)


def test_registry_has_the_three_kinds_and_math_is_the_math_verifier():
    assert set(VERIFIERS) == {"none", "math", "code"}
    assert isinstance(make_verifier("math"), MathVerifier)
    with pytest.raises(ValueError, match="write one of: code, math, none"):
        make_verifier("maths")


def test_none_verifier_accepts():
    assert make_verifier("none").verify({"answer": "anything"}, ctx()).ok


def test_answer_augmentation_agrees_with_the_seed_answer_on_every_gsm8k_row():
    verifier = MathVerifier()
    items = []
    for row in ROWS:
        # a new solution path, written the other way round, ending on the same number
        rewritten = f"Let me work it out again.\nSo the answer is {gold(row['answer'])}."
        items.append(({"question": row["question"], "answer": rewritten}, ctx(reference=row["answer"])))
    verdicts = verifier.verify_many(items)
    assert all(v.ok for v in verdicts), [v.reason for v in verdicts if not v.ok][:3]


def test_answer_augmentation_rejects_a_wrong_number_on_every_gsm8k_row():
    verifier = MathVerifier()
    for row in ROWS:
        wrong = gold(row["answer"]) + 1
        body = re.sub(r"####.*$", f"#### {wrong}", row["answer"])
        verdict = verifier.verify({"answer": body}, ctx(reference=row["answer"]))
        assert not verdict.ok
        assert verdict.kind == "wrong_answer"
        assert f"disagrees with seed answer {gold(row['answer'])} (got {wrong})" in verdict.reason


def test_reason_strings_are_exact():
    verifier = MathVerifier()
    wrong = verifier.verify({"answer": "#### 71"}, ctx(reference="#### 72"))
    assert wrong == Verdict.failed("wrong_answer: disagrees with seed answer 72 (got 71)", wrong.detail)
    assert wrong.detail["expected"] == "72" and wrong.detail["got"] == "71"
    none = verifier.verify({"answer": "I could not solve it"}, ctx(reference="#### 72"))
    assert none.reason == "no_number: no final number in the 'answer' field"
    tie = verifier.verify({"answer": "#### 72"}, ctx(solutions=("#### 72", "#### 71", "#### 70")))
    assert tie.reason.startswith("no_majority: no majority among 3 solutions")
    assert tie.kind == "no_majority"


def test_self_consistency_accepts_the_majority_and_rejects_the_rest():
    verifier = MathVerifier()
    solutions = ("... #### 72", "The answer is 72.", "... #### 70")
    good = verifier.verify({"answer": "\\boxed{72}"}, ctx(solutions=solutions))
    assert good.ok and good.detail["votes"] == 2 and good.detail["k"] == 3
    bad = verifier.verify({"answer": "#### 70"}, ctx(solutions=solutions))
    assert not bad.ok
    assert bad.reason == "wrong_answer: disagrees with the majority answer 72 of 3 solutions (2 votes; got 70)"


def test_a_seed_without_a_number_and_a_context_without_anything_are_rejected_with_reasons():
    verifier = MathVerifier()
    assert verifier.verify({"answer": "#### 4"}, ctx(reference="no number here")).kind == "no_reference_number"
    assert verifier.verify({"answer": "#### 4"}, ctx()).kind == "unverifiable"


def test_the_verifier_builds_its_own_context_from_the_case():
    verifier = MathVerifySettings(samples=5).build()
    assert verifier.answer_copies(has_reference=False) == 5 and verifier.answer_copies(has_reference=True) == 1
    case = VerifyCase(fields={"answer": "3"}, answer_field="answer", question_field="question", reference="#### 3")
    context = verifier.context(case)
    assert context.reference == "#### 3" and verifier.verify({"answer": "3"}, context).ok
    majority = verifier.context(VerifyCase(fields={}, answer_field="answer", question_field="question",
                                           answers=("#### 4", "#### 4", "#### 5")))
    assert majority.reference is None and majority.solutions == ("#### 4", "#### 4", "#### 5")
    assert make_verifier("math").verify({"answer": "#### 4"}, majority).ok
