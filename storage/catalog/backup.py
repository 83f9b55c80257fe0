"""`synth catalog backup PATH`: a consistent copy of a catalog, taken while no run writes it.

The catalog is opened read-only for the whole copy: DuckDB's file lock then keeps any
writer out until the copy is done, and a run that holds the catalog makes the backup
refuse at once (`BackupError`, naming the catalog) instead of copying half a chunk.
Copied: the database file, its write-ahead log when there is one (DuckDB replays it
when the copy is opened), and every registered text segment into `PATH.segments/`.
Each part is written under a `.partial` name and renamed when complete, and the copy
is opened and checked (every table and key index read back, the logical integrity
checks) before it is called a backup; a copy that fails the checks is removed.

Leaves out: incremental backups, compression, copying while a run writes (use DuckDB's
`EXPORT DATABASE` from a reader for that, see README > Reliability).

Example::

    summary = backup_catalog("data/catalog.duckdb", "backups/catalog-2026-01-05.duckdb")
    # {'path': 'backups/...', 'bytes': 3420160, 'segments': 0, 'runs': 2, 'samples': 118}
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from storage.catalog import faults
from storage.catalog.catalog import Catalog, CatalogBusy
from synth.errors import BadInput, SynthError


class BackupError(SynthError, RuntimeError):
    """The backup could not be taken; the message says why and what to do."""


class BackupExists(BadInput, BackupError):
    """The destination exists: a backup never overwrites."""


def _segment_dir(path: Path) -> Path:
    return path.with_name(path.name + ".segments")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def backup_catalog(source: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy the catalog at `source` (file, WAL, registered segments) to `dest`, then check the copy."""
    source, dest = Path(source), Path(dest)
    dest_wal, dest_segments = dest.with_name(dest.name + ".wal"), _segment_dir(dest)
    for path in (dest, dest_wal, dest_segments):
        if path.exists():
            raise BackupExists(f"{path} exists: a backup never overwrites; pick a new PATH (e.g. with today's date)")
    try:
        catalog = Catalog(source, read_only=True)
    except CatalogBusy as exc:
        raise BackupError(f"refused: a run is writing the catalog {source} right now, and a copy taken now could "
                          f"hold half a chunk; back it up when that run has finished ({exc})") from None
    parts = [_partial(dest), _partial(dest_wal), _partial(dest_segments)]
    try:
        with catalog, faults.raising(BackupError, dest, "the backup"):
            segments = [r["segment"] for r in catalog.query("SELECT segment FROM segments ORDER BY segment")]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, parts[0])
            wal = source.with_name(source.name + ".wal")
            if wal.exists():
                shutil.copyfile(wal, parts[1])
            if segments:
                parts[2].mkdir()
                for name in segments:
                    shutil.copyfile(catalog.segment_dir / name, parts[2] / name)
            size = sum(p.stat().st_size for p in parts[:2] if p.exists())
            for part, final in zip(parts, (dest, dest_wal, dest_segments)):
                if part.exists():
                    os.replace(part, final)
    except BaseException:
        _remove(*parts)
        raise
    with Catalog(dest, read_only=True) as copy:
        problems = copy.physical_problems() or copy.integrity_problems()
        counts = {table: copy.count(table) for table in ("runs", "samples")}
    if problems:
        _remove(dest, dest_wal, dest_segments)
        raise BackupError(f"the copy of {source} fails its checks ({problems[0]}), so the catalog itself is damaged: "
                          "nothing was kept; run `synth stats --check` on it and see README > Reliability")
    return {"path": str(dest), "bytes": size, "segments": len(segments), **counts}
