"""Where a snapshot's rows go: one `Exporter` class per place, by name in `EXPORTERS`.

The contract (storage/publish/contract.py): a file format is a `FileExporter` that gets the
snapshot as a typed `datasets.DatasetDict` and the folder it owns under the export folder,
writes there, and returns what it wrote; a remote target reads what file exporters and the
card wrote. `export_snapshot` (storage/publish/export.py) builds the rows once, runs the
exporters a recipe's `export.formats` or `synth export --format` names, writes the card and
records one `exports` row per exporter. Every file exporter writes to a temporary name and
renames, and removes what an earlier export into the same folder left that this one no
longer has, so exporting the same snapshot again gives the same files.

    parquet       data/train-00000-of-00002.parquet ...   the Hub's layout, sharded
    jsonl         jsonl/train.jsonl, jsonl/test.jsonl      one JSON object a line, UTF-8
    save_to_disk  hf/                                      `DatasetDict.save_to_disk`
    hub           owner/name on the Hugging Face Hub       the parquet shards and the card (hub.py)

Adding one: a subclass with `name` and `write` (a file format: `folder` and `write_files`),
and one line in `EXPORTERS` (tests/test_extension.py adds a test-only one).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from storage.catalog import faults
from storage.publish.contract import SHARD_NAME, ExportError, Exporter, FileExporter
from storage.publish.hub import HubExporter
from storage.tables.snapshots import SPLITS


def _version_runs(versions: list[Any]) -> list[tuple[Any, int, int]]:
    """(version, start, stop) of each run of equal versions (rows are ordered by version)."""
    runs, start = [], 0
    for i in range(1, len(versions) + 1):
        if i == len(versions) or versions[i] != versions[start]:
            runs.append((versions[start], start, i))
            start = i
    return runs or [(None, 0, 0)]


class ParquetExporter(FileExporter):
    """Shards of at most `shard_rows` rows; a growing dataset's version shards (`-v0002-`)."""

    name = "parquet"
    folder = "data"

    def write_files(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
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


class JsonlExporter(FileExporter):
    name = "jsonl"
    folder = "jsonl"

    def write_files(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
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


class SaveToDiskExporter(FileExporter):
    """`DatasetDict.save_to_disk`, for `load_from_disk`; replaces only a saved dataset."""

    name = "save_to_disk"
    folder = "hf"

    def write_files(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
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
    "hub": HubExporter(),
}


def exporter_names() -> tuple[str, ...]:
    return tuple(EXPORTERS)
