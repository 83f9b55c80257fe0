"""The one contract every generation backend keeps.

Constructors are cheap (no model, no connection); `load()` takes the model or the
connection, `close()` releases it. `generate()` takes a whole batch and returns
results in the same order, with failures as error values.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from synth.types import GenerationRequest, GenerationResult


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str  # what the catalog records as the model

    def load(self) -> None: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def close(self) -> None: ...


class BackendUnavailable(RuntimeError):
    """The backend cannot be used on this machine; the message says what to install."""
