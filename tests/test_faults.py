"""Operational faults: every broken environment ends with exit 1 (or 2 for bad input) and one
line naming the file or service and what to do, never a traceback; the catalog survives.

Each case breaks something for real: damaged blocks written into a catalog file, a text
file where the catalog should be, a path through a file, a folder the user may not
write (as `nobody` when the tests run as root), a full tmpfs, a backend server stopped
mid-run, a Prefect API that does not answer, input files deleted between runs, a lost
segment file. The README's Reliability table lists them. Signals, cancels and kills are
in tests/test_stop.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from flows.cli import main
from storage.catalog import bulk
from storage.catalog.catalog import Catalog, CatalogError
from storage.publish.export import list_exports
from tests.conftest import write_recipe
from tests.harness import run_dataset
from tests.fault_env import (catalog_held, damage_table, error_line, fill, math_answer, openai_backend, mode_bits_bind,
                             small_fs, synth, synth_env)
from tests.http_stub import StubServer
from tests.servers import free_port


@pytest.fixture
def made(tmp_path):
    """A recipe and a catalog holding one finished run (made without Prefect: quick)."""
    path = write_recipe(tmp_path)
    run, summary = run_dataset(path)
    run.catalog.con.execute("CHECKPOINT")  # the rows into the file's blocks, where a damaged sector hits them
    run.catalog.close()
    assert summary["status"] == "finished"
    return path, tmp_path / "catalog.duckdb"


def bulk_rows(*ids: str) -> pa.Table:
    return pa.Table.from_pylist([{"sample_id": i, "run_id": "bulk", "slot": n, "attempt": 0, "strategy": "existing",
                                  "status": "accepted", "fields": f'{{"q": "{i}"}}'} for n, i in enumerate(ids)])


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


# -- the three cases of the issue, as a person meets them: a child process, no traceback -----------

def test_damaged_catalog_is_one_line_for_stats_and_check(made, tmp_path):
    _, catalog = made
    damage_table(catalog, "samples")
    line = error_line(synth(["stats", "--catalog", str(catalog)], tmp_path), 1)
    assert f"the catalog {catalog} is damaged (Corrupt database file" in line and "README > Reliability" in line
    check = synth(["stats", "--check", "--catalog", str(catalog)], tmp_path)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert "integrity: table samples cannot be read in full: Corrupt database file" in check.stderr
    assert "PROBLEMS FOUND" in check.stdout


def test_a_file_that_is_not_a_catalog_is_one_line(made, tmp_path):
    path, _ = made
    (tmp_path / "notes.duckdb").write_text("my notes, not a database\n")
    for args in (["stats", "--catalog", "notes.duckdb"], ["run", str(path), "--catalog", "notes.duckdb"]):
        line = error_line(synth(args, tmp_path), 1)
        assert line == ("error: the catalog notes.duckdb is not a DuckDB catalog: pass the right --catalog PATH, "
                        "or move that file away and a new catalog is made there")
    assert (tmp_path / "notes.duckdb").read_text() == "my notes, not a database\n"


def test_export_into_a_folder_that_cannot_be_created(made, tmp_path):
    _, catalog = made
    line = error_line(synth(["export", "--catalog", str(catalog), "--out", "recipe.yaml/out"], tmp_path), 1)
    assert f"cannot create the export folder {tmp_path}/recipe.yaml/out: {tmp_path}/recipe.yaml is a file" in line
    with Catalog(catalog, read_only=True) as cat:
        assert cat.count("snapshots", version=None) == 0  # nothing taken first


def test_debug_shows_the_traceback(made, tmp_path):
    _, catalog = made
    damage_table(catalog, "samples")
    for args, env in ((["stats", "--catalog", str(catalog), "--debug"], synth_env()),
                      (["stats", "--catalog", str(catalog)], synth_env(SYNTH_DEBUG="1"))):
        proc = synth(args, tmp_path, env)
        assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: the catalog")


# -- more of the same, in process -----------------------------------------------------------------

def test_catalog_path_through_a_file_writes_nothing(made, tmp_path, monkeypatch, capsys):
    path, _ = made
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--catalog", "seeds.jsonl/catalog.duckdb"]) == 1
    assert last_error(capsys) == ("error: cannot create the catalog seeds.jsonl/catalog.duckdb: seeds.jsonl is a file, "
                                  "not a folder (File exists); pick another path")


def test_prefect_api_that_does_not_answer(made, tmp_path, monkeypatch, capsys):
    path, _ = made
    api = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    assert main(["run", str(path), "--no-export"]) == 1
    assert last_error(capsys) == (f"error: the Prefect API at {api} does not answer: start it (`synth server start`), "
                                  "or unset PREFECT_API_URL to run with a temporary server")


def test_seeds_or_tree_file_deleted_between_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "tree.yaml").write_text(
        "task: math-test\nroot:\n  split: topic\n  children: [{value: money}, {value: time}]\n")
    path = write_recipe(tmp_path, tree={"file": "tree.yaml"})
    run, _ = run_dataset(path)
    run.catalog.close()
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "catalog.duckdb").read_bytes()
    (tmp_path / "tree.yaml").unlink()
    assert main(["run", str(path)]) == 2  # bad input: the recipe's message names the field (a list of problems)
    assert "tree.file: no file at" in capsys.readouterr().err
    (tmp_path / "seeds.jsonl").unlink()
    assert main(["run", str(path)]) == 2
    assert "seeds.path: no file" in capsys.readouterr().err
    assert (tmp_path / "catalog.duckdb").read_bytes() == before  # bad input: nothing written
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        assert cat.integrity_problems() == [] and cat.physical_problems() == []


def test_a_lost_segment_file(tmp_path, capsys):
    path = tmp_path / "bulk.duckdb"
    with Catalog(path) as cat:
        bulk.ingest_samples(cat, bulk_rows("a", "b"))
        # SQL: the segments table is storage's own bookkeeping, which no read method shows
        segment = cat.segment_dir / cat.scalar("SELECT segment FROM segments")
    segment.unlink()
    assert main(["stats", "--catalog", str(path)]) == 1
    line = last_error(capsys)
    assert f"the catalog {path} has lost 1 text segment file(s) from {path}.segments ({segment.name})" in line
    assert main(["stats", "--check", "--catalog", str(path)]) == 1
    assert "registered text segments missing" in capsys.readouterr().err
    assert main(["catalog", "backup", str(tmp_path / "copy.duckdb"), "--catalog", str(path)]) == 1
    assert "has lost 1 text segment" in last_error(capsys)
    with pytest.raises(CatalogError, match="lost 1 text segment"):
        Catalog(path)


def test_unwritable_catalog_and_export_folder(made, tmp_path):
    """Mode bits bind (root is run without CAP_DAC_OVERRIDE): a catalog folder, a catalog file
    and an export folder this process may not write are each one line naming them."""
    unprivileged = mode_bits_bind()
    path, catalog = made
    (tmp_path / "locked").mkdir(mode=0o555)
    os.chmod(catalog, 0o444)
    try:
        line = error_line(synth(["run", str(path), "--catalog", "locked/catalog.duckdb"], tmp_path,
                                unprivileged=unprivileged), 1)
        assert "cannot write the catalog locked/catalog.duckdb (" in line and "Permission denied" in line
        line = error_line(synth(["run", str(path), "--catalog", "catalog.duckdb"], tmp_path,
                                unprivileged=unprivileged), 1)
        assert "cannot write the catalog catalog.duckdb (" in line and "give this user write access" in line
        line = error_line(synth(["export", "--catalog", "catalog.duckdb", "--out", "locked/out"], tmp_path,
                                unprivileged=unprivileged), 1)
        assert f"cannot write the export folder {tmp_path}/locked/out" in line
        assert not (tmp_path / "locked" / "out").exists()
    finally:
        os.chmod(tmp_path / "locked", 0o755)
        os.chmod(catalog, 0o644)


# -- backup -----------------------------------------------------------------------------------------

def test_backup_is_a_checked_copy_and_never_overwrites(made, tmp_path, capsys):
    _, catalog = made
    with Catalog(catalog) as cat:
        bulk.ingest_samples(cat, bulk_rows("x"))
    copy = tmp_path / "backups" / "catalog-1.duckdb"
    assert main(["catalog", "backup", str(copy), "--catalog", str(catalog)]) == 0
    assert "1 segments" in capsys.readouterr().out
    with Catalog(catalog, read_only=True) as a, Catalog(copy, read_only=True) as b:
        for table in ("runs", "requests", "samples_text", "segments"):  # SQL: the copy, table by table, as stored
            assert a.query(f"SELECT * FROM {table} ORDER BY ALL") == b.query(f"SELECT * FROM {table} ORDER BY ALL")
        assert b.integrity_problems() == []
    assert main(["catalog", "backup", str(copy), "--catalog", str(catalog)]) == 2
    assert "exists: a backup never overwrites" in last_error(capsys)
    assert not list(copy.parent.glob("*.partial"))


def test_backup_is_refused_while_a_run_writes(made, tmp_path, capsys):
    _, catalog = made
    with catalog_held(catalog):
        assert main(["catalog", "backup", str(tmp_path / "b.duckdb"), "--catalog", str(catalog)]) == 1
        line = last_error(capsys)
        assert f"refused: a run is writing the catalog {catalog} right now" in line
    assert not list(tmp_path.glob("b.duckdb*"))


# -- a full disk ------------------------------------------------------------------------------------

@pytest.mark.parametrize("free_kb", [0, 8, 24])  # full before the folder, after a shard, in the card
def test_disk_full_while_exporting(made, tmp_path, capsys, free_kb):
    _, catalog = made
    with small_fs(tmp_path / "fs", 8) as fs:
        filler = fill(fs)
        os.truncate(filler, filler.stat().st_size - free_kb * 1024)
        assert main(["export", "--catalog", str(catalog), "--out", str(fs / "out")]) == 1
        line = last_error(capsys)
        assert f"no space left on device writing the export folder {fs}/out" in line
        assert [p.name for p in fs.rglob("*") if ".tmp" in p.name or ".partial" in p.name] == []
        with Catalog(catalog, read_only=True) as cat:
            assert [e for e in list_exports(cat) if e["location"].startswith(str(fs))] == []
        filler.unlink()
        assert main(["export", "--catalog", str(catalog), "--out", str(fs / "out")]) == 0


@pytest.mark.slow
def test_disk_full_while_committing_a_chunk_loses_nothing(tmp_path, capsys, monkeypatch):
    """The catalog on a small tmpfs that fills up during a run: the run stops at the chunk that
    cannot be committed with one line; the catalog opens and checks clean; with space again,
    the rerun resumes with exactly the target and nothing twice."""
    target, chunk = 24, 4
    with small_fs(tmp_path / "fs", 32) as fs:
        state = {"filler": None}

        def handler(request):
            if request.index == 3 * 2 * chunk + 2 and state["filler"] is None:  # inside the 4th chunk
                state["filler"] = fill(fs)
            return math_answer(request)

        with StubServer(handler) as stub:
            path = write_recipe(tmp_path, catalog=str(fs / "catalog.duckdb"),
                                generation={"target": target, "budget": 400, "chunk_size": chunk,
                                            "strategy": "new_question"},
                                backend=openai_backend(stub.url))
            monkeypatch.chdir(tmp_path)
            assert main(["run", str(path), "--no-export"]) == 1
            line = last_error(capsys)
            assert f"no space left on device writing the catalog {fs}/catalog.duckdb" in line
            assert "a run resumes where it stopped" in line
            with Catalog(fs / "catalog.duckdb", read_only=True) as cat:  # opens with the disk still full
                assert cat.integrity_problems() == [] and cat.physical_problems() == []
                before = {r["sample_id"] for r in cat.samples(("sample_id",))}
                committed = cat.count("requests")
            assert main(["stats", "--check", "--catalog", str(fs / "catalog.duckdb")]) == 0
            assert 0 < len(before) < target and committed < len(stub.requests)  # the 4th chunk was not committed
            state["filler"].unlink()
            assert main(["run", str(path), "--no-export"]) == 0
        with Catalog(fs / "catalog.duckdb", read_only=True) as cat:
            assert cat.integrity_problems() == [] and cat.physical_problems() == []
            assert cat.count("samples", distinct="slot", status="accepted") == target
            assert before <= {r["sample_id"] for r in cat.samples(("sample_id",))}
            assert [r["attempts"] for r in cat.runs(("attempts",))] == [2]


# -- the backend's server goes away mid-run --------------------------------------------------------

@pytest.mark.slow
def test_backend_server_gone_mid_run_then_back(tmp_path, monkeypatch, capsys):
    target, chunk = 16, 4
    port = free_port()
    stub = StubServer(math_answer, port=port)
    stub.start()
    stopped = threading.Event()

    def handler(request):
        if request.index == 2 * 2 * chunk and not stopped.is_set():  # the 3rd chunk's first request
            stopped.set()
            threading.Thread(target=stub.stop, daemon=True).start()
        return math_answer(request)

    stub.handler = handler
    path = write_recipe(tmp_path, generation={"target": target, "budget": 200, "chunk_size": chunk,
                                                    "strategy": "new_question"},
                        backend=openai_backend(stub.url, max_retries=1))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["run", str(path), "--no-export"]) == 1
        line = last_error(capsys)
        assert f"the server at http://127.0.0.1:{port}/v1 does not answer (connection failed" in line
        assert "start it or fix backend.base_url, then rerun" in line
        with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
            (run,) = cat.runs(("status", "message"))
            before = cat.count("samples", distinct="slot", status="accepted")
            errors = sum(r["error"] is not None for r in cat.requests(("error",)))
        assert run["status"] == "failed" and "BackendUnavailable" in run["message"]
        assert 0 < before < target and errors == 0  # no budget spent on rejects of a dead server
        stub.handler = math_answer
        stub.start()  # the server is back, on the same port
        assert main(["run", str(path), "--no-export"]) == 0
    finally:
        stub.stop()
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        assert cat.count("samples", distinct="slot", status="accepted") == target
        assert cat.integrity_problems() == []


@pytest.mark.slow
def test_damaged_catalog_during_a_run_is_one_line(made, tmp_path):
    path, catalog = made
    damage_table(catalog, "samples")
    line = error_line(synth(["run", str(path), "--no-export", "--target", "9"], tmp_path), 1)
    assert f"the catalog {catalog} is damaged (Corrupt database file" in line


@pytest.mark.slow
def test_a_run_that_may_wait_waits_for_a_busy_catalog(made, tmp_path, monkeypatch, capsys):
    """--wait: the pre-flight does not refuse a busy catalog; the run waits its turn, then runs."""
    path, catalog = made
    with catalog_held(catalog, seconds=4):
        monkeypatch.chdir(tmp_path)
        assert main(["run", str(path), "--no-export", "--target", "8", "--wait", "120"]) == 0


def test_backup_of_a_catalog_left_with_a_write_ahead_log(made, tmp_path):
    """A writer killed before DuckDB folded its log into the file: the backup carries the log, and
    the copy holds what was committed."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    _, catalog = made
    subprocess.run([sys.executable, "-c", "import os, sys; sys.path.insert(0, sys.argv[2]);"
                    "from storage.catalog.catalog import Catalog; c = Catalog(sys.argv[1]);"
                    "c.update_run(c.latest_run_id(), message='after the checkpoint'); os._exit(0)",
                    str(catalog), str(ROOT)], check=True)
    assert catalog.with_name(catalog.name + ".wal").exists()
    copy = tmp_path / "copy.duckdb"
    assert main(["catalog", "backup", str(copy), "--catalog", str(catalog)]) == 0
    assert copy.with_name("copy.duckdb.wal").exists()
    with Catalog(copy, read_only=True) as cat:
        assert [r["message"] for r in cat.runs(("message",))] == ["after the checkpoint"]
