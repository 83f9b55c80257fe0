"""Heuristic quality filters: cheap checks that drop obviously bad samples.

Two of them come from the recipe and the prompts rather than from a list written here:
`format` checks the task's format constraints (synth/formats.py: `pattern`,
`min_words`, `max_words`), and `template_text` looks for our own instructions echoed
back: two or more word 3-grams of the prompt templates' literal text (`prompt_markers`,
taken from the templates a run renders), so a new or overridden template needs no new list.
Measured on real data: 7 of 7,473 GSM8K train rows (0.09 %) share one 3-gram with the
built-in generation templates ("the same way"), none shares two; 0 of 164 HumanEval problems
share one (docs/quality.md).

Each filter is one class: a pydantic model whose fields are its settings (`kind` names it,
`enabled: false` switches it off) and whose `check(fields, ctx) -> Reject | None` says why a
sample fails it. The recipe's `quality.filters` is a list of these, in the order they run
(docs/curation.md); a recipe without the list runs every filter of `FILTERS`, in the
registry's order, with its defaults. The first reject wins and becomes the sample's
`filtered` reason. What a run derives from its prompts, seeds and task (the prompts' text,
their line labels, the prose fields, the format constraints) is not a setting: it travels
in the `FilterContext` handed to `check`. Exact and near-duplicate detection need the other
samples (synth/dedup.py); the LLM judge is a separate step (synth/judge.py).

Adding a filter: one class here (`kind: Literal["<name>"] = "<name>"`, its settings, `check`)
and one line in `FILTERS`.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth.task.formats import OutputField, check_fields
from synth.reject import Reject


@dataclass(frozen=True)
class FilterContext:
    """What a run derives for the filters from its task, prompts and seeds (no user settings)."""

    question_field: str
    prompt_markers: tuple[str, ...] = ()  # our prompts' own text: none of its 3-grams may leak into samples
    formats: tuple[tuple[str, OutputField], ...] = ()  # output field -> its format constraints
    scaffold_labels: tuple[str, ...] = ()  # line labels our prompts write ("Question", "Example #"): `scaffold_labels`
    prose_fields: tuple[str, ...] = ()  # fields whose seed values all open with a letter or digit (`prose_fields`)
    task_markers: tuple[str, ...] = ()  # the task's own description: a question must not restate it


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


class Filter(BaseModel):
    """A filter and its settings: one entry of the recipe's `quality.filters`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # each filter narrows it to its own `Literal["<name>"]`: the registry key
    enabled: bool = True  # false: listed, not run

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        raise NotImplementedError(f"{type(self).__name__} must say what it refuses")


class LengthBounds(Filter):
    """A field with no letter or digit, a question under `min_chars`, any field over `max_chars`."""

    kind: Literal["length"] = "length"
    min_chars: int = Field(default=8, ge=0)  # the question field only
    max_chars: int = Field(default=8000, gt=0)  # every field

    @model_validator(mode="after")
    def _bounds(self) -> "LengthBounds":
        if self.max_chars <= self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) must be greater than min_chars ({self.min_chars})")
        return self

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            if not any(c.isalnum() for c in str(value)):
                return Reject("no_content", f"{field} has no letters or digits")
            n = len(str(value))
            if field == ctx.question_field and n < self.min_chars:
                return Reject("too_short", f"{field} has {n} characters, minimum {self.min_chars}")
            if n > self.max_chars:
                return Reject("too_long", f"{field} has {n} characters, maximum {self.max_chars}")
        return None


class Refusal(Filter):
    kind: Literal["refusal"] = "refusal"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        match = REFUSALS.search(_text(fields))
        return Reject("refusal", repr(match.group(0))) if match else None


