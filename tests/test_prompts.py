"""Prompt rendering: sandboxed, strict, and generated text stays data."""

from __future__ import annotations

import pytest

from synth.prompting.render import PromptError, Renderer, render_string
from synth.slot import Slot
from synth.strategies import STRATEGIES, GenerationContext
from synth.task.task import Task

TASK = Task(name="t", description="Grade-school math word problems.",
            output_fields={"question": {"description": "q"}, "answer": {"description": "a"}})
SEEDS = [{"question": "Q{{ 7*7 }} one?", "answer": "A one #### 1"}, {"question": "Q two?", "answer": "A two #### 2"}]


def test_missing_variable_is_an_error():
    with pytest.raises(PromptError):
        Renderer().render("generate/system.jinja2", {})


def test_generated_text_is_not_rendered_as_a_template():
    ctx = GenerationContext(TASK, SEEDS)
    slot = Slot(index=0, strategy="new_question", example_rows=(0,))
    messages = STRATEGIES["new_question"].render(STRATEGIES["new_question"].stages[0], slot, ctx, {})
    assert "Q{{ 7*7 }} one?" in messages[1]["content"]
    assert "49" not in messages[1]["content"]


def test_constraints_and_fields_appear():
    ctx = GenerationContext(TASK, SEEDS)
    slot = Slot(index=0, strategy="new_question", constraints=(("setting", "farm"),), example_rows=(1,))
    text = STRATEGIES["new_question"].render(STRATEGIES["new_question"].stages[0], slot, ctx, {})[1]["content"]
    assert "- setting: farm" in text and "Write only the question itself" in text  # one field: free text
    json_ctx = GenerationContext(TASK, SEEDS, output={"question": "json"})
    text = STRATEGIES["new_question"].render(STRATEGIES["new_question"].stages[0], slot, json_ctx, {})[1]["content"]
    assert "- setting: farm" in text and "keys: question" in text


def test_answer_stage_shows_question_and_examples():
    ctx = GenerationContext(TASK, SEEDS)
    slot = Slot(index=0, strategy="answer_augmentation", seed_row=1, example_rows=(0,))
    text = STRATEGIES["answer_augmentation"].render(STRATEGIES["answer_augmentation"].stages[0], slot, ctx, {"question": "How many?"})[1]["content"]
    assert "Question: How many?" in text and "A one #### 1" in text


def test_every_answer_prompt_opens_alike_whatever_the_slots_examples():
    """The answer prompt shows the first seed rows with an answer, not the slot's draw, so a
    server reads the shared opening once (BENCHMARKS.md, "The answer prompt's shared prefix");
    never the seed being answered, and as many as the slot has examples, one to two."""
    seeds = [*SEEDS, {"question": "Q three?", "answer": "A three #### 3"}, {"question": "Q four?", "answer": ""}]
    ctx = GenerationContext(TASK, seeds)
    stage = STRATEGIES["new_question"].stages[1]
    assert stage.writes == "answer"

    def prompt(slot: Slot, question: str) -> str:
        return STRATEGIES["new_question"].render(stage, slot, ctx, {"question": question})[1]["content"]

    first = prompt(Slot(index=0, strategy="new_question", example_rows=(2, 3)), "How many apples?")
    second = prompt(Slot(index=1, strategy="new_question", example_rows=(3, 1)), "How many pears?")
    opening = first[:first.index("How many apples?")]
    assert second.startswith(opening) and "A one #### 1" in opening and "A two #### 2" in opening
    assert "A three" not in opening
    one = prompt(Slot(index=2, strategy="new_question", example_rows=(3,)), "How many?")
    assert "A one #### 1" in one and "A two" not in one
    rewrite = STRATEGIES["answer_augmentation"]
    own = rewrite.render(rewrite.stages[0], Slot(index=3, strategy="answer_augmentation", seed_row=0,
                                                 example_rows=(0, 1)), ctx, {"question": "Q one?"})[1]["content"]
    assert "A one" not in own and "A two #### 2" in own and "A three #### 3" in own  # its own answer is the reference


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ ''|attr('__class__') }}",
])
def test_sandbox_refuses_escapes(payload):
    with pytest.raises(PromptError):
        render_string(payload, {})


def test_template_syntax_error_is_clear():
    with pytest.raises(PromptError, match="syntax error"):
        render_string("{% for x in %}", {})
