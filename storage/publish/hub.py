"""The Hub exporter: a snapshot to a Hugging Face Hub dataset repo, in parts, resumably.

`HubExporter` (`hub` in `export.formats`, settings `HubTarget`) runs after the parquet
exporter and the card (storage/publish/export.py): it makes the dataset repo if it is
missing, then commits the shards the parquet exporter wrote a few at a time and the card
last, so a large dataset goes up in several commits and the card (whose `configs` name
every shard) appears only once all the data is there. Before uploading, it lists the
repo and skips every file whose content is already committed (the SHA-256 of an LFS
file, the git blob id of a small one): an upload that was interrupted, or a push of
an unchanged snapshot, sends only what is missing. Exports are byte-for-byte
deterministic, which is what makes this comparison work across processes. Shards of an
earlier push that the new export no longer has (another shard count) are deleted in
the last commit.

The token comes from the argument, else `HF_TOKEN` (the flows read a Prefect Secret block
and pass it in). It is never logged, printed, stored in the catalog or the card, and it
is scrubbed from the message of any error raised from here; errors are raised outside
the `except` block so the original exception (whose text may echo it) is not chained.

`push_to_hub` (storage/publish/publish.py) is the export with this exporter alone.

Left out: pull requests, branches other than main, and deleting repos.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage.publish.card import mask_tokens
from storage.publish.contract import SHARD_NAME, Exporter, ExportJob, Written
from synth.errors import SynthError

log = logging.getLogger(__name__)

DEFAULT_SHARDS_PER_COMMIT = 8  # the Hub rate-limits commits per hour: parts, not one commit per shard
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HubError(SynthError, RuntimeError):
    """A push that failed; the message says what to do and never contains the token."""


def resolve_token(token: str | None) -> str:
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN to a write token from "
                       "https://huggingface.co/settings/tokens, or pass token=... (the flows read it from a "
                       "Prefect Secret block)")
    return token


def scrub(text: str, token: str | None) -> str:
    """`text` without the token (or any token-shaped string)."""
    if token:
        text = text.replace(token, "[token]")
    return mask_tokens(text)


def _call(action: str, token: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with any failure turned into a HubError without the token.

    The HubError is raised after the `except` block, so it does not chain the original
    exception, whose message or traceback may hold the token."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # any client or server error
        failure = scrub(f"{type(exc).__name__}: {exc}", token)
    raise HubError(f"{action} failed: {failure}")


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _already_there(path: Path, remote: Any) -> bool:
    """Whether the repo's file `remote` (a RepoFile, or None) holds exactly `path`'s bytes."""
    if remote is None or remote.size != path.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == _sha256(path)
    return remote.blob_id == _git_blob_id(path.read_bytes())


def _remote_files(api: Any, repo_id: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {entry.path: entry for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
            if isinstance(entry, RepoFile)}


@dataclass(frozen=True)
class HubTarget:
    """The Hub exporter's settings. The token lives here, in memory, for one export only."""

    repo_id: str
    private: bool = False
    token: str | None = None  # else HF_TOKEN
    tag: str | None = None  # a version of a growing dataset (`v2`): its commit is tagged
    endpoint: str | None = None  # else HF_ENDPOINT, else the Hub
    shards_per_commit: int = DEFAULT_SHARDS_PER_COMMIT


