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
