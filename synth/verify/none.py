"""`verify: {kind: none}` (the default): every answer passes; the quality filters still run."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from synth.verify.base import Verdict, VerifierSettingsBase, VerifyCase


class NoVerifySettings(VerifierSettingsBase):
    kind: Literal["none"] = "none"

    def build(self) -> "NoVerifier":
        return NoVerifier()


class NoVerifier:
    kind = "none"

    def answer_copies(self, has_reference: bool) -> int:
        return 1

    def first_wave(self, has_reference: bool) -> int:
        return self.answer_copies(has_reference)  # every answer at once

    def settled(self, answers: Sequence[str], sampled: int) -> bool:
        return True

    def context(self, case: VerifyCase) -> None:
        return None

    def verify(self, fields: dict[str, Any], ctx: Any) -> Verdict:
        return Verdict.passed({"verifier": "none"})

    def verify_many(self, items: Sequence[tuple[dict[str, Any], Any]]) -> list[Verdict]:
        return [self.verify(fields, ctx) for fields, ctx in items]
