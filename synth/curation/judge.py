"""The LLM judge: one batched request per chunk scores each candidate sample 1-5.

The candidate's text goes into the prompt as data (it is never rendered as a template).
The reply is constrained to `{"rationale": str, "score": 1..5}` where the backend can;
a reply that still does not parse is a `Reject`, and the recipe decides whether such a
sample is kept unjudged or filtered (`quality.judge.on_failure`). The pipeline
(synth/execution/pipeline.py) batches the judge requests of a chunk.
"""

from __future__ import annotations

from typing import Any

from synth.prompting.parsing import extract_json
from synth.prompting.render import Renderer, prompt_example
from synth.reject import Reject

TEMPLATE = "judge/score.jinja2"
SCORES = (1, 2, 3, 4, 5)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 400},
        "score": {"type": "integer", "enum": list(SCORES)},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}


def judge_messages(renderer: Renderer, task_description: str, fields: dict[str, Any],
                   constraints: tuple[tuple[str, str], ...] = ()) -> tuple[dict[str, str], ...]:
    """Through the run's renderer, so a user's override of the judge applies."""
    user = renderer.render(TEMPLATE, {
        "task_description": task_description,
        "fields": [(name, value) for name, value in fields.items()],
        "constraints": [tuple(pair) for pair in constraints],
    })
    return ({"role": "user", "content": user},)


def parse_judgement(text: str, finish_reason: str | None = None) -> tuple[int, str] | Reject:
    """(score, rationale), or why the reply is not a judgement."""
    if not text or not text.strip():
        return Reject("judge_empty", "the judge returned no text")
    data = extract_json(text)
    if isinstance(data, Reject):
        why = "truncated at max_tokens" if finish_reason == "length" else data.detail
        return Reject("judge_unparseable", why)
    if not isinstance(data, dict):
        return Reject("judge_unparseable", f"expected a JSON object, got {type(data).__name__}")
    score = data.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score.strip())
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or score not in SCORES:
        return Reject("judge_unparseable", f"score must be an integer 1-5, got {score!r}")
    rationale = str(data.get("rationale") or "").strip()[:1000]
    return score, rationale


@prompt_example(TEMPLATE)
def _example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems with worked solutions.",
            "fields": [("question", "Tom has 3 apples and buys 2 more. How many does he have?"),
                       ("answer", "3 + 2 = 5. #### 5")],
            "constraints": [("setting", "a shop"), ("operation", "addition")]}
