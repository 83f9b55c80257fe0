"""Format constraints on output fields: the recipe refuses broken ones, the schema carries
them (in llama.cpp's grammar dialect where that backend reads it), the check after
parsing filters a miss with its reason, and the shipped recipes' constraints hold on the
real data they are seeded from. Echoed instructions are found from the templates' own text."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from synth.execution.pipeline import prompt_markers
from synth.prompting.parsing import json_schema_for
from synth.prompting.render import Renderer
from synth.curation.filters import FilterContext, first_problem
from synth.config.recipe import RecipeError, load_recipe
from synth.task.formats import (OutputField, check_format, gbnf_pattern, grammar_schema, ran_to_bound,
                           whole_string_pattern)
from tests.conftest import write_recipe
from tests.harness import start_run

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
GSM8K_ANSWER = load_recipe(ROOT / "recipes" / "gsm8k.yaml").task.output_fields["answer"]


def _fields(**answer) -> dict:
    return {"question": {"description": "a math word problem"}, "answer": {"description": "the answer", **answer}}


@pytest.mark.parametrize(("answer", "message"), [
    ({"pattern": "####[ ("}, "task.output_fields.answer.pattern"),
    ({"min_words": 10, "max_words": 5}, "min_words (10) must be <= max_words (5)"),
    ({"type": "integer", "pattern": "[0-9]+"}, "apply to text"),
    ({"min_words": 0}, "task.output_fields.answer.min_words"),
    ({"patern": "x"}, "unknown key 'patern'"),
])
def test_broken_constraints_are_refused_naming_the_field(tmp_path, answer, message):
    path = write_recipe(tmp_path, task={"name": "t", "description": "Grade-school math word problems.",
                                        "output_fields": _fields(**answer)})
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path)


def test_check_format_names_what_missed():
    spec = OutputField(description="d", pattern=r"####[ ]*-?[0-9]+$", min_words=3, max_words=8)
    assert check_format("answer", "3 + 2 = 5 #### 5", spec) is None
    assert check_format("answer", "The answer is 5.", spec).reason == "pattern_mismatch"
    assert check_format("answer", "#### 5", spec).reason == "too_few_words"
    assert check_format("answer", "one two three four five six seven eight #### 5", spec).reason == "too_many_words"


@pytest.mark.parametrize("pattern", [r"####[ ]*-?[0-9]+$", r"^def ", r"def [a-z_]+\(", r"^[a-z]+$", r"a|b"])
@pytest.mark.parametrize("text", ["x = 1 #### 42", "def f(x):", "abc", "a", "zzz", "", "#### 42 x"])
def test_the_schema_pattern_matches_whole_strings_exactly_where_search_finds(pattern, text):
    # (parsed values are stripped, so Python's `$` before a final newline never differs)
    assert bool(re.fullmatch(whole_string_pattern(pattern), text)) == bool(re.search(pattern, text))


def test_the_schema_carries_the_pattern_and_llamacpp_gets_its_dialect():
    from llama_cpp import llama_grammar

    schema = json_schema_for({"answer": GSM8K_ANSWER})
    assert schema["properties"]["answer"]["pattern"].startswith("^[\\s\\S]*(####")
    grammar = grammar_schema(schema)
    pattern = grammar["properties"]["answer"]["pattern"]
    assert "\\s" not in pattern and "\\d" not in pattern
    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(grammar))  # raises on syntax it cannot read
    assert '"###" "#"' in gbnf
    for recipe in ("humaneval.yaml", "gsm8k.yaml"):
        fields = load_recipe(ROOT / "recipes" / recipe).task.output_fields
        llama_grammar.json_schema_to_gbnf(json.dumps(grammar_schema(json_schema_for(fields))))
    # a free run before `#### N` is bounded so that the JSON can close within max_tokens
    bounded = grammar_schema(schema, max_tokens=200)["properties"]["answer"]["pattern"]
    assert bounded.startswith('^([^"\\\\]|\\\\.){0,500}(####')
    assert "pattern" not in grammar_schema(schema, patterns=False)["properties"]["answer"]  # backend.grammar_patterns
    # what the grammar dialect cannot say is left to the check after parsing
    assert gbnf_pattern(whole_string_pattern(r"\bdef\b")) is None
    assert "pattern" not in grammar_schema(json_schema_for({"a": OutputField(description="d", pattern=r"\bx")}))[
        "properties"]["a"]


def test_the_shipped_recipes_constraints_hold_on_their_real_data():
    source = SHARED / "gsm8k" / "train.jsonl"
    rows = [json.loads(line) for line in (source if source.exists() else ROOT / "recipes" / "seeds" /
                                          "gsm8k_120.jsonl").read_text().splitlines() if line.strip()]
    gsm = load_recipe(ROOT / "recipes" / "gsm8k.yaml").task.output_fields
    assert [r["answer"][-30:] for r in rows if check_format("answer", r["answer"], gsm["answer"])] == []
    assert [r["question"] for r in rows if check_format("question", r["question"], gsm["question"])] == []
    humaneval = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    path = humaneval if humaneval.exists() else ROOT / "recipes" / "seeds" / "humaneval_40.jsonl"
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as f:  # a clone without ../shared: the slice
        problems = [json.loads(line) for line in f if line.strip()]
    fields = load_recipe(ROOT / "recipes" / "humaneval.yaml").task.output_fields
    assert [(p["entry_point"], n) for p in problems for n, spec in fields.items()
            if n in p and check_format(n, p[n], spec)] == []
    assert check_format("prompt", "Write a function that adds two numbers.", fields["prompt"]).reason == \
        "pattern_mismatch"


def test_a_missed_format_is_a_filtered_row_with_its_reason(tmp_path):
    task = {"name": "t", "description": "Grade-school math word problems.",
            "output_fields": _fields(pattern=r"####[ ]*[0-9]+$")}
    path = write_recipe(tmp_path, task=task, generation={"target": 4, "budget": 8, "chunk_size": 8, "max_rounds": 1})

    from synth.backends.scripted import ScriptedBackend, asked, reply

    def script(request):
        if "answer" in asked(request):
            assert request.json_schema is None  # free text: the pattern is checked after, not in a grammar
            if "required form" in request.messages[-1]["content"]:
                return "seven"  # the extraction turn does not give the form either
            good = int(request.key[:2], 16) % 2
            return reply(request, {"answer": "3 + 4 = 7 #### 7" if good else "3 + 4 = 7, so seven."})
        return reply(request, {"question": f"How many pens are in box {request.key[:6]} after 4 more are added?"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.samples(("status", "reason", "fields"))
    filtered = [r for r in rows if r["status"] == "filtered"]
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert filtered and accepted
    assert all(r["reason"].startswith("pattern_mismatch: answer does not match") for r in filtered)
    assert all(r["fields"]["answer"].endswith("#### 7") for r in accepted)


# the 1.5B demo's answer that began with our answer prompt's instruction, copied (nine phrases)
DEMO_ECHO = ("Work out the answer to this question step by step, showing each calculation, and end with the line "
             "#### <number>.\n1. John is buying 50 apples.\n2. He wants 30 more.\n50 + 30 = <<50+30=80>>80\n#### 80")


def test_echoed_instructions_are_found_from_the_templates_text():
    ctx = FilterContext(question_field="question", prompt_markers=prompt_markers(Renderer()))
    question = "A farmer has 12 cows and sells 4. How many cows are left?"
    assert first_problem({"question": question, "answer": DEMO_ECHO}, ctx).reason == "prompt_echo"
    assert first_problem({"question": question, "answer": "12 - 4 = 8 #### 8"}, ctx) is None
    # one phrase of ours is what a model says on its own ("step by step"): not an echo
    own_words = "Let's solve this step by step.\nThe farmer has 12 - 4 = 8 cows left.\n#### 8"
    assert first_problem({"question": question, "answer": own_words}, ctx) is None
    # an overridden template brings its own words: nothing here lists them
    own = "Produce a fresh arithmetic puzzle about {{ question_field }}. Respond in JSON: {{ fields | join(', ') }}."
    markers = prompt_markers(Renderer({"generate/new_question.jinja2": own}))
    ctx = FilterContext(question_field="question", prompt_markers=markers)
    problem = first_problem({"question": question + " Produce a fresh arithmetic puzzle", "answer": "8"}, ctx)
    assert problem is not None and "produce a fresh" in problem.detail


GSM8K_ENDING = r"####[ ]*-?[0-9][0-9,]{0,12}(\.[0-9]{1,4})?$"


def test_an_ending_the_grammar_wrote_at_its_length_bound_is_found():
    """max_tokens 200 bounds each free run to 500 characters (as the grammar counts them in
    the JSON text: an escape is one): a field whose run reached it was ended by the grammar."""
    schema = json_schema_for({"question": OutputField(description="q"),
                              "answer": OutputField(description="a", pattern=GSM8K_ENDING)})
    reply = lambda answer: json.dumps({"question": "x" * 900, "answer": answer})  # noqa: E731
    assert ran_to_bound(schema, reply("y" * 500 + "####9482690437953.2981"), 200) == "answer"
    assert ran_to_bound(schema, reply("y" * 499 + "#### 12"), 200) is None  # the model ended it itself
    assert ran_to_bound(schema, reply("y\n" * 250 + "####3"), 200) == "answer"  # 250 x (y, \n) = 500 units
    raw_newlines = '{"answer": "' + "y\n" * 250 + '####3"}'  # as llama.cpp writes: not strict JSON
    assert ran_to_bound(schema, raw_newlines, 200) == "answer"
    assert ran_to_bound(schema, reply("y" * 600), 200) is None  # no match: the format filter's business
    assert ran_to_bound(schema, reply("y" * 500 + "####1"), None) is None  # no bound without max_tokens
    assert ran_to_bound(schema, '{"answer": "cut', 200) is None  # not JSON: parsing says truncated already
    # a pattern with free text before and after (HumanEval's `def name(`): either run counts
    code = json_schema_for({"code": OutputField(description="c", pattern=r"def [A-Za-z_][A-Za-z0-9_]*[ ]*\(")})
    assert ran_to_bound(code, json.dumps({"code": "def f(" + "z" * 100}), 40) == "code"
    assert ran_to_bound(code, json.dumps({"code": "#" * 100 + "def f(x): pass"}), 40) == "code"
    assert ran_to_bound(code, json.dumps({"code": "def f(x):\n    return x"}), 40) is None


def test_a_grammar_written_ending_is_a_truncated_reject_with_the_raw_text():
    from synth.backends.base import LENGTH_BOUND
    from synth.prompting.parsing import parse_fields

    fields = {"answer": OutputField(description="a", pattern=GSM8K_ENDING)}
    text = json.dumps({"answer": "y" * 500 + "####9482690437953.2981"})
    reject = parse_fields(text, fields, LENGTH_BOUND)
    assert reject.reason == "truncated" and "the grammar, not the model" in reject.detail
    assert parse_fields(text, fields, "stop") == {"answer": "y" * 500 + "####9482690437953.2981"}


@pytest.mark.slow
def test_the_embedded_model_run_to_the_bound_is_marked_by_the_backend():
    """SmolLM2-135M asked for a worked solution in at most 60 tokens (a 150-character bound
    on the text before `####`): where it ran to the bound, the grammar wrote `####` and the
    digits, and the backend says so; where it ended sooner it does not."""
    from synth.backends.base import LENGTH_BOUND, GenerationRequest, Sampling
    from synth.backends.llamacpp import LlamaCppBackend

    schema = json_schema_for({"answer": OutputField(description="a", pattern=GSM8K_ENDING)})
    prompt = ("Solve step by step, explaining every step: a farmer has 17 cows and buys 3 times as many. "
              "How many cows now? Reply as JSON with the key answer, ending with '#### <number>'.")
    backend = LlamaCppBackend(n_ctx=512)
    try:
        results = backend.generate([GenerationRequest(key=str(i), messages=({"role": "user", "content": prompt},),
                                                      sampling=Sampling(temperature=0.8, max_tokens=60, seed=i),
                                                      json_schema=schema) for i in range(8)])
    finally:
        backend.close()
    closed = []
    for result in results:
        try:
            closed.append((result, json.JSONDecoder(strict=False).raw_decode(result.text.strip())[0]["answer"]))
        except ValueError:
            assert result.finish_reason == "length"  # cut by max_tokens itself: parsing rejects it
    assert closed and all(re.search(GSM8K_ENDING, answer) for _, answer in closed)
    at_bound = [(r, a) for r, a in closed if len(a[:a.rindex("####")]) >= 150]
    assert at_bound, [r.text for r in results]
    assert all((r.finish_reason == LENGTH_BOUND) == ((r, a) in at_bound) for r, a in closed)


@pytest.mark.slow
def test_llamacpp_holds_the_model_to_a_pattern_through_its_grammar():
    """The embedded model, asked for a function name, writes what the pattern allows
    (it never would unprompted: `zz` and two digits)."""
    from synth.backends.base import GenerationRequest, Sampling
    from synth.backends.llamacpp import LlamaCppBackend

    schema = json_schema_for({"name": OutputField(description="d", pattern=r"^zz[0-9]{2}$")})
    prompt = "Name a Python function that adds two numbers. Reply as JSON with the key name."
    backend = LlamaCppBackend(n_ctx=512)
    try:
        results = backend.generate([GenerationRequest(key=str(i), messages=({"role": "user", "content": prompt},),
                                                      sampling=Sampling(temperature=1.0, max_tokens=24, seed=i),
                                                      json_schema=schema) for i in range(3)])
    finally:
        backend.close()
    assert [r.error for r in results] == [None] * 3
    assert all(re.fullmatch(r"zz[0-9]{2}", json.loads(r.text)["name"]) for r in results), [r.text for r in results]