class TemplateText(Filter):
    """Template syntax, chat-format tokens, or phrases of our own prompts in the sample; or a
    question that restates the task's description (two of its 3-word phrases: a question
    about the task, "... takes 4 steps of basic arithmetic. Here is the new question: ...").
    GSM8K train: 0 of 7,473 questions share two phrases with the shipped recipe's description."""

    kind: Literal["template_text"] = "template_text"
    # distinct 3-word phrases of our prompts a sample must hold to count as an echo. One is
    # what a model says on its own: the answer prompt asks to work "step by step", and
    # "Let's solve this step by step" is a good answer's first line. An echo copies a clause:
    # "... a JSON array with the key" holds four, the 1.5B demo's copied instruction nine.
    min_phrases: int = Field(default=2, ge=1)

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        match = TEMPLATE_LEFTOVER.search(_text(fields))
        if match:
            return Reject("template_text", repr(match.group(0)[:40]))
        echoed = word_ngrams(_text(fields), ECHO_N) & _marker_grams(ctx.prompt_markers, ECHO_N)
        if len(echoed) >= self.min_phrases:
            words = ", ".join(repr(" ".join(gram)) for gram in sorted(echoed)[:3])
            return Reject("prompt_echo", f"our prompt's words: {words}")
        # a question about the task rather than of it: "a question that takes 4 steps of basic
        # arithmetic", "a step-by-step solution that ends with 120" (the demo's system prompt)
        question = str(fields.get(ctx.question_field, ""))
        restated = word_ngrams(question, ECHO_N) & _marker_grams(ctx.task_markers, ECHO_N)
        if len(restated) >= self.min_phrases:
            words = ", ".join(repr(" ".join(gram)) for gram in sorted(restated)[:3])
            return Reject("task_echo", f"the {ctx.question_field} restates the task's description: {words}")
        return None


class Format(Filter):
    """The task's format constraints (pattern, word bounds) on every field that declares them."""

    kind: Literal["format"] = "format"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        return check_fields(fields, dict(ctx.formats)) if ctx.formats else None


class WrongScript(Filter):
    """Mostly non-Latin letters in the question: the model drifted into another language.
    A task in another script leaves it out of `quality.filters`."""

    kind: Literal["language"] = "language"
    min_latin: float = Field(default=0.6, ge=0, le=1)  # share of the question's letters that must be Latin
    min_letters: int = Field(default=20, ge=1)  # shorter questions are not judged

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        letters = [c for c in str(fields.get(ctx.question_field, "")) if c.isalpha()]
        if len(letters) < self.min_letters:
            return None
        latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
        if latin / len(letters) < self.min_latin:
            return Reject("wrong_language", f"{latin}/{len(letters)} Latin letters")
        return None


class Repetition(Filter):
    """A field that repeats itself: a small model stuck in a loop that still fit max_tokens.
    The default bound (0.75) is above every field of GSM8K train (largest share 0.32) and
    HumanEval (0.73, a test of near-identical asserts); five copies of a sentence reach 0.76."""

    kind: Literal["repetition"] = "repetition"
    max_share: float = Field(default=0.75, gt=0, le=1)  # of repeated word 4-grams; 1 lets every loop through
    min_words: int = Field(default=REPETITION_MIN_WORDS, ge=1)  # shorter fields are not judged

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            text = str(value)
            if len(_WORDS.findall(text)) < self.min_words:
                continue
            share = repeated_ngram_share(text)
            if share > self.max_share:
                return Reject("repetition", f"{field} repeats {share:.0%} of its 4-word phrases "
                                            f"(maximum {self.max_share:.0%})")
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

    kind: Literal["symbol_lines"] = "symbol_lines"
    max_share: float = Field(default=SYMBOL_LINES_MAX, gt=0, le=1)  # of lines without a letter or digit
    min_lines: int = Field(default=SYMBOL_LINES_MIN, ge=1)  # shorter fields are not judged

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            lines = str(value).split("\n")
            if len(lines) < self.min_lines:
                continue
            empty = sum(1 for line in lines if not _LETTER_OR_DIGIT.search(line))
            if empty / len(lines) > self.max_share:
                return Reject("symbol_lines", f"{field}: {empty} of its {len(lines)} lines hold no letter or digit "
                                              f"(maximum {self.max_share:.0%})")
        return None


_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


# -- gates derived from the prompts, the seeds and the field types ------------------------------

_LABEL_LINE = re.compile(r"^([A-Z][A-Za-z_]*(?: [A-Za-z_]+)?)( [0-9]+)?:(?=\s|$)", re.MULTILINE)


def scaffold_labels(rendered_prompts: Iterable[str]) -> tuple[str, ...]:
    """The line labels our prompts write (`Question: ...`, `Answer: ...`, `Example 2: ...`),
    read from prompts as they render: a numbered label becomes `Example #`."""
    labels = {match.group(1) + (" #" if match.group(2) else "")
              for text in rendered_prompts for match in _LABEL_LINE.finditer(text)}
    return tuple(sorted(labels))


