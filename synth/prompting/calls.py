"""One batched backend call, and the request rows it leaves for the catalog.

Every step that asks a model something (tree building, classification, generation,
the judge) builds `Call`s (a request plus what the requests table should say about
it) and hands the whole batch to `call_batch`, which makes ONE `backend.generate`
call, checks that every request was answered in order, and returns each result with
its finished request row (prompt hash, sampling, raw text, tokens, latency, error, and
the Ray replica and node that answered, when one did).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from synth.backends.base import Backend, GenerationRequest, GenerationResult
from synth.errors import SynthError
from synth.ids import prompt_hash


class BackendContractError(SynthError, RuntimeError):
    """A backend broke the contract (results missing or out of order)."""


@dataclass(frozen=True)
class Call:
    request: GenerationRequest
    stage: str  # question / answer / judge / pivots / dimension / expand / classify
    template: str | None = None
    template_hash: str | None = None
    run_id: str | None = None
    tree_id: str | None = None
    strategy: str | None = None
    leaf_id: str | None = None  # generation: the sample's leaf; tree/classify: the node asked about
    sample_id: str | None = None  # generation: the attempt it is for

    def row(self) -> dict[str, Any]:
        return {"request_id": self.request.key, "run_id": self.run_id, "tree_id": self.tree_id,
                "sample_id": self.sample_id,
                "stage": self.stage, "strategy": self.strategy, "leaf_id": self.leaf_id,
                "template": self.template, "template_hash": self.template_hash,
                "prompt_hash": prompt_hash(self.request.messages), "sampling": self.request.sampling.as_dict()}


def call_batch(backend: Backend, calls: Sequence[Call]) -> list[tuple[GenerationResult, dict[str, Any]]]:
    """(result, request row) for every call, in order; an empty batch calls nothing."""
    if not calls:
        return []
    requests = [call.request for call in calls]
    started = time.perf_counter()
    results = list(backend.generate(requests))
    wall = time.perf_counter() - started
    if len(results) != len(requests) or any(r.key != q.key for r, q in zip(results, requests)):
        raise BackendContractError(
            f"backend {getattr(backend, 'name', backend)} returned {len(results)} results for {len(requests)} "
            "requests (or out of order); a backend must answer every request, in order")
    out = []
    for call, result in zip(calls, results):
        row = call.row()
        row.update(raw_text=result.text, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                   completion_tokens=result.completion_tokens,
                   latency_s=result.latency_s or wall / len(requests), error=result.error,
                   worker=result.worker, node=result.node)
        out.append((result, row))
    return out
