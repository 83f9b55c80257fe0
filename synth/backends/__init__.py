"""The backends: one list of kinds.

Each backend module defines its settings (pydantic, `kind: Literal[...]`) beside the
class; `BACKENDS` maps each kind to its settings class. The recipe reads its `backend`
section as the settings class of its kind, looked up here when the recipe is read, so a
typo in `backend.kind` names the kinds there are, and the UI form's choices come from
`backend_kinds()`. Adding a backend means writing one module with a settings class and a
backend class, and one line here (tests/test_extension.py adds a test-only one).

Importing this package imports no engine (no llama_cpp, no vllm): each backend imports
its engine inside `load()`.
"""

from __future__ import annotations

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


def backend_kinds() -> tuple[str, ...]:
    return tuple(BACKENDS)


def make_backend(settings: BackendSettingsBase) -> Backend:
    return settings.build()


__all__ = ["BACKENDS", "Backend", "BackendSettingsBase", "BackendUnavailable",
           "GenerationRequest", "GenerationResult", "Sampling", "SamplingSettings", "backend_kinds",
           "make_backend"]