@lru_cache(maxsize=64)
def _label_regex(labels: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(label).replace(r"\ \#", r" [0-9]+") for label in labels)
    return re.compile(rf"^(?:\*\*)?(?:{alternatives})(?:\*\*)?[ \t]*:", re.MULTILINE)


def prose_fields(seeds: Sequence[Mapping[str, Any]], names: Iterable[str]) -> tuple[str, ...]:
    """Fields whose seed values all open with a letter or a digit: a reply for them that
    opens with JSON or code punctuation is the scaffold's debris, not a question."""
    out = []
    for name in names:
        values = [str(row.get(name, "")).lstrip() for row in seeds if str(row.get(name, "")).strip()]
        if values and all(v[0].isalnum() for v in values):
            out.append(name)
    return tuple(out)


class ScaffoldEcho(Filter):
    """The prompt's scaffold again inside a field: a line opening with one of the labels our
    prompts write (`Question:`, `Answer:`, `Example 2:`), the model going on to the next
    example instead of stopping (`... #### 18\nQuestion: Tom has ...`). Labels come from the
    prompts as they render (`scaffold_labels`), so a new template needs no new list; a label
    indented in a docstring is not at a line's start and does not count."""

    kind: Literal["scaffold_echo"] = "scaffold_echo"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        if not ctx.scaffold_labels:
            return None
        pattern = _label_regex(ctx.scaffold_labels)
        for field, value in fields.items():
            match = pattern.search(str(value))
            if match:
                line = str(value)[match.start():].split("\n", 1)[0]
                return Reject("scaffold_echo", f"{field} repeats the prompt's scaffold: {line[:60]!r}")
        return None


_CLOSING = set("}])>;,")
_OPENING = set("{[<`|\\")


class LeadingPunctuation(Filter):
    """A field that opens with a closing bracket, `;` or `,` (no field starts so: the tail of
    some JSON or code the model was still writing, `}` / `);` / `]){`), or, where the field is
    prose, with an opening bracket or a code fence."""

    kind: Literal["leading_punctuation"] = "leading_punctuation"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            text = str(value).lstrip()
            if not text:
                continue
            if text[0] in _CLOSING or (field in ctx.prose_fields and text[0] in _OPENING):
                return Reject("leading_punctuation", f"{field} opens with {text[:12]!r}")
        return None


_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+")
_GROUPED = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DIGIT_RUN = re.compile(r"([0-9])\1{5,}")
# any calculation at all in a working: an operator between two numbers, or an `=` (algebra
# too: `x = 2350`); a hyphen between a number and a word (`3-day trip`) is not one.
# GSM8K train: 1 of 7,473 answers has none (it lists multiples: "2, 4, 6, 8 ... seconds")
_WORKED = re.compile(r"[0-9)]\s*(?:[-+*/\u00d7\u00f7]|\bx\b)\s*[-(\$]?[0-9(]|=")
MAX_FRACTION_DIGITS = 6  # more is a loop, not arithmetic a solution shows (GSM8K train: at most 2)


