"""Heuristic quality filters: cheap checks that drop obviously bad samples.

Each filter is a function `(fields, ctx) -> reason | None`; the first reason wins and
becomes the sample's `filtered` reason. Exact and near-duplicate detection live in
the catalog (they need the other samples); an LLM judge is a separate stage.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class FilterContext:
    min_chars: int
    max_chars: int
    question_field: str
    prompt_markers: tuple[str, ...] = ()  # phrases of our own prompts that must not leak into samples


REFUSALS = re.compile(
    r"\b(as an ai( language)? model|i('m| am) (sorry|unable)|i can(no|')t (help|assist|provide)|"
    r"i apologi[sz]e)\b", re.IGNORECASE)
TEMPLATE_LEFTOVER = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|<\|im_(start|end)\|>|\[INST\]|<</?s>>)", re.DOTALL)


def _text(fields: dict[str, Any]) -> str:
    return "\n".join(str(v) for v in fields.values())


def length_bounds(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    for name, value in fields.items():
        if not any(c.isalnum() for c in str(value)):
            return f"no_content: {name} has no letters or digits"
        n = len(str(value))
        if name == ctx.question_field and n < ctx.min_chars:
            return f"too_short: {name} has {n} characters, minimum {ctx.min_chars}"
        if n > ctx.max_chars:
            return f"too_long: {name} has {n} characters, maximum {ctx.max_chars}"
    return None


def refusal(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    match = REFUSALS.search(_text(fields))
    return f"refusal: {match.group(0)!r}" if match else None


def template_leftover(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    match = TEMPLATE_LEFTOVER.search(_text(fields))
    if match:
        return f"template_text: {match.group(0)[:40]!r}"
    text = _text(fields).lower()
    for marker in ctx.prompt_markers:
        if marker.lower() in text:
            return f"prompt_echo: {marker[:40]!r}"
    return None


def wrong_script(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    """Mostly non-Latin letters in the question: the model drifted into another language."""
    letters = [c for c in str(fields.get(ctx.question_field, "")) if c.isalpha()]
    if len(letters) < 20:
        return None
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    return f"wrong_language: {latin}/{len(letters)} Latin letters" if latin / len(letters) < 0.6 else None


FILTERS: dict[str, Callable[[dict[str, Any], FilterContext], str | None]] = {
    "length": length_bounds,
    "refusal": refusal,
    "template_text": template_leftover,
    "language": wrong_script,
}


def first_problem(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    for check in FILTERS.values():
        reason = check(fields, ctx)
        if reason:
            return reason
    return None


def normalize_for_hash(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())
