"""The local executor: each chunk in this process, one after the other.

The chunk function is `synth.execution.pipeline.run_work`, or what a caller's `wrap_chunk` made of
it (the Prefect flow: a task with retries), wrapped once when the executor is built, so
the chunk path pays nothing for the choice.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from synth.execution.base import Work, WrapChunk
from synth.execution.pipeline import ChunkContext, ChunkResult, run_work


class LocalExecutor:
    def __init__(self, backend: Any, ctx: ChunkContext, wrap_chunk: WrapChunk | None = None) -> None:
        self.backend, self.ctx = backend, ctx
        self.run = wrap_chunk(run_work) if wrap_chunk is not None else run_work

    def map(self, chunks: Sequence[Work]) -> Iterator[ChunkResult]:
        for work in chunks:
            yield self.run(work, self.backend, self.ctx)

    def started_note(self) -> str | None:
        return None

    def events_note(self) -> str | None:
        return None
