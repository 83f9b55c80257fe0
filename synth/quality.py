"""Heuristic quality filters: cheap checks that drop obviously bad samples.

Two of them come from the recipe and the prompts rather than from a list written here:
`format` checks the task's format constraints (synth/formats.py: `pattern`,
`min_words`, `max_words`), and `template_text` looks for our own instructions echoed
back: the word 3-grams of the prompt templates' literal text (`prompt_markers`, taken
from the templates a run renders), so a new or overridden template needs no new list.
Measured on real data: 7 of 7,473 GSM8K train rows (0.09 %) and 0 of 164 HumanEval
problems share a 3-gram with the built-in generation templates ("the same way"); 4-grams
flag none but miss echoes such as "... a JSON array with the key".

Each filter is a small class with a `name` and `check(fields, ctx) -> Reject | None`;
the first reject wins and becomes the sample's `filtered` reason. Exact and
near-duplicate detection need the other samples (synth/dedup.py); the LLM judge is a
separate step (synth/judge.py). Adding a filter: one class here, one entry in FILTERS.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Mapping

from synth.formats import OutputField, check_fields
from synth.reject import Reject


@dataclass(frozen=True)
class FilterContext:
    min_chars: int
    max_chars: int
    question_field: str
    prompt_markers: tuple[str, ...] = ()  # our prompts' own text: none of its 3-grams may leak into samples
    max_repetition: float = 0.75  # share of repeated word 4-grams above which a field is a loop
    formats: tuple[tuple[str, OutputField], ...] = ()  # output field -> its format constraints


REFUSALS = re.compile(
    r"\b(as an ai( language)? model|i('m| am) (sorry|unable)|i can(no|')t (help|assist|provide)|"
    r"i apologi[sz]e)\b", re.IGNORECASE)
TEMPLATE_LEFTOVER = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|<\|im_(start|end)\|>|\[INST\]|<</?s>>)", re.DOTALL)
ECHO_N = 3  # words in a phrase of our prompts that counts as echoed
REPETITION_MIN_WORDS = 30  # shorter fields repeat by chance ("2 + 2 = 4, so 4 + 4 = 8")
_WORDS = re.compile(r"\w+")


def _text(fields: Mapping[str, Any]) -> str:
    return "\n".join(str(v) for v in fields.values())


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it: 0 for text
    that never repeats itself, towards 1 for a model looping on one sentence."""
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@lru_cache(maxsize=64)
def _marker_grams(markers: tuple[str, ...], n: int) -> frozenset[tuple[str, ...]]:
    return frozenset(gram for marker in markers for gram in word_ngrams(marker, n))


class Filter:
    name: ClassVar[str]

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        raise NotImplementedError


class LengthBounds(Filter):
    name = "length"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            if not any(c.isalnum() for c in str(value)):
                return Reject("no_content", f"{field} has no letters or digits")
            n = len(str(value))
            if field == ctx.question_field and n < ctx.min_chars:
                return Reject("too_short", f"{field} has {n} characters, minimum {ctx.min_chars}")
            if n > ctx.max_chars:
                return Reject("too_long", f"{field} has {n} characters, maximum {ctx.max_chars}")
        return None


class Refusal(Filter):
    name = "refusal"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        match = REFUSALS.search(_text(fields))
        return Reject("refusal", repr(match.group(0))) if match else None


class TemplateText(Filter):
    """Template syntax, chat-format tokens, or a phrase of our own prompts in the sample."""

    name = "template_text"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        match = TEMPLATE_LEFTOVER.search(_text(fields))
        if match:
            return Reject("template_text", repr(match.group(0)[:40]))
        echoed = word_ngrams(_text(fields), ECHO_N) & _marker_grams(ctx.prompt_markers, ECHO_N)
        if echoed:
            words = ", ".join(repr(" ".join(gram)) for gram in sorted(echoed)[:3])
            return Reject("prompt_echo", f"our prompt's words: {words}")
        return None


class Format(Filter):
    """The task's format constraints (pattern, word bounds) on every field that declares them."""

    name = "format"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        return check_fields(fields, dict(ctx.formats)) if ctx.formats else None


class WrongScript(Filter):
    """Mostly non-Latin letters in the question: the model drifted into another language."""

    name = "language"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        letters = [c for c in str(fields.get(ctx.question_field, "")) if c.isalpha()]
        if len(letters) < 20:
            return None
        latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
        return Reject("wrong_language", f"{latin}/{len(letters)} Latin letters") if latin / len(letters) < 0.6 else None


class Repetition(Filter):
    """A field that repeats itself: a small model stuck in a loop that still fit max_tokens.
    The default bound (0.75) is above every field of GSM8K train (largest share 0.32) and
    HumanEval (0.73, a test of near-identical asserts); five copies of a sentence reach 0.76."""

    name = "repetition"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            text = str(value)
            if len(_WORDS.findall(text)) < REPETITION_MIN_WORDS:
                continue
            share = repeated_ngram_share(text)
            if share > ctx.max_repetition:
                return Reject("repetition", f"{field} repeats {share:.0%} of its 4-word phrases "
                                            f"(maximum {ctx.max_repetition:.0%})")
        return None


SYMBOL_LINES_MIN = 8  # lines a field needs before the share means anything
SYMBOL_LINES_MAX = 0.8  # share of lines without a letter or digit above which a field is filler


class SymbolLines(Filter):
    """A field that is mostly lines without a letter or a digit: blank lines, code fences,
    lone braces. Small models pad with them until the grammar lets the required ending in
    (`...sugar}` and 30 blank lines, then `#### 9482690437953.2981`), and word-based checks
    cannot see them. The bound (80 % of at least 8 lines) is above every field of GSM8K
    train (12.5 % at most) and HumanEval (67 %, a test of blank lines and brackets); the two
    padded 1.5B demo answers had 94 %."""

    name = "symbol_lines"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            lines = str(value).split("\n")
            if len(lines) < SYMBOL_LINES_MIN:
                continue
            empty = sum(1 for line in lines if not _LETTER_OR_DIGIT.search(line))
            if empty / len(lines) > SYMBOL_LINES_MAX:
                return Reject("symbol_lines", f"{field}: {empty} of its {len(lines)} lines hold no letter or digit "
                                              f"(maximum {SYMBOL_LINES_MAX:.0%})")
        return None


_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


FILTERS: dict[str, Filter] = {f.name: f for f in (LengthBounds(), Refusal(), TemplateText(), WrongScript(),
                                                  Repetition(), SymbolLines(), Format())}


def first_problem(fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
    for check in FILTERS.values():
        reject = check.check(fields, ctx)
        if reject is not None:
            return reject
    return None
