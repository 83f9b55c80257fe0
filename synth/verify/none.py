"""`verify: {kind: none}` (the default): every answer passes; the quality filters still run."""

from __future__ import annotations

from typing import Any, Literal

from synth.verify.base import BaseVerifier, Verdict, VerifierSettingsBase


class NoVerifySettings(VerifierSettingsBase):
    kind: Literal["none"] = "none"

    def build(self) -> "NoVerifier":
        return NoVerifier()


class NoVerifier(BaseVerifier):
    kind = "none"

    def context(self, case: Any) -> None:
        return None

    def verify(self, fields: dict[str, Any], ctx: Any) -> Verdict:
        return Verdict.passed({"verifier": "none"})
