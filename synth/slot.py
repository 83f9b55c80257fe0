"""A slot: one planned sample, and what it is for. Attempts at it are numbered from 0."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    index: int
    strategy: str
    leaf_id: str | None = None
    constraints: tuple[tuple[str, str], ...] = ()  # the leaf's path, infinite values drawn
    seed_row: int | None = None  # the seed it rewrites or answers (rephrase, answer augmentation)
    seed_key: str | None = None  # that seed row by content (synth.config.seeds.seed_key): new rows are told apart
    example_rows: tuple[int, ...] = ()  # seeds shown as examples
