"""push_to_hub with the real huggingface_hub client against tests/hub_stub.py, an offline
stand-in for the Hub on 127.0.0.1 (nothing here reaches the network).

The stub implements the endpoints the upload uses and records what arrived; the client
is told to use the legacy LFS transfer instead of Xet, which the stub does not speak.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from catalog_fill import RUN_ID, SECRET, fill_catalog
from hub_stub import HubStub
from storage.publish.export import list_exports
from storage.publish.hub import HubError
from storage.publish.publish import push_to_hub
from storage.tables.snapshots import create_snapshot

REPO = "synth-org/math-test"


@pytest.fixture(autouse=True)
def lfs_not_xet(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def catalog(tmp_path):
    cat = fill_catalog(tmp_path / "catalog.duckdb")
    yield cat
    cat.close()


@pytest.fixture
def snapshot(catalog):
    return create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)


def push(catalog, snapshot, hub, export_dir, **kwargs):
    options = {"token": SECRET, "endpoint": hub.url, "shard_rows": 2, "shards_per_commit": 2, **kwargs}
    return push_to_hub(catalog, snapshot, REPO, export_dir=export_dir, **options)


def test_push_sends_the_card_and_every_shard_in_parts(tmp_path, catalog, snapshot):
    from datasets import load_dataset

    out = tmp_path / "export"
    with HubStub(SECRET) as hub:
        commit = push(catalog, snapshot, hub, out, private=True)
    repo = hub.repos[REPO]
    assert repo.private is True
    shards = sorted(p.relative_to(out).as_posix() for p in (out / "data").glob("*.parquet"))
    assert len(shards) == 6  # 7 train rows and 4 test rows at 2 rows a shard
    assert sorted(repo.files) == sorted([".gitattributes", "README.md", "leaf_distribution.png", *shards])
    for path in [*shards, "README.md", "leaf_distribution.png"]:
        assert hub.file_bytes(REPO, path) == (out / path).read_bytes(), path
    # in parts: 3 commits of 2 shards, then the card, after the repo's initial commit
    train, test = [p for p in shards if "/train-" in p], [p for p in shards if "/test-" in p]
    assert [c["paths"] for c in repo.commits[1:4]] == [train[:2], train[2:], test]
    assert repo.commits[-1]["paths"] == ["README.md", "leaf_distribution.png"]
    assert commit == repo.head
    assert hub.unhandled == [] and hub.unauthorized == [] and hub.put_with_auth == []

    rows = [r for r in list_exports(catalog, snapshot) if r["target"] == "hub"]
    assert [(r["location"], r["revision"], r["n_rows"]) for r in rows] == [(REPO, commit, 11)]

    # what arrived is a dataset: the received shards load with the splits and counts of the snapshot
    received = tmp_path / "received"
    for path in shards:
        (received / path).parent.mkdir(parents=True, exist_ok=True)
        (received / path).write_bytes(hub.file_bytes(REPO, path))
    files = {split: str(received / "data" / f"{split}-*.parquet") for split in ("train", "test")}
    loaded = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert {split: ds.num_rows for split, ds in loaded.items()} == {"train": 7, "test": 4}
    assert "configs:" in hub.file_bytes(REPO, "README.md").decode()


def test_an_interrupted_upload_resumes_without_resending_committed_shards(tmp_path, catalog, snapshot):
    out = tmp_path / "export"
    with HubStub(SECRET, fail_commits={2}) as hub:
        with pytest.raises(HubError, match="run the push again to resume"):
            push(catalog, snapshot, hub, out)
        committed = list(hub.repos[REPO].commits[1]["paths"])
        assert len(committed) == 2 and "README.md" not in hub.repos[REPO].files
        puts_before, announced_before = len(hub.lfs_puts), len(hub.preuploaded)
        commit = push(catalog, snapshot, hub, out)
    repo = hub.repos[REPO]
    assert len(repo.files) == 9 and commit == repo.head  # 6 shards, card, plot, .gitattributes
    assert len(hub.lfs_puts) == len(set(hub.lfs_puts))  # no object was ever sent twice
    # the failed part's shards were already in LFS storage: the rerun sent only the 2 test shards and the plot
    assert len(hub.lfs_puts) - puts_before == 3
    assert not set(committed) & set(hub.preuploaded[announced_before:])  # not even offered again
    later_paths = [p for c in repo.commits[2:] for p in c["paths"]]
    assert not set(committed) & set(later_paths)  # committed shards were skipped, not recommitted
    assert not [r for r in list_exports(catalog, snapshot) if r["target"] == "hub" and r["revision"] != commit]


def test_pushing_again_changes_nothing_and_stale_shards_go(tmp_path, catalog, snapshot):
    out = tmp_path / "export"
    with HubStub(SECRET) as hub:
        first = push(catalog, snapshot, hub, out)
        n_commits, n_puts = len(hub.repos[REPO].commits), len(hub.lfs_puts)
        n_announced = len(hub.preuploaded)
        assert push(catalog, snapshot, hub, out) == first
        assert (len(hub.repos[REPO].commits), len(hub.lfs_puts), len(hub.preuploaded)) == (
            n_commits, n_puts, n_announced)

        third = push(catalog, snapshot, hub, out, shard_rows=100)  # one shard per split now
    assert third != first
    assert sorted(p for p in hub.repos[REPO].files if p.startswith("data/")) == [
        "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert sorted(r["revision"] for r in list_exports(catalog, snapshot) if r["target"] == "hub") == sorted(
        [first, third])


def test_the_token_never_leaks(tmp_path, catalog, snapshot, monkeypatch, caplog, capsys):
    for name in (None, "huggingface_hub", "httpx", "httpx2", "storage", "datasets"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setenv("HF_TOKEN", SECRET)  # the token from the environment this time
    out = tmp_path / "export"
    with HubStub(SECRET, fail_commits={1}) as hub:
        with pytest.raises(HubError) as failure:
            push_to_hub(catalog, snapshot, REPO, export_dir=out, endpoint=hub.url, shard_rows=2)
        # the stub echoed the Authorization header into its error: the message must not carry it
        message = "".join(traceback.format_exception(failure.value))
        assert "[token]" in message and SECRET not in message
        assert failure.value.__context__ is None and failure.value.__cause__ is None
        commit = push_to_hub(catalog, snapshot, REPO, export_dir=out, endpoint=hub.url, shard_rows=2)
        assert hub.unauthorized == [] and hub.put_with_auth == []  # the token was used, and only where due
        with pytest.raises(HubError) as wrong:
            push_to_hub(catalog, snapshot, REPO, token="hf_wrongTOKEN456", endpoint=hub.url)
        assert "401" in str(wrong.value) and "hf_wrongTOKEN456" not in str(wrong.value)

    assert commit == hub.repos[REPO].head
    captured = capsys.readouterr()
    assert caplog.records, "the push should have logged something to check"
    for text in (caplog.text, captured.out, captured.err, hub.file_bytes(REPO, "README.md").decode()):
        assert SECRET not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    catalog.close()
    for path in Path(catalog.path).parent.glob("catalog.duckdb*"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_push_needs_a_token_and_an_owner_slash_name(catalog, snapshot, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match="set HF_TOKEN"):
        push_to_hub(catalog, snapshot, REPO)
    with pytest.raises(HubError, match="not 'owner/name'"):
        push_to_hub(catalog, snapshot, "no-owner", token=SECRET)


def test_the_hub_is_one_exporter_beside_the_files(tmp_path, catalog, snapshot, monkeypatch):
    """`synth export --format jsonl --push REPO`: one export writes the files and uploads them;
    the shards sent are the ones in the export folder, and each target asked for is recorded."""
    from flows.cli import main

    out = tmp_path / "export"
    catalog.close()
    with HubStub(SECRET) as hub:
        monkeypatch.setenv("HF_TOKEN", SECRET)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code = main(["export", "--catalog", str(catalog.path), "--snapshot", "v1", "--out", str(out),
                     "--format", "jsonl", "--push", REPO])
    assert code == 0
    repo = hub.repos[REPO]
    shards = sorted(p.relative_to(out).as_posix() for p in (out / "data").glob("*.parquet"))
    assert shards and all(hub.file_bytes(REPO, p) == (out / p).read_bytes() for p in shards)
    assert (out / "jsonl" / "train.jsonl").exists()
    from storage.catalog.catalog import Catalog

    with Catalog(catalog.path, read_only=True) as cat:
        targets = {r["target"]: r for r in list_exports(cat)}
    assert set(targets) == {"jsonl", "hub"}  # parquet ran because the Hub reads it, but was not asked for
    assert targets["hub"]["location"] == REPO and targets["hub"]["revision"] == repo.head


def test_hub_in_the_formats_needs_a_repo_before_anything_is_written(tmp_path, catalog, snapshot):
    from flows.preflight import preflight
    from storage.publish.export import export_snapshot
    from synth.config.recipe import RecipeError
    from tests.conftest import write_recipe

    with pytest.raises(HubError, match="needs a repo"):
        export_snapshot(catalog, snapshot, tmp_path / "out", formats=("parquet", "hub"))
    assert not (tmp_path / "out").exists()
    path = write_recipe(tmp_path, export={"dir": str(tmp_path / "out"), "formats": ["parquet", "hub"]})
    with pytest.raises(RecipeError, match="export.formats: hub needs the repo to push to: write export.hub_repo"):
        preflight(path)
