"""Answer verifiers, keyed by the recipe's `verify.kind`.

Members: `none` (accepts everything, synth/verify/none.py), `math` (final numbers
against the seed's answer or a majority of k sampled answers, synth/verify/math.py),
`code` (the solution against its tests, only in a subprocess sandbox,
synth/verify/code.py and sandbox.py). The contract is in synth/verify/base.py.
`VerifySettings` is the recipe's `verify` section: the union of the members' settings.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from synth.verify.base import Verdict, Verifier, VerifierSettingsBase, VerifyCase
from synth.verify.code import CodeVerifySettings
from synth.verify.math import MathVerifySettings
from synth.verify.none import NoVerifySettings

VERIFIERS: dict[str, type[VerifierSettingsBase]] = {
    "none": NoVerifySettings,
    "math": MathVerifySettings,
    "code": CodeVerifySettings,
}
DEFAULT_KIND = "none"

VerifySettings = Annotated[Union[tuple(VERIFIERS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]


def make_verifier(kind: str, **settings) -> Verifier:
    """A verifier by kind with default settings (tests, tools); runs build theirs from the recipe."""
    if kind not in VERIFIERS:
        raise ValueError(f"unknown verifier {kind!r}; write one of: {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[kind](**settings).build()


__all__ = ["VERIFIERS", "Verdict", "Verifier", "VerifierSettingsBase", "VerifyCase", "VerifySettings",
           "make_verifier"]
