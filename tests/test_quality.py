"""Heuristic quality filters: each one on what it must catch and on real data it must let
through, and the job turning a looping model answer into a `filtered` row with its reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from synth.curation.filters import FilterContext, Repetition, SymbolLines, first_problem, repeated_ngram_share
from synth.config.recipe import RecipeError, load_recipe
from tests.conftest import write_recipe
from tests.harness import start_run
from synth.backends.scripted import asked, reply

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CTX = FilterContext(question_field="question", prompt_markers=("Reply as JSON with the key",))
LOOP = "She buys 3 apples for 2 dollars each. " * 6


def gsm8k_rows() -> list[dict]:
    source = SHARED / "gsm8k" / "train.jsonl"
    if not source.exists():
        source = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
    return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("fields", "reason"), [
    ({"question": "Hi?", "answer": "4"}, "too_short"),
    ({"question": "x" * 9000, "answer": "4"}, "too_long"),
    ({"question": "What is 2 + 2?", "answer": "... !!"}, "no_content"),
    ({"question": "What is 2 + 2?", "answer": "I'm sorry, I cannot help with that."}, "refusal"),
    ({"question": "What is {{ n }} + 2?", "answer": "4"}, "template_text"),
    ({"question": "What is 2 + 2? Reply as JSON with the key answer", "answer": "4"}, "prompt_echo"),
    ({"question": "Сколько будет два плюс два, если сложить их вместе?", "answer": "4"}, "wrong_language"),
    ({"question": "How much does she spend on apples?", "answer": LOOP}, "repetition"),
    ({"question": "How much sugar is in all the cookies?",  # a padded 1.5B answer from the demo
      "answer": "(38 * 2) + (24 * 2) = 124 tablespoons of sugar}\n\xa0\n\xa0\n" + "\n" * 30 + "```obj####9482"},
     "symbol_lines"),
])
def test_each_filter_names_its_reason(fields, reason):
    problem = first_problem(fields, CTX)
    assert problem is not None and str(problem).startswith(reason), problem


def test_real_gsm8k_and_humaneval_pass_every_filter():
    rows = gsm8k_rows()
    flagged = [(r["question"][:60], first_problem({"question": r["question"], "answer": r["answer"]}, CTX))
               for r in rows]
    # but the arithmetic check, which finds GSM8K's own slips (`14*20=140`, `4+4+6 = 18`): 16 of 7,473
    slips = [f for f in flagged if f[1] and f[1].reason == "arithmetic_slip"]
    assert [f for f in flagged if f[1] and f not in slips] == []
    assert len(slips) <= 16
    humaneval = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    if humaneval.exists():
        with gzip.open(humaneval, "rt") as handle:
            problems = [json.loads(line) for line in handle]
        code_ctx = FilterContext(question_field="prompt")
        shares = [repeated_ngram_share(p[name]) for p in problems for name in ("prompt", "canonical_solution", "test")]
        assert max(shares) <= Repetition().max_share
        assert not [p["task_id"] for p in problems
                    if SymbolLines().check({k: p[k] for k in ("prompt", "canonical_solution", "test")}, code_ctx)]


def test_repetition_share_grows_with_the_loop():
    sentence = "The farmer sells eggs at the market every single morning. "
    shares = [repeated_ngram_share(sentence * k) for k in (1, 2, 5, 20)]
    assert shares[0] == 0.0 and shares == sorted(shares) and shares[-1] > 0.9
    # short answers repeat by chance and are left alone
    assert first_problem({"question": "What is 2 + 2 + 2?", "answer": "2 + 2 = 4, 4 + 2 = 6. 2 + 2 = 4"}, CTX) is None


def test_max_repetition_is_a_recipe_setting(tmp_path):
    off = write_recipe(tmp_path, quality={"max_repetition": 1.0})
    assert load_recipe(off).quality.max_repetition == 1.0
    with pytest.raises(RecipeError, match="max_repetition"):
        load_recipe(write_recipe(tmp_path, quality={"max_repetition": 0}))


def test_a_looping_answer_is_filtered_with_its_raw_text(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 2, "budget": 8, "chunk_size": 4, "max_rounds": 1})

    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": LOOP})
        return reply(request, {"question": f"How many apples does shop {request.key[:6]} sell in a week?"})

    from synth.backends.scripted import ScriptedBackend

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.samples(("status", "reason", "raw_text"))
    assert rows and all(r["status"] == "filtered" and r["reason"].startswith("repetition: answer") for r in rows)
    assert all("She buys 3 apples" in r["raw_text"] for r in rows)
