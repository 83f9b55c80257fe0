"""The augmentation strategies, by name (after Chan et al. 2024, arXiv 2409.19759).

- new_question:        a question inside the leaf's constraints, then its answer
- question_rephrase:   a seed question rewritten, then answered
- answer_augmentation: a new answer to a seed question

`STRATEGIES` is the one list, in the style of `BACKENDS` and `VERIFIERS`: a name, one
line per member. The recipe validates `generation.strategy` and `strategy_weights`
against it, the plan asks it which strategies need seed rows, the pipeline asks it for
stages and prompts. Adding a strategy: one module with a `Strategy` subclass (and its
templates), and one line here.
"""

from __future__ import annotations

from synth.strategies.answer_augmentation import AnswerAugmentation
from synth.strategies.base import ANSWER, QUESTION, GenerationContext, Stage, Strategy
from synth.strategies.new_question import NewQuestion
from synth.strategies.question_rephrase import QuestionRephrase

STRATEGIES: dict[str, Strategy] = {
    "new_question": NewQuestion(),
    "question_rephrase": QuestionRephrase(),
    "answer_augmentation": AnswerAugmentation(),
}
DEFAULT_KIND = "new_question"


def strategy_names() -> tuple[str, ...]:
    return tuple(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; write one of: {', '.join(STRATEGIES)}") from None


__all__ = ["ANSWER", "DEFAULT_KIND", "QUESTION", "STRATEGIES", "GenerationContext", "Stage", "Strategy", "get_strategy",
           "strategy_names"]
