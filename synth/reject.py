"""The one shape of "this output is bad": `Reject(reason, detail)`.

Parsing, tree and classification answers, verifiers, filters and the judge all say
why they refuse something with a `Reject`: `reason` is a short machine word
(`invalid_json`, `wrong_answer`, `too_short`, ...) that reports count by, `detail` a
sentence for a person. `str(reject)` is the `"reason: detail"` the catalog stores.
Deep inside a parser, raise `Rejected(reject)` and catch it where the answer is judged.

>>> str(Reject("too_short", "question has 3 characters, minimum 8"))
'too_short: question has 3 characters, minimum 8'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reject:
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Rejected(Exception):
    """Raised with a `Reject` where returning one would thread through many calls."""

    def __init__(self, reject: Reject | str, detail: str | None = None) -> None:
        self.reject = reject if isinstance(reject, Reject) else Reject(reject, detail or "")
        super().__init__(str(self.reject))


def reason_of(text: str | None) -> str:
    """The machine part of a stored `"reason: detail"` string."""
    return (text or "").split(":", 1)[0]
