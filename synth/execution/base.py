"""The executor contract.

An executor turns chunks of attempts into results; `map` is a generator, so a caller that
stops iterating abandons the chunks still in flight (their ids are deterministic: a rerun
makes them again and writes nothing twice). The choice is configuration, never the
backend's type (`synth.execution.executor_for`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, Sequence

from synth.execution.pipeline import ChunkContext, ChunkFailed, ChunkResult
from synth.slot import Slot

Work = list[tuple[Slot, int]]
RunChunk = Callable[[Sequence[tuple[Slot, int]], Any, ChunkContext], ChunkResult]
WrapChunk = Callable[[RunChunk], RunChunk]


class Executor(Protocol):
    """Runs chunks of attempts and yields their results (in any order), or a `ChunkFailed`
    for a chunk it gave up on. `started_note()`: a line for the log once the backend is
    loaded (None: nothing to say); `events_note()`: a line on faults seen during generation."""

    def map(self, chunks: Sequence[Work]) -> Iterable[ChunkResult | ChunkFailed]: ...

    def started_note(self) -> str | None: ...

    def events_note(self) -> str | None: ...
