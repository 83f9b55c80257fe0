"""Answer verifiers, keyed by the recipe's `verify.kind`.

Members: `none` (accepts everything, synth/verify/none.py), `math` (final numbers
against the seed's answer or a majority of k sampled answers, synth/verify/math.py),
`code` (the solution against its tests, only in a subprocess sandbox,
synth/verify/code.py and sandbox.py). The contract is in synth/verify/base.py.
The recipe reads its `verify` section as the settings class of its kind, looked up in
`VERIFIERS` when the recipe is read: adding a verifier is one module and one line here
(tests/test_extension.py adds a test-only one).
"""

from __future__ import annotations

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


def make_verifier(kind: str, **settings) -> Verifier:
    """A verifier by kind with default settings (tests, tools); runs build theirs from the recipe."""
    if kind not in VERIFIERS:
        raise ValueError(f"unknown verifier {kind!r}; write one of: {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[kind](**settings).build()


__all__ = ["VERIFIERS", "Verdict", "Verifier", "VerifierSettingsBase", "VerifyCase",
           "make_verifier"]