class HubExporter(Exporter):
    """The parquet shards and the card, committed to the dataset repo `options["hub"].repo_id`;
    with a tag, `load_dataset(repo, revision=tag)` reads this version later. Records the commit."""

    name = "hub"
    needs = ("parquet",)
    publishes_card = True

    def check(self, options: Any) -> None:
        if not isinstance(options, HubTarget):
            raise HubError("the hub exporter needs a repo: set export.hub_repo in the recipe (owner/name), "
                           "or pass --push owner/name to synth export")
        if not _REPO_ID.match(options.repo_id or ""):
            raise HubError(f"repo id {options.repo_id!r} is not 'owner/name': write e.g. my-org/math-word-problems")
        if options.shards_per_commit <= 0:
            raise HubError(f"shards_per_commit must be > 0, got {options.shards_per_commit}")
        resolve_token(options.token)

    def write(self, job: ExportJob) -> Written:
        target: HubTarget = job.options[self.name]
        token = resolve_token(target.token)
        card_files = list(job.written["card"])  # export_snapshot runs a card publisher after the card
        card_text = (job.out_dir / "README.md").read_text(encoding="utf-8")
        if token in card_text:  # cannot happen through redaction; refuse rather than publish it
            raise HubError("the dataset card would contain the token: refusing to upload; check the recipe")
        shards = list(job.written["parquet"])
        commit = _upload(job.out_dir, shards, card_files, target, token, job.snapshot_name)
        if target.tag:
            from huggingface_hub import HfApi

            api = HfApi(endpoint=target.endpoint or os.environ.get("HF_ENDPOINT"), token=token)
            _call(f"tagging commit {commit} of {target.repo_id} as {target.tag}", token, api.create_tag,
                  target.repo_id, tag=target.tag, revision=commit, repo_type="dataset", exist_ok=True)
        return Written([], target.repo_id, commit)


def _upload(root: Path, shards: list[Path], card_files: list[Path], target: HubTarget, token: str,
            snapshot_name: str) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    repo_id, shards_per_commit = target.repo_id, target.shards_per_commit
    api = HfApi(endpoint=target.endpoint or os.environ.get("HF_ENDPOINT"), token=token)
    _call(f"creating the dataset repo {repo_id}", token,
          api.create_repo, repo_id, repo_type="dataset", private=target.private, exist_ok=True)
    remote = _call(f"listing the files of {repo_id}", token, _remote_files, api, repo_id)

    rel = {p: p.relative_to(root).as_posix() for p in shards + card_files}
    pending = [p for p in shards if not _already_there(p, remote.get(rel[p]))]
    log.info("%s: %d of %d shard(s) to upload, %d already committed",
             repo_id, len(pending), len(shards), len(shards) - len(pending))

    local_names = set(rel.values())
    stale = [path for path in remote if path.startswith("data/") and SHARD_NAME.match(path.rsplit("/", 1)[-1])
             and path not in local_names]
    parts = [pending[i:i + shards_per_commit] for i in range(0, len(pending), shards_per_commit)]
    commit_id: str | None = None
    for number, part in enumerate(parts, start=1):
        operations = [CommitOperationAdd(path_in_repo=rel[p], path_or_fileobj=str(p)) for p in part]
        message = f"Add {len(part)} shard(s) of snapshot {snapshot_name} (part {number}/{len(parts)})"
        info = _call(f"committing part {number}/{len(parts)} to {repo_id} (run the push again to resume: "
                     "committed shards are skipped)", token,
                     api.create_commit, repo_id, operations, commit_message=message, repo_type="dataset")
        commit_id = info.oid
        log.info("%s: committed %s in %s", repo_id, ", ".join(rel[p] for p in part), commit_id)

    final = [CommitOperationAdd(path_in_repo=rel[p], path_or_fileobj=str(p))
             for p in card_files if not _already_there(p, remote.get(rel[p]))]
    final += [CommitOperationDelete(path_in_repo=path) for path in stale]
    if final:
        message = f"Dataset card for snapshot {snapshot_name}" + (
            f"; remove {len(stale)} stale shard(s)" if stale else "")
        info = _call(f"committing the dataset card to {repo_id}", token,
                     api.create_commit, repo_id, final, commit_message=message, repo_type="dataset")
        commit_id = info.oid
        log.info("%s: committed the card in %s", repo_id, commit_id)
    if commit_id is None:
        commit_id = _call(f"reading the head of {repo_id}", token, api.repo_info, repo_id, repo_type="dataset").sha
        log.info("%s: already up to date at %s", repo_id, commit_id)
    return commit_id
