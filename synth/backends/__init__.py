"""Backend registry: a dict from the recipe's `backend.kind` to a factory.

Importing this package imports no engine (no llama_cpp, no vllm, no httpx client):
each backend module imports its engine inside `load()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from synth.backends.base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from synth.recipe import BackendSettings


def _llamacpp(settings: "BackendSettings") -> Backend:
    from synth.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend.from_settings(settings)


def _openai(settings: "BackendSettings") -> Backend:
    from synth.backends.openai import OpenAIBackend

    return OpenAIBackend.from_settings(settings)


def _vllm(settings: "BackendSettings") -> Backend:
    from synth.backends.vllm import VLLMBackend

    return VLLMBackend.from_settings(settings)


def _scripted(settings: "BackendSettings") -> Backend:
    from synth.backends.scripted import ScriptedBackend

    return ScriptedBackend.from_settings(settings)


BACKENDS: dict[str, Callable[["BackendSettings"], Backend]] = {
    "llamacpp": _llamacpp,
    "openai": _openai,
    "vllm": _vllm,
    "scripted": _scripted,  # deterministic, no model: dry runs and tests
}


def make_backend(settings: "BackendSettings") -> Backend:
    return BACKENDS[settings.kind](settings)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "make_backend"]
