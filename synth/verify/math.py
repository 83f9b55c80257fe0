"""Math answers: pull the final number out of a solution and compare it.

`extract_final_number` reads the number a solution ends on, from the last final-answer
marker that carries one: GSM8K's `#### 72`, `\\boxed{72}`, `The answer is 72`,
`Answer: 72`. Without any marker it falls back to the last number in the text (the
verdict records which way it was read). It understands `$1,234.50`, `-5`, `−5`,
`3/4`, `\\frac{3}{4}`, `50%` (as 50) and a trailing period, and ignores GSM8K's
calculator notes `<<48/2=24>>`.

    >>> extract_final_number("48/2 = <<48/2=24>>24 clips.\\n#### 72")
    Decimal('72')
    >>> extract_final_number("So the cost is $1,234.50.")
    Decimal('1234.50')

The verdict: with a reference (the seed's answer: answer augmentation) the sample must
give the same number; otherwise with k sampled solutions (self-consistency) it must give
the number that more than half of them give. Left out: units, mixed numbers (`1 1/2`),
scientific notation, symbolic answers (`2\\sqrt{3}`), multiple answers.
"""

from __future__ import annotations

import math

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Sequence

from pydantic import Field

from synth.verify.base import Verdict, VerifierSettingsBase, VerifyCase

MAX_TEXT_CHARS = 100_000  # longer texts are cut from the front: the final answer is at the end

_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations
_NUM = re.compile(
    r"(?P<sign>[-−])?\s?\\?\$?\s?(?P<sign2>[-−])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s*/\s*(?P<den>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?))?"
)
_MARKERS = (
    re.compile(r"####\s*"),
    re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|was|:|=)\s*[:=]?\s*", re.IGNORECASE),
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_MARKER_WINDOW = 60  # the number must follow its marker closely, on the same line


def _to_decimal(match: re.Match[str]) -> Decimal | None:
    whole, frac, den = match.group("int"), match.group("frac"), match.group("den")
    if whole is None and frac is None:
        return None
    try:
        value = Decimal((whole or "0").replace(",", "") + (frac or ""))
        if den is not None:
            denominator = Decimal(den.replace(",", ""))
            if denominator == 0:
                return None
            value = value / denominator
    except InvalidOperation:
        return None
    if match.group("sign") or match.group("sign2"):
        value = -value
    return value


def _numbers(text: str) -> list[tuple[int, Decimal]]:
    found = []
    for match in _NUM.finditer(text):
        value = _to_decimal(match)
        if value is not None:
            found.append((match.start(), value))
    return found


def _clean_latex(text: str) -> str:
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return text.replace("{,}", ",").replace("\\!", "").replace("\\%", "%").replace("\\,", "")


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    out = []
    for match in _BOXED.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((match.start(), text[match.end():i - 1]))
    return out


def _read(text: str) -> tuple[Decimal | None, str]:
    """(number, how): how is `marker`, `last_number` or `none`."""
    text = _CALC.sub("", text[-MAX_TEXT_CHARS:])
    candidates: list[tuple[int, str]] = _boxed_contents(text)
    for marker in _MARKERS:
        for match in marker.finditer(text):
            window = text[match.end():match.end() + _MARKER_WINDOW].split("\n", 1)[0]
            candidates.append((match.start(), window))
    # the last marker that carries a number wins: "The answer is 72.\n#### 72" reads 72 once
    for _, window in sorted(candidates, key=lambda c: c[0], reverse=True):
        numbers = _numbers(_clean_latex(window))
        if numbers:
            return numbers[0][1], "marker"
    numbers = _numbers(_clean_latex(text))
    if numbers:
        return numbers[-1][1], "last_number"
    return None, "none"


def extract_final_number(text: str) -> Decimal | None:
    """The final numeric answer of a solution, or None when it has no number."""
    return _read(text)[0]


def same_number(a: Decimal, b: Decimal) -> bool:
    # a fraction divides to 28 digits: 1/3 must still equal 0.333... written out
    return a == b or abs(a - b) <= Decimal("1e-9") * max(Decimal(1), abs(a), abs(b))


def show(value: Decimal | None) -> str:
    """72 not 72.00, 0.75 not 7.5E-1; `none` for no number."""
    if value is None:
        return "none"
    text = format(value.normalize(), "f")
    return text if len(text) <= 24 else format(value, ".12g")


def plurality_answer(texts: Sequence[str]) -> tuple[Decimal | None, int]:
    """(the number most of `texts` end on, its votes); (None, 0) when none has a number.

    >>> plurality_answer(["#### 72", "The answer is 72.", "#### 71"])
    (Decimal('72'), 2)
    """
    counts: Counter[Decimal] = Counter()
    for text in texts:
        value = extract_final_number(text)
        if value is not None:
            key = next((k for k in counts if same_number(k, value)), value)  # 0.75 and 3/4 are one answer
            counts[key] += 1
    return counts.most_common(1)[0] if counts else (None, 0)


def majority_answer(texts: Sequence[str]) -> tuple[Decimal | None, int]:
    """(value, votes) when more than half of `texts` end on the same number; texts without
    a number count against it. Otherwise (None, votes of the most common number).

    >>> majority_answer(["#### 72", "The answer is 72.", "#### 71"])
    (Decimal('72'), 2)
    """
    value, votes = plurality_answer(texts)
    return (value, votes) if votes * 2 > len(texts) else (None, votes)


