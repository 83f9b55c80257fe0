"""Where a snapshot's rows go: one `Exporter` class per format, by name in `EXPORTERS`.

An exporter gets the snapshot as a typed `datasets.DatasetDict` and the folder it owns
under the export folder, writes there, and returns what it wrote; `export_snapshot`
(storage/publish/export.py) builds the rows once, runs the exporters a recipe's `export.formats`
or `synth export --format` names, writes the card and records one `exports` row per
exporter. Every exporter writes to a temporary name and renames, and removes what an
earlier export into the same folder left that this one no longer has, so exporting the
same snapshot again gives the same files.

    parquet       data/train-00000-of-00002.parquet ...   the Hub's layout, sharded
    jsonl         jsonl/train.jsonl, jsonl/test.jsonl      one JSON object a line, UTF-8
    save_to_disk  hf/                                      `DatasetDict.save_to_disk`

Adding one: a subclass with `name`, `folder` and `write`, and one line in `EXPORTERS`
(tests/test_extension.py adds a test-only one). The Hub (storage/publish/hub.py) uploads what
the parquet exporter wrote.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from storage.catalog import faults
from storage.tables.snapshots import SPLITS
from synth.errors import SynthError

# `train-00000-of-00002.parquet`, or for a version of a growing dataset `train-v0002-00000-of-00001.parquet`:
# the rows a version added, so a later version that only adds rows adds only new shards
SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)(?:-v(?P<version>\d{4}))?-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


class ExportError(SynthError, ValueError):
    """An export that cannot be written; the message says what to do."""


class Exporter(ABC):
    """One export format: `write` the snapshot's splits into `folder` (created by the exporter)."""

    name: ClassVar[str]  # the word in `export.formats` and `synth export --format`
    folder: ClassVar[str]  # its folder under the export folder, and the `exports` row's location

    @abstractmethod
    def write(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
        """Write every split of `dataset_dict` under `folder`; the files (or folders) written."""


def _version_runs(versions: list[Any]) -> list[tuple[Any, int, int]]:
    """(version, start, stop) of each run of equal versions (rows are ordered by version)."""
    runs, start = [], 0
    for i in range(1, len(versions) + 1):
        if i == len(versions) or versions[i] != versions[start]:
            runs.append((versions[start], start, i))
            start = i
    return runs or [(None, 0, 0)]


class ParquetExporter(Exporter):
    """Shards of at most `shard_rows` rows; a growing dataset's version shards (`-v0002-`)."""

    name = "parquet"
    folder = "data"

    def write(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        versions = getattr(dataset_dict, "versions", {})
        for split, dataset in dataset_dict.items():
            for version, start, stop in _version_runs(versions.get(split, [None] * len(dataset))):
                part = dataset.select(range(start, stop)) if (start, stop) != (0, len(dataset)) else dataset
                count = max(1, math.ceil(len(part) / shard_rows))
                tag = f"-v{version:04d}" if version is not None else ""
                for index in range(count):
                    final = folder / f"{split}{tag}-{index:05d}-of-{count:05d}.parquet"
                    with faults.staged(final) as tmp:
                        part.shard(num_shards=count, index=index, contiguous=True).to_parquet(str(tmp))
                    written.append(final)
        keep = {p.name for p in written}
        for stale in folder.iterdir():  # shards of an earlier export with another count or split
            if SHARD_NAME.match(stale.name) and stale.name not in keep:
                stale.unlink()
        return written


class JsonlExporter(Exporter):
    name = "jsonl"
    folder = "jsonl"

    def write(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for split, dataset in dataset_dict.items():
            final = folder / f"{split}.jsonl"
            with faults.staged(final) as tmp, tmp.open("w", encoding="utf-8") as out:
                # Arrow batches to Python rows: ten times faster than iterating the Dataset
                for batch in dataset.data.table.to_batches(max_chunksize=10_000):
                    out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist())
            written.append(final)
        keep = {p.name for p in written}
        for stale in folder.glob("*.jsonl"):
            if stale.name not in keep and stale.stem in SPLITS:
                stale.unlink()
        return written


class SaveToDiskExporter(Exporter):
    """`DatasetDict.save_to_disk`, for `load_from_disk`; replaces only a saved dataset."""

    name = "save_to_disk"
    folder = "hf"

    def write(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
        if folder.exists() and not (folder / "dataset_dict.json").exists():
            raise ExportError(f"{folder} exists and is not a saved dataset: refusing to replace it; "
                              "remove it or export to another folder")
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left by an interrupted export
        try:
            dataset_dict.save_to_disk(str(tmp))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return [folder]


EXPORTERS: dict[str, Exporter] = {
    "parquet": ParquetExporter(),
    "jsonl": JsonlExporter(),
    "save_to_disk": SaveToDiskExporter(),
}


def exporter_names() -> tuple[str, ...]:
    return tuple(EXPORTERS)
