"""Plain value types shared by every part of the factory.

A backend takes a batch of `GenerationRequest` and returns one `GenerationResult`
per request, in the same order. A failure is a value (`error` set), never an
exception that loses the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None  # per request: the same seed gives the same text


@dataclass(frozen=True)
class GenerationRequest:
    key: str  # caller's id for the request; results carry it back
    messages: tuple[dict[str, str], ...]  # chat messages, content as plain strings
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None  # constrain the output where the backend can


@dataclass(frozen=True)
class GenerationResult:
    key: str
    text: str = ""
    finish_reason: str | None = None  # "stop", "length", or None on error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None  # why the request failed; text is then usually empty

    @property
    def ok(self) -> bool:
        return self.error is None
