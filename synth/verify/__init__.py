"""Answer verifiers: one small contract, a registry keyed by the recipe's `verify.kind`.

A verifier looks at one generated sample (its task fields) and says whether its answer
holds up: `verify(fields, ctx) -> Verdict(ok, reason, detail)`. A rejection is a value
with a reason meant for the catalog (`"wrong_answer: disagrees with seed answer 72 (got
71)"`), never an exception. `verify_many` does a batch; the code verifier runs a few
sandboxes at once there.

What a verifier compares against travels in `VerifyContext`, built by the caller per
sample: the seed's reference answer (answer augmentation), or k sampled solutions
(self-consistency), or the seed's tests (code). Sampling those k solutions is the
caller's job: verifiers never call a model.

Members: `none` (accepts everything), `math` (synth/verify/math.py), `code`
(synth/verify/code.py, which runs programs only in a subprocess sandbox,
synth/verify/sandbox.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from synth.recipe import Verify


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None  # "<kind>: <human detail>" when rejected, None when accepted
    detail: dict[str, Any] = field(default_factory=dict)  # what was compared, for the catalog

    @property
    def kind(self) -> str:
        """The machine part of the reason (`wrong_answer`, `timeout`, ...), or `ok`."""
        if self.ok or not self.reason:
            return "ok"
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class VerifyContext:
    answer_field: str = "answer"  # the field that holds the answer / solution to check
    # math: answer augmentation compares with the seed's answer ...
    reference: str | None = None
    # ... else self-consistency compares with the majority of k sampled solutions
    solutions: tuple[str, ...] = ()
    # code (HumanEval layout): prompt + solution is the program, `test` defines check(candidate)
    prompt_field: str | None = "prompt"  # prepended when the sample has it (a bare function body)
    test_field: str = "test"
    entry_point_field: str = "entry_point"
    test: str | None = None  # the seed's tests, when the sample does not carry its own
    entry_point: str | None = None
    timeout_s: float = 5.0
    memory_mb: int = 256


class Verifier(Protocol):
    kind: str

    def verify(self, fields: dict[str, Any], ctx: VerifyContext) -> Verdict: ...

    def verify_many(self, items: Sequence[tuple[dict[str, Any], VerifyContext]]) -> list[Verdict]: ...


class NoVerifier:
    """`verify.kind: none`: every sample passes; the quality filters still run."""

    kind = "none"

    def verify(self, fields: dict[str, Any], ctx: VerifyContext) -> Verdict:
        return Verdict(True, None, {"verifier": "none"})

    def verify_many(self, items: Sequence[tuple[dict[str, Any], VerifyContext]]) -> list[Verdict]:
        return [self.verify(fields, ctx) for fields, ctx in items]


def _none() -> Verifier:
    return NoVerifier()


def _math() -> Verifier:
    from synth.verify.math import MathVerifier

    return MathVerifier()


def _code() -> Verifier:
    from synth.verify.code import CodeVerifier

    return CodeVerifier()


VERIFIERS: dict[str, Callable[[], Verifier]] = {
    "none": _none,
    "math": _math,
    "code": _code,
}


def make_verifier(kind: str) -> Verifier:
    try:
        factory = VERIFIERS[kind]
    except KeyError:
        raise ValueError(f"unknown verifier {kind!r}; write one of: {', '.join(sorted(VERIFIERS))}") from None
    return factory()


def context_from_settings(settings: "Verify", **per_sample: Any) -> VerifyContext:
    """A context with the recipe's limits (`verify.timeout_s`, `verify.memory_mb`) and the
    per-sample parts given as keywords (answer_field, reference, solutions, test, ...)."""
    return VerifyContext(timeout_s=settings.timeout_s, memory_mb=settings.memory_mb, **per_sample)


__all__ = ["VERIFIERS", "NoVerifier", "Verdict", "Verifier", "VerifyContext", "context_from_settings",
           "make_verifier"]
