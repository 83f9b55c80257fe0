"""The augmentation strategies, by name (after Chan et al. 2024, arXiv 2409.19759).

- new_question:        a question inside the leaf's constraints, then its answer
- question_rephrase:   a seed question rewritten, then answered
- answer_augmentation: a new answer to a seed question

`STRATEGIES` is the one list: the recipe validates names against it, the plan asks it
which strategies need seed rows, the pipeline asks it for stages and prompts.
"""

from __future__ import annotations

from synth.strategies.answer_augmentation import AnswerAugmentation
from synth.strategies.base import ANSWER, QUESTION, GenerationContext, Stage, Strategy
from synth.strategies.new_question import NewQuestion
from synth.strategies.question_rephrase import QuestionRephrase

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (NewQuestion(), QuestionRephrase(), AnswerAugmentation())}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; write one of: {', '.join(STRATEGIES)}") from None


__all__ = ["ANSWER", "QUESTION", "STRATEGIES", "GenerationContext", "Stage", "Strategy", "get_strategy"]
