"""The verifier contract: one small protocol, and the values it trades in.

A verifier says whether a generated sample's answer holds up. The pipeline gives it a
`VerifyCase` per sample (its fields, the k sampled answers, the seed row, and the
reference answer the strategy names, if any); the verifier builds its own context from
that (`context(case)`: what to compare with, which tests to run) and then judges
candidate answers in a batch: `verify_many([(fields, context), ...]) -> [Verdict]`.
A failure is a `Verdict` holding a `Reject` (`wrong_answer: disagrees with seed answer
72 (got 71)`), never an exception. Verifiers never call a model: sampling the k answers
for self-consistency is the pipeline's job, asked for through `answer_copies`.

Adding a verifier: one module with a settings class (`kind: Literal[...]`, deriving
from `VerifierSettingsBase`) and a verifier class, and one line in verify/__init__.py. A
verifier can derive from `BaseVerifier` (one answer an attempt, all sampled at once, judged
one by one against its `VerifyCase`) and write only what differs, at least `verify`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from pydantic import BaseModel, ConfigDict

from synth.reject import Reject


@dataclass(frozen=True)
class Verdict:
    reject: Reject | None = None  # None: the answer holds up
    detail: dict[str, Any] = field(default_factory=dict)  # what was compared, for tests and debugging

    @classmethod
    def passed(cls, detail: dict[str, Any] | None = None) -> "Verdict":
        return cls(None, detail or {})

    @classmethod
    def failed(cls, text: str, detail: dict[str, Any] | None = None) -> "Verdict":
        """From `"<kind>: <human detail>"`."""
        reason, _, rest = text.partition(": ")
        return cls(Reject(reason, rest), detail or {})

    @property
    def ok(self) -> bool:
        return self.reject is None

    @property
    def reason(self) -> str | None:
        return None if self.reject is None else str(self.reject)

    @property
    def kind(self) -> str:
        """The machine part of the reason (`wrong_answer`, `timeout`, ...), or `ok`."""
        return "ok" if self.reject is None else self.reject.reason


@dataclass(frozen=True)
class VerifyCase:
    """What a verifier may look at for one sample."""

    fields: Mapping[str, Any]  # the sample's task fields
    answer_field: str
    question_field: str
    answers: tuple[Any, ...] = ()  # every sampled answer (k > 1 for self-consistency)
    seed: Mapping[str, Any] | None = None  # the seed row the sample came from, if any
    reference: str | None = None  # the answer the strategy says must come out (rephrase, augmentation)
    sampled: int = 0  # answers sampled for it (those that did not parse are not in `answers`)


class Verifier(Protocol):
    kind: str

    def answer_copies(self, has_reference: bool) -> int:
        """How many answers to sample per attempt (k for self-consistency, else 1)."""

    def first_wave(self, has_reference: bool) -> int:
        """How many of them to sample first; the rest only where `settled` says False."""

    def settled(self, answers: Sequence[str], sampled: int) -> bool:
        """Whether the first `sampled` answers (those that parsed) already decide the verdict."""

    def context(self, case: VerifyCase) -> Any:
        """What `verify` compares against for this sample (built once, used for every answer)."""

    def verify(self, fields: dict[str, Any], ctx: Any) -> Verdict: ...

    def verify_many(self, items: Sequence[tuple[dict[str, Any], Any]]) -> list[Verdict]: ...


class VerifierSettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self) -> Verifier:
        raise NotImplementedError(f"{type(self).__name__} must say which verifier it builds")


class BaseVerifier:
    """The contract's defaults: one answer an attempt, every answer sampled at once, the
    `VerifyCase` as the context, answers judged one by one. A subclass sets `kind` and writes
    `verify(fields, ctx)`, and whatever else differs."""

    kind: str

    def answer_copies(self, has_reference: bool) -> int:
        return 1

    def first_wave(self, has_reference: bool) -> int:
        return self.answer_copies(has_reference)  # every answer at once

    def settled(self, answers: Sequence[str], sampled: int) -> bool:
        return True

    def context(self, case: VerifyCase) -> Any:
        return case

    def verify(self, fields: dict[str, Any], ctx: Any) -> Verdict:
        raise NotImplementedError(f"{type(self).__name__} must write verify")

    def verify_many(self, items: Sequence[tuple[dict[str, Any], Any]]) -> list[Verdict]:
        return [self.verify(fields, ctx) for fields, ctx in items]