def _value(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


class DegenerateEnding(Filter):
    """The number in a field's required ending (the part its end-anchored `pattern` matches,
    e.g. `#### 72`) that no reasoning writes: commas that are not thousands separators
    (`10100,110,14,.49`), a run of 6+ equal digits after the point or more than 6 decimals
    (`120.0000000000000100`), or a number the working before it never reached, or no working
    at all, or a working that never calculates (no operator between numbers, no `=`: "she has
    $20 and it costs $10, so we subtract ... #### 10"). GSM8K train: 16 of 7,473 answers end on
    a number their working does not show (0.21 %, docs/quality.md), 1 never calculates (it
    counts multiples out), none trips the other rules."""

    kind: Literal["degenerate_ending"] = "degenerate_ending"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, token, working in numeric_endings(fields, ctx):
            reject = _degenerate(field, token, working)
            if reject is not None:
                return reject
        return None


def numeric_endings(fields: Mapping[str, Any], ctx: FilterContext) -> Iterator[tuple[str, str, str]]:
    """(field, the number its required ending closes on, the working before that ending) for
    each field whose format ends in a number (`#### 72`)."""
    for field, spec in ctx.formats:
        if field not in fields or not spec.required_ending or spec.pattern.startswith("^"):
            continue  # a pattern anchored at both ends is the whole field (a name), not an ending
        text = str(fields[field])
        match = _compiled_pattern(spec.pattern).search(text.rstrip())
        numbers = _NUMBER.findall(match.group(0)) if match else []
        if not numbers or not match.group(0).rstrip().endswith(numbers[-1]):
            continue  # the ending is not a number
        yield field, numbers[-1], text[:match.start()]


def _degenerate(field: str, token: str, working: str) -> Reject | None:
    digits = token.lstrip("-")
    if "," in digits and not _GROUPED.fullmatch(digits):
        return Reject("degenerate_ending", f"{field} ends on {token!r}: its commas are not thousands separators")
    fraction = digits.partition(".")[2]
    if len(fraction) > MAX_FRACTION_DIGITS or _DIGIT_RUN.search(fraction):
        return Reject("degenerate_ending", f"{field} ends on {token!r}: a run of digits no calculation writes")
    if not working.strip():
        return Reject("degenerate_ending", f"{field} is the final line alone ({token!r}): no working before it")
    value = _value(token)
    shown = {_value(t) for t in _NUMBER.findall(working)}
    if not shown:
        return Reject("degenerate_ending", f"{field}'s working has no number, yet it ends on {token!r}")
    if value is not None and value not in shown and -value not in shown:
        return Reject("degenerate_ending", f"{field} ends on {token!r}, a number its working never reaches")
    if not _WORKED.search(working):
        return Reject("degenerate_ending", f"{field}'s working never calculates: {token!r} is stated, not worked out")
    return None


# a negative quantity a question states: `-14 degrees`, `a sum of -147`, `minus 5`, `below zero`
_NEGATIVE_STATED = re.compile(r"(?<![\w)\]])[-\u2212][ ]?\$?[0-9.]|\b(minus|negative|below zero)\b", re.IGNORECASE)


class NegativeEnding(Filter):
    """A required ending's number that is below zero while the question states no negative
    quantity: a count gone below nothing (24 apples, 15 then 10 of them eaten: `#### -1`), a
    question that cannot be, which every solution answers the same way, so the majority vote
    agrees. GSM8K train: 3 of 7,473 answers are negative, each to a question that states a
    negative number (temperatures, `a sum of -147`); this gate lets all 3 through."""

    kind: Literal["negative_ending"] = "negative_ending"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        if _NEGATIVE_STATED.search(str(fields.get(ctx.question_field, ""))):
            return None
        for field, token, _ in numeric_endings(fields, ctx):
            value = _value(token)
            if value is not None and value < 0:
                return Reject("negative_answer", f"{field} ends on {token!r}, below zero, and the "
                                                 f"{ctx.question_field} states no negative quantity")
        return None


# a calculation written out: numbers joined by + - x * / and parentheses, then `= number`; the
# calculator notes of GSM8K (`<<16-3-4=9>>`) are the same with no spaces. `$` and thousands
# commas are read away; a word, a unit or a % between the numbers ends the match (not read).
_NUM = r"\(*\$?-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\)*"
_CALCULATION = re.compile(rf"(?<![\w.,/])({_NUM}(?:(?:[ \t]*[-+*/\u00d7\u00f7][ \t]*|[ \t]+x[ \t]+){_NUM})+)[ \t]*=[ \t]*\$?(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(?![\d.,]*[\w%/(])")


# a character just before or after a calculation that makes it part of something longer: an
# operator, a digit (`1 1/2`, `18 000`), a clock's colon
_CALC_JOINERS = set("+-*/x\u00d7\u00f7($=^:0123456789")


def _fraction_of(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_fraction_of(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _fraction_of(node.left), _fraction_of(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right  # ZeroDivisionError: not read
    raise ValueError("not arithmetic")


def _joins(neighbour: str, adjacent: str) -> bool:
    """Does the character beside a calculation (`neighbour`, spaces skipped) make it part of
    something longer? A colon only when it touches the number (a clock's `10:30`), not a
    label's (`Total: 750 + 630 = ...`)."""
    return bool(neighbour) and neighbour in _CALC_JOINERS and (neighbour != ":" or adjacent == ":")


def calculation_slips(text: str) -> list[tuple[str, Fraction]]:
    """Each written calculation of `text` whose result is wrong: (the calculation, its value).
    A result rounded to the decimals it shows counts as right (`10 / 3 = 3.33`), a whole one
    only when exact or the quotient (`17/3 = 5 and 2/3`): `456/9=51` is a slip."""
    slips = []
    text = text.replace("\u2212", "-").replace("\u2013", "-")  # minus and en dash
    for match in _CALCULATION.finditer(text):
        head = text[:match.start()]
        tail = text[match.end():]
        if _joins(head.rstrip()[-1:], head[-1:]) or _joins(tail.lstrip()[:1], tail[:1]) or head.endswith("and "):
            continue  # a piece of something longer (`24 students * 1/2 = 12`, `= 1 / 5`, `1 and 1/4`): not read
        expression = match.group(1)
        if ("$" in expression) != ("$" in match.group(0)[len(expression):]) or expression.count("/") > 1:
            continue  # dollars to cents, or `25 / 1/3`: a unit or a reading we cannot be sure of
        expression = expression.replace("$", "").replace(",", "")
        expression = expression.replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
        try:
            value = _fraction_of(ast.parse(expression, mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
            continue
        written = Fraction(match.group(2).replace(",", ""))
        decimals = len(match.group(2).partition(".")[2])
        quotient = "/" in expression and written.denominator == 1 and written == value.numerator // value.denominator
        # `10 / 3 = 3.33`; and a float's printed digits, whose last one may be off by one
        # (`360/42=8.571428571428572`, as Python prints it: the 1.5B demo wrote that)
        slack = max(Fraction(1, 2 * 10 ** decimals), abs(value) / 10 ** 12)
        rounded = decimals > 0 and abs(value - written) <= slack
        if value != written and not rounded and not quotient:  # `17/3 = 5 and 2/3`: a quotient
            slips.append((match.group(0).strip(), value))
    return slips


class ArithmeticSlip(Filter):
    """A calculation written out in the working whose result is wrong (`2 + 1 + 1/2 = 4.5`):
    the model's own arithmetic, checked. Every field but the question (a question may state a
    wrong sum on purpose). Majority votes miss a slip the model repeats in every solution."""

    kind: Literal["arithmetic"] = "arithmetic"

    def check(self, fields: Mapping[str, Any], ctx: FilterContext) -> Reject | None:
        for field, value in fields.items():
            if field == ctx.question_field:
                continue
            slips = calculation_slips(str(value))
            if slips:
                written, right = slips[0]
                return Reject("arithmetic_slip", f"{field} writes {written!r}; it is {_show_fraction(right)}")
        return None


def _show_fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.6g}"


@lru_cache(maxsize=256)
def _compiled_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# kind -> filter; the order is the default run order (a recipe without `quality.filters`)
FILTERS: dict[str, type[Filter]] = {
    "length": LengthBounds,
    "leading_punctuation": LeadingPunctuation,
    "refusal": Refusal,
    "template_text": TemplateText,
    "scaffold_echo": ScaffoldEcho,
    "language": WrongScript,
    "repetition": Repetition,
    "symbol_lines": SymbolLines,
    "format": Format,
    "degenerate_ending": DegenerateEnding,
    "arithmetic": ArithmeticSlip,
    "negative_ending": NegativeEnding,
}


def default_filters(settings: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Filter, ...]:
    """Every registered filter in the registry's order, with its defaults, or with
    `settings[kind]` (the recipe's `quality.min_chars`, `max_chars`, `max_repetition`)."""
    settings = settings or {}
    return tuple(cls(**settings.get(kind, {})) for kind, cls in FILTERS.items())


def first_problem(fields: Mapping[str, Any], ctx: FilterContext,
                  filters: Sequence[Filter] | None = None) -> Reject | None:
    """The first reject of `filters` (default: `default_filters()`), run in order; None if all pass."""
    for check in default_filters() if filters is None else filters:
        if not check.enabled:
            continue
        reject = check.check(fields, ctx)
        if reject is not None:
            return reject
    return None
