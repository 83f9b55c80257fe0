"""The backends: one list of kinds, and the recipe's `backend` section as a union of
their settings.

Each backend module defines its settings (pydantic, `kind: Literal[...]`) beside the
class; `BACKENDS` maps each kind to its settings class, and `BackendSettings` is the
discriminated union the recipe validates against, so a typo in `backend.kind` names
the kinds there are, and the UI form's choices come from `backend_kinds()`. Adding a
backend means writing one module with a settings class and a backend class, and one
line here.

Importing this package imports no engine (no llama_cpp, no vllm): each backend imports
its engine inside `load()`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from synth.backends.base import (Backend, BackendSettingsBase, BackendUnavailable, GenerationRequest,
                                 GenerationResult, Sampling, SamplingSettings)
from synth.backends.llamacpp import LlamaCppSettings
from synth.backends.openai import OpenAISettings
from synth.backends.scripted import ScriptedSettings
from synth.backends.vllm import VLLMSettings

BACKENDS: dict[str, type[BackendSettingsBase]] = {
    "llamacpp": LlamaCppSettings,
    "openai": OpenAISettings,
    "vllm": VLLMSettings,
    "scripted": ScriptedSettings,  # deterministic, no model: dry runs and tests
}
DEFAULT_KIND = "llamacpp"

# the union is built from the registry, so the list of kinds is written once
BackendSettings = Annotated[Union[tuple(BACKENDS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]


def backend_kinds() -> tuple[str, ...]:
    return tuple(BACKENDS)


def make_backend(settings: BackendSettingsBase) -> Backend:
    return settings.build()


__all__ = ["BACKENDS", "Backend", "BackendSettings", "BackendSettingsBase", "BackendUnavailable",
           "GenerationRequest", "GenerationResult", "Sampling", "SamplingSettings", "backend_kinds",
           "make_backend"]
