"""The LLM judge: one batched request per chunk scores each candidate sample 1-5.

The candidate's text goes into the prompt as data (it is never rendered as a template).
The reply is constrained to `{"rationale": str, "score": 1..5}` where the backend can;
a reply that still does not parse is a `ParseFailure`, and the recipe decides whether
such a sample is kept unjudged or filtered (`quality.judge.on_failure`).
"""

from __future__ import annotations

from typing import Any, Callable

from synth.parsing import ParseFailure, extract_json

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


def judge_messages(render: Callable[[str, dict[str, Any]], str], task_description: str,
                   fields: dict[str, Any], constraints: tuple[tuple[str, str], ...] = ()
                   ) -> tuple[dict[str, str], ...]:
    """`render` is the run's template renderer, so a user's override of the judge applies."""
    user = render(TEMPLATE, {
        "task_description": task_description,
        "fields": [(name, value) for name, value in fields.items()],
        "constraints": [tuple(pair) for pair in constraints],
    })
    return ({"role": "user", "content": user},)


def parse_judgement(text: str, finish_reason: str | None = None) -> tuple[int, str] | ParseFailure:
    """(score, rationale), or why the reply is not a judgement."""
    if not text or not text.strip():
        return ParseFailure("judge_empty", "the judge returned no text")
    data = extract_json(text)
    if isinstance(data, ParseFailure):
        why = "truncated at max_tokens" if finish_reason == "length" else data.detail
        return ParseFailure("judge_unparseable", why)
    if not isinstance(data, dict):
        return ParseFailure("judge_unparseable", f"expected a JSON object, got {type(data).__name__}")
    score = data.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score.strip())
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or score not in SCORES:
        return ParseFailure("judge_unparseable", f"score must be an integer 1-5, got {score!r}")
    rationale = str(data.get("rationale") or "").strip()[:1000]
    return score, rationale
