"""A deterministic backend with no model, for tests and dry runs.

By default it answers every request with JSON that fills the request's schema from
the request key, so the same request always gets the same text. A test can instead
pass `script`: a function from request to text (or to an Exception to return as an
error value), to play malformed, empty or hostile outputs. `latency_s` makes each request
take that long (a sleep), so dispatch can be measured and faults timed without a model
(benchmarks/ray_scaling.py, the Ray tests).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Literal, Sequence

from pydantic import Field

from synth.backends.base import BackendSettingsBase, GenerationRequest, GenerationResult

Script = Callable[[GenerationRequest], "str | Exception"]


def fill_schema(schema: dict[str, Any] | None, key: str) -> Any:
    digest = hashlib.sha256(key.encode()).hexdigest()
    if not schema:
        return f"scripted text {digest[:8]}"
    kind = schema.get("type")
    if kind == "object":
        return {name: fill_schema(sub, f"{key}/{name}") for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        return [fill_schema(schema.get("items"), f"{key}/{i}") for i in range(n)]
    if kind == "integer":
        return int(digest[:6], 16) % 1000
    if kind == "number":
        return (int(digest[:6], 16) % 100000) / 100
    if kind == "boolean":
        return int(digest[0], 16) % 2 == 0
    if "enum" in schema:
        return schema["enum"][int(digest[:4], 16) % len(schema["enum"])]
    return f"scripted {key.rsplit('/', 1)[-1]} {digest[:10]}"


def asked(request: GenerationRequest) -> list[str]:
    """The output fields a request asks for: its schema's properties, or a free-text request's field."""
    if request.json_schema and request.json_schema.get("type") == "object":
        return list(request.json_schema.get("properties", {}))
    return list(request.expects)


def reply(request: GenerationRequest, values: dict[str, Any]) -> str:
    """A scripted reply as the request asks for it: a JSON object of the asked fields where it
    has a schema, else the one asked field's value as free text."""
    names = asked(request)
    if request.json_schema is not None:
        return json.dumps({name: values[name] for name in names if name in values})
    return str(values.get(names[0], "")) if names else ""


class ScriptedSettings(BackendSettingsBase):
    """`backend: {kind: scripted}`: no model; deterministic JSON (dry runs and tests)."""

    kind: Literal["scripted"] = "scripted"
    latency_s: float = Field(default=0.0, ge=0, le=60)  # simulated time per request (a sleep)

    def build(self) -> "ScriptedBackend":
        return ScriptedBackend.from_settings(self)


class ScriptedBackend:
    name = "scripted"

    def __init__(self, script: Script | None = None, model: str = "scripted", latency_s: float = 0.0) -> None:
        self.script = script
        self.model = model
        self.latency_s = latency_s
        self.calls: list[list[GenerationRequest]] = []  # every batch it was given, for tests

    @classmethod
    def from_settings(cls, settings) -> "ScriptedBackend":
        return cls(model=settings.model if settings.model != "embedded" else "scripted", latency_s=settings.latency_s)

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        if self.latency_s:
            time.sleep(self.latency_s * len(requests))  # one stream: requests one after the other
        results = []
        for request in requests:
            text = (self.script(request) if self.script
                    else (f"scripted {request.expects[0]} {hashlib.sha256(request.key.encode()).hexdigest()[:10]}"
                          if request.expects else fill_schema(None, request.key)) if request.json_schema is None
                    else json.dumps(fill_schema(request.json_schema, request.key)))
            prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
            if isinstance(text, Exception):
                results.append(GenerationResult(key=request.key, error=f"{type(text).__name__}: {text}",
                                                prompt_tokens=prompt_tokens))
                continue
            results.append(GenerationResult(
                key=request.key, text=text, finish_reason="stop",
                prompt_tokens=prompt_tokens, completion_tokens=len(text.split()),
            ))
        return results