def _tally(texts: Sequence[str]) -> str:
    counts = Counter(show(extract_final_number(t)) for t in texts)
    return ", ".join(f"{value} x{n}" for value, n in counts.most_common())


class MathVerifySettings(VerifierSettingsBase):
    """`verify: {kind: math}`. A question without a reference answer (new_question) gets
    `samples` solutions in one batch; the number most of them reach is its label, and one
    solution that reached it is kept, when more than half of the `samples` agree and at least
    `min_agreement` of them do (self-consistency, Wang et al. 2023). A solution that did not
    parse (cut off, no number) counts against.

    `settle_early` (default on): sample the fewest solutions that could decide the vote
    first (2 of 3; 3 of 5), and the rest only where those disagree or one did not parse.
    When the first ones all agree, no further solution could change the label, so the label
    is the one all `samples` would give, for about a third fewer answer tokens on a model that
    agrees with itself. Such a sample records the solutions actually sampled (`n_solutions`
    2 of a planned 3, agreement 1.0)."""

    kind: Literal["math"] = "math"
    samples: int = Field(default=3, ge=1, le=32)
    min_agreement: float = Field(default=0.5, gt=0, le=1)
    settle_early: bool = True

    def build(self) -> "MathVerifier":
        return MathVerifier(self.samples, self.min_agreement, self.settle_early)


@dataclass(frozen=True)
class MathContext:
    answer_field: str = "answer"
    reference: str | None = None  # a reference answer: the sample must give its number ...
    solutions: tuple[str, ...] = ()  # ... else the number most of these k solutions give
    sampled: int = 0  # solutions sampled (those that did not parse count against); 0: len(solutions)
    min_agreement: float = 0.5


class MathVerifier:
    kind = "math"

    def __init__(self, samples: int = 3, min_agreement: float = 0.5, settle_early: bool = True) -> None:
        self.samples, self.min_agreement, self.settle_early = samples, min_agreement, settle_early

    def answer_copies(self, has_reference: bool) -> int:
        return 1 if has_reference else self.samples

    def first_wave(self, has_reference: bool) -> int:
        """The fewest solutions whose agreement decides the vote of all `samples`: more than
        half of them, and at least `min_agreement` of them."""
        copies = self.answer_copies(has_reference)
        if not self.settle_early or copies < 3:
            return copies
        return min(copies, max(copies // 2 + 1, math.ceil(self.min_agreement * copies - 1e-9)))

    def settled(self, answers: Sequence[str], sampled: int) -> bool:
        """Every one of the `sampled` first solutions parsed and ends on the same number."""
        value, votes = plurality_answer(answers)
        return value is not None and votes == sampled

    def context(self, case: VerifyCase) -> MathContext:
        """The strategy's reference answer when there is one (rephrase, augmentation: the seed's),
        else self-consistency over the sample's k answers."""
        if case.reference:
            return MathContext(case.answer_field, reference=str(case.reference))
        return MathContext(case.answer_field, solutions=tuple(str(a) for a in case.answers),
                           sampled=max(case.sampled, len(case.answers)), min_agreement=self.min_agreement)

    def verify(self, fields: dict[str, Any], ctx: MathContext) -> Verdict:
        text = str(fields.get(ctx.answer_field, ""))
        got, how = _read(text)
        detail: dict[str, Any] = {"verifier": "math", "got": show(got), "read_as": how}
        if got is None:
            return Verdict.failed(f"no_number: no final number in the {ctx.answer_field!r} field", detail)
        if ctx.reference is not None:
            expected = extract_final_number(ctx.reference)
            detail.update(mode="reference", expected=show(expected))
            if expected is None:
                return Verdict.failed("no_reference_number: the seed answer has no final number to compare with",
                               detail)
            if same_number(got, expected):
                return Verdict.passed(detail)
            return Verdict.failed(f"wrong_answer: disagrees with seed answer {show(expected)} (got {show(got)})",
                           detail)
        if ctx.solutions:
            k = max(ctx.sampled, len(ctx.solutions))
            majority, votes = plurality_answer(ctx.solutions)
            detail.update(mode="self_consistency", k=k, votes=votes, agreement=votes / k, expected=show(majority),
                          tally=_tally(ctx.solutions))
            if majority is None or votes * 2 <= k:
                return Verdict.failed(f"no_majority: no majority among {k} solutions ({detail['tally']})", detail)
            if votes / k < ctx.min_agreement:
                return Verdict.failed(f"low_agreement: {votes} of {k} solutions agree on {show(majority)}, "
                                      f"below min_agreement {ctx.min_agreement}", detail)
            if same_number(got, majority):
                return Verdict.passed(detail)
            return Verdict.failed(f"wrong_answer: disagrees with the majority answer {show(majority)} of {k} "
                                  f"solutions ({votes} votes; got {show(got)})", detail)
        return Verdict.failed("unverifiable: no seed answer and no sampled solutions to compare with; "
                              "give MathContext a reference or solutions", detail)

    def verify_many(self, items: Sequence[tuple[dict[str, Any], MathContext]]) -> list[Verdict]:
        return [self.verify(fields, ctx) for fields, ctx in items]
