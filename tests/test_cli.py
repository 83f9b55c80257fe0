"""The command line refuses bad input with exit code 2 and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, base_recipe, write_recipe


def synth(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def snapshot(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_unknown_key_exits_2_and_writes_nothing(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 3, "colour": "blue"})
    before = snapshot(tmp_path)
    out = synth("run", str(path), cwd=tmp_path)
    assert out.returncode == 2
    assert "generation.colour" in out.stderr and "unknown key 'colour'" in out.stderr
    assert snapshot(tmp_path) == before


def test_bad_seed_column_exits_2_and_writes_nothing(tmp_path):
    data = base_recipe(tmp_path)
    data["seeds"]["fields"] = {"question": "problem"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    before = snapshot(tmp_path)
    out = synth("run", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "seeds.fields.question" in out.stderr and "'problem'" in out.stderr
    assert snapshot(tmp_path) == before


def test_stats_without_catalog_is_clear(tmp_path):
    out = synth("stats", "--json", "--catalog", str(tmp_path / "none.duckdb"), cwd=tmp_path)
    assert out.returncode == 1 and "no catalog" in out.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_run_then_stats_json(tmp_path):
    path = write_recipe(tmp_path)
    out = synth("run", str(path), "--no-export", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = synth("stats", "--json", "--catalog", str(tmp_path / "catalog.duckdb"), cwd=tmp_path)
    data = json.loads(stats.stdout)
    assert data["samples"]["accepted"] == 6 and data["samples"]["rejected"] == 0 and data["requests"] == 12
    checked = synth("stats", "--check", "--catalog", str(tmp_path / "catalog.duckdb"), cwd=tmp_path)
    assert checked.returncode == 0 and "integrity: ok" in checked.stdout
    # a sample whose request row is gone breaks lineage (SQL: no path of the factory deletes one): the check
    # names it and fails
    import duckdb

    with duckdb.connect(str(tmp_path / "catalog.duckdb")) as con:
        con.execute("DELETE FROM requests WHERE request_id = (SELECT min(request_id) FROM samples)")
    broken = synth("stats", "--check", "--catalog", str(tmp_path / "catalog.duckdb"), cwd=tmp_path)
    assert broken.returncode == 1 and "1 samples whose request is missing" in broken.stderr


def test_export_command_writes_a_loadable_dataset(tmp_path):
    import datasets

    path = write_recipe(tmp_path)
    assert synth("run", str(path), "--no-export", cwd=tmp_path).returncode == 0
    out = synth("export", "--catalog", str(tmp_path / "catalog.duckdb"), "--out", str(tmp_path / "exp"),
                "--snapshot", "v1", "--test-fraction", "0.34", "--format", "parquet", "--format", "save_to_disk",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = datasets.load_from_disk(str(tmp_path / "exp" / "hf"))
    assert loaded["train"].num_rows + loaded["test"].num_rows == 6 and loaded["test"].num_rows >= 1
    again = synth("export", "--catalog", str(tmp_path / "catalog.duckdb"), "--out", str(tmp_path / "exp"),
                  "--snapshot", "v1", cwd=tmp_path)
    assert again.returncode == 0 and "snapshot v1 (" in again.stdout


@pytest.mark.slow
def test_grow_by_on_the_command_line_adds_exactly_n_and_stats_find_the_catalog(tmp_path):
    """`synth run RECIPE --grow-by 4` adds exactly 4; `synth stats` with no flag finds the catalog
    under data/ and shows the dataset per contribution; the export has each sample once."""
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    path = write_recipe(tmp_path, catalog="data/growing.duckdb", generation={"target": 6, "budget": 60},
                        export={"dir": "out", "formats": ["parquet"]})
    assert synth("run", str(path), cwd=tmp_path).returncode == 0
    grown = synth("run", str(path), "--grow-by", "4", cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr[-2000:]
    assert "grows by 4: 6 -> 10" in grown.stdout and "reused: 6 from" in grown.stdout
    assert "version: math-test-v2 (new: +4 -0, 10 rows)" in grown.stdout
    stats = json.loads(synth("stats", "--json", cwd=tmp_path).stdout)
    (dataset,) = stats["datasets"]
    assert dataset["total"] == 10 and [c["accepted"] for c in dataset["contributions"]] == [6, 4]
    table = pq.read_table(tmp_path / "out" / "data")
    ids = table.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == 10
    text = synth("stats", cwd=tmp_path)
    assert "dataset math-test: 10 samples" in text.stdout
