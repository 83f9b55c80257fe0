"""The embedded CPU backend's settings, and its one-stream path: llama-cpp-python in process.

`parallel: N` (N >= 2) builds `LlamaServerBackend` (synth/backends/llama_server.py), which
decodes N sequences together in llama.cpp's own server; `parallel: 1` builds `LlamaCppBackend`
here: one sequence at a time, JSON-schema constrained output through the grammar that
llama.cpp builds from `response_format`. `llama_cpp` is imported in `load()`, so constructing
this backend costs nothing.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Literal, Sequence

from pydantic import Field

from synth.backends.base import (LENGTH_BOUND, BackendSettingsBase, BackendUnavailable, GenerationRequest,
                                 GenerationResult)
from synth.backends.cores import free_cores
from synth.backends.embedded import model_label, resolve_gguf
from synth.task.formats import grammar_schema, ran_to_bound

if TYPE_CHECKING:
    from synth.backends.llama_server import LlamaServerBackend


class LlamaCppSettings(BackendSettingsBase):
    """`backend: {kind: llamacpp}`: the embedded default, `model: embedded-1.5b` (the stronger
    tier, synth/backends/embedded.py), or any GGUF file on this machine."""

    kind: Literal["llamacpp"] = "llamacpp"
    n_ctx: int = Field(default=2048, gt=0)
    n_threads: int | None = Field(default=None, gt=0)  # generation and prompt processing; default: free_cores()
    # output fields' `pattern`s in the grammar (bounded by max_tokens), or only checked after parsing
    grammar_patterns: bool = True
    # sequences decoded together: 2 or more runs llama.cpp's own server as a child process with that
    # many slots of n_ctx tokens (synth/backends/llama_server.py); 1 decodes one at a time in process
    parallel: int = Field(default=8, ge=1, le=64)

    def build(self) -> "LlamaCppBackend | LlamaServerBackend":
        if self.parallel > 1:
            from synth.backends.llama_server import LlamaServerBackend

            return LlamaServerBackend(model=self.model, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                      grammar_patterns=self.grammar_patterns, parallel=self.parallel)
        return LlamaCppBackend.from_settings(self)


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model: str = "embedded", n_ctx: int = 2048, n_threads: int | None = None,
                 grammar_patterns: bool = True) -> None:
        self.model_ref = model
        self.model = model_label(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.grammar_patterns = grammar_patterns
        self._llm: Any = None
        self._lock = threading.Lock()  # a Llama object serves one stream at a time

    @classmethod
    def from_settings(cls, settings: LlamaCppSettings) -> "LlamaCppBackend":
        return cls(model=settings.model, n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                   grammar_patterns=settings.grammar_patterns)

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendUnavailable(
                f"llamacpp backend needs llama-cpp-python: run `pip install llama-cpp-python` ({exc})"
            ) from None
        path = resolve_gguf(self.model_ref)
        threads = self.n_threads or free_cores()
        self._llm = Llama(
            model_path=str(path),
            n_ctx=self.n_ctx,
            n_threads=threads,
            # prompt processing too: llama-cpp-python defaults it to every core whatever n_threads
            # says, so two 1-thread replicas on two cores ran 4 threads (0.73x of one replica)
            n_threads_batch=threads,
            verbose=False,
            seed=0,
        )

    def close(self) -> None:
        if self._llm is not None:
            close = getattr(self._llm, "close", None)
            if close:
                close()
            self._llm = None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        with self._lock:
            return [self._one(request) for request in requests]

    def _one(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        s = request.sampling
        kwargs: dict[str, Any] = dict(
            messages=[dict(m) for m in request.messages],
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
        )
        if s.seed is not None:
            kwargs["seed"] = s.seed & 0x7FFFFFFF
        if request.json_schema is not None:
            # llama.cpp's grammar reads patterns in its own dialect, on the JSON text as written
            schema = grammar_schema(request.json_schema, s.max_tokens, patterns=self.grammar_patterns)
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        try:
            out = self._llm.create_chat_completion(**kwargs)
        except Exception as exc:  # one bad request (too long, bad schema) must not lose the batch
            return GenerationResult(
                key=request.key,
                error=f"{type(exc).__name__}: {exc}",
                latency_s=time.perf_counter() - started,
            )
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        text = choice["message"].get("content") or ""
        finish_reason = choice.get("finish_reason")
        if self.grammar_patterns and ran_to_bound(request.json_schema, text, s.max_tokens):
            finish_reason = LENGTH_BOUND  # the grammar wrote the ending: parsing rejects it as truncated
        return GenerationResult(
            key=request.key,
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - started,
        )
