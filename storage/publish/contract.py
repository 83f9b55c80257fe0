"""The exporter contract: what an exporter is given (`ExportJob`), what it returns (`Written`).

One contract for every place a snapshot goes. A file format (parquet, jsonl, save_to_disk)
is a `FileExporter`: it writes the splits into its own folder under the export folder. A
target elsewhere (the Hub) is an `Exporter` that reads what others wrote: it names them in
`needs`, runs after the card when `publishes_card`, takes its settings from
`job.options[<its name>]`, and returns where it put the rows and the revision it made.
`export_snapshot` (storage/publish/export.py) orders them, writes the card between the two
kinds, and records one `exports` row per exporter asked for.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synth.errors import SynthError

# `train-00000-of-00002.parquet`, or for a version of a growing dataset `train-v0002-00000-of-00001.parquet`:
# the rows a version added, so a later version that only adds rows adds only new shards
SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)(?:-v(?P<version>\d{4}))?-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


class ExportError(SynthError, ValueError):
    """An export that cannot be written; the message says what to do."""


@dataclass
class ExportJob:
    """One export of one snapshot, as each exporter sees it in turn."""

    snapshot_id: str
    snapshot_name: str
    dataset_dict: Any  # the snapshot's splits, a typed `datasets.DatasetDict`
    out_dir: Path  # the export folder; a file exporter writes in `out_dir / folder`
    shard_rows: int
    # what the exporters before this one wrote, by name, and "card": the card's files
    written: dict[str, list[Path]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # exporter name -> its settings (the Hub's repo)


@dataclass(frozen=True)
class Written:
    paths: list[Path]  # files or folders written here (none for a remote target)
    location: str  # the `exports` row's location: a folder, or a repo
    revision: str | None = None  # what a remote target made of it (a Hub commit)


class Exporter(ABC):
    """One place a snapshot goes: `write` it there."""

    name: ClassVar[str]  # the word in `export.formats` and `synth export --format`
    needs: ClassVar[tuple[str, ...]] = ()  # exporters whose files it reads: they run first
    publishes_card: ClassVar[bool] = False  # runs after the card is written, which it sends on

    def check(self, options: Any) -> None:
        """Refuse, before anything is written, settings this exporter cannot work with."""

    @abstractmethod
    def write(self, job: ExportJob) -> Written:
        """Put the snapshot where this exporter puts it; what was written, and where."""


class FileExporter(Exporter):
    """A file format: every split written under its own folder of the export folder."""

    folder: ClassVar[str]  # its folder under the export folder

    def write(self, job: ExportJob) -> Written:
        folder = job.out_dir / self.folder
        return Written(self.write_files(job.dataset_dict, folder, job.shard_rows), str(folder))

    @abstractmethod
    def write_files(self, dataset_dict: Any, folder: Path, shard_rows: int) -> list[Path]:
        """Write every split of `dataset_dict` under `folder`; the files (or folders) written."""
