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
    max_repetition: float = 0.75  # share of repeated word 4-grams above which a field is a loop


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


REPETITION_MIN_WORDS = 30  # shorter fields repeat by chance ("2 + 2 = 4, so 4 + 4 = 8")
_WORDS = re.compile(r"\w+")


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it: 0 for text
    that never repeats itself, towards 1 for a model looping on one sentence."""
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repetition(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    """A field that repeats itself: a small model stuck in a loop that still fit max_tokens.
    The default bound (0.75) is above every field of GSM8K train (largest share 0.32) and
    HumanEval (0.73, a test of near-identical asserts); five copies of a sentence reach 0.76."""
    for name, value in fields.items():
        text = str(value)
        if len(_WORDS.findall(text)) < REPETITION_MIN_WORDS:
            continue
        share = repeated_ngram_share(text)
        if share > ctx.max_repetition:
            return f"repetition: {name} repeats {share:.0%} of its 4-word phrases (maximum {ctx.max_repetition:.0%})"
    return None


FILTERS: dict[str, Callable[[dict[str, Any], FilterContext], str | None]] = {
    "length": length_bounds,
    "refusal": refusal,
    "template_text": template_leftover,
    "language": wrong_script,
    "repetition": repetition,
}


def first_problem(fields: dict[str, Any], ctx: FilterContext) -> str | None:
    for check in FILTERS.values():
        reason = check(fields, ctx)
        if reason:
            return reason
    return None


def normalize_for_hash(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())
