"""The catalog's read methods (`samples`, `requests`, `runs`, `failed_chunks`, `count`): what
tests and reports ask of the catalog, by name, with values bound and names checked against
the file, so no caller's text reaches the SQL."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from storage.catalog import bulk
from storage.catalog.catalog import Catalog, CatalogError


def sample(sample_id, slot, status="accepted", run_id="r1", **extra):
    return {"sample_id": sample_id, "run_id": run_id, "slot": slot, "attempt": extra.pop("attempt", 0),
            "strategy": "new_question", "status": status, "fields": {"q": f"question {sample_id}"},
            "leaf_path": [["topic", "money"]], **extra}


def request(request_id, stage, run_id="r1", **extra):
    return {"request_id": request_id, "run_id": run_id, "stage": stage, "prompt_hash": "h",
            "sampling": {"seed": 1}, "prompt_tokens": 3, "completion_tokens": 5, **extra}


@pytest.fixture
def cat(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.start_run("r1", "math", {"task": "math"}, "hash", "scripted", "m", dataset="math")
        cat.start_run("r2", "math", {"task": "math"}, "hash2", "scripted", "m", dataset="math")
        cat.commit_chunk(
            [request("q1", "question"), request("a1", "answer"), request("t1", "pivots", run_id=None, tree_id="t")],
            [sample("s2", 2, "rejected", reason="empty_output"), sample("s0", 0), sample("s1", 1, "duplicate"),
             sample("s3", 0, "accepted", attempt=1, leaf_id="L"), sample("x0", 0, run_id="r2")])
        yield cat


def test_samples_filter_by_equals_lists_and_null_in_slot_order(cat):
    assert [r["sample_id"] for r in cat.samples(("sample_id",), run_id="r1")] == ["s0", "s3", "s1", "s2"]
    assert cat.samples(("sample_id", "slot"), run_id="r1", status="accepted") == [
        {"sample_id": "s0", "slot": 0}, {"sample_id": "s3", "slot": 0}]
    assert [r["sample_id"] for r in cat.samples("sample_id", status=("duplicate", "rejected"))] == ["s1", "s2"]
    assert [r["sample_id"] for r in cat.samples("sample_id", leaf_id=None, run_id="r1", status="accepted")] == ["s0"]
    assert cat.samples(status=[]) == []
    assert [r["reason"] for r in cat.samples(("reason",), order_by="reason", status="rejected")] == ["empty_output"]


def test_samples_decode_json_and_read_bulk_text_through_its_segment(cat):
    row = cat.samples(sample_id="s0")[0]
    assert row["fields"] == {"q": "question s0"} and row["leaf_path"] == [["topic", "money"]]
    assert row["status"] == "accepted" and "segment" in row  # every column
    bulk.ingest_samples(cat, pa.Table.from_pylist([{"sample_id": "b0", "run_id": "bulk", "slot": 0, "attempt": 0,
                                                    "strategy": "existing", "status": "accepted",
                                                    "fields": '{"q": "from a segment"}'}]))
    assert cat.samples(("fields",), run_id="bulk") == [{"fields": {"q": "from a segment"}}]


def test_requests_runs_and_counts(cat):
    assert [r["request_id"] for r in cat.requests(("request_id",), stage=["question", "answer"],
                                                   order_by="request_id")] == ["a1", "q1"]
    (tree,) = cat.requests(run_id=None)
    assert tree["stage"] == "pivots" and tree["sampling"] == {"seed": 1}
    assert [r["run_id"] for r in cat.runs(("run_id",), dataset="math")] == ["r1", "r2"]
    assert cat.runs(run_id="r1")[0]["recipe"] == {"task": "math"}
    assert cat.count("samples") == 5
    assert cat.count("samples", status="accepted", distinct="slot") == 1
    assert cat.count("samples", run_id="r1", status="accepted") == 2
    assert cat.count("requests", run_id=None) == 1 and cat.count("runs", dataset="nope") == 0


def test_failed_chunks(cat):
    assert cat.failed_chunks() == []
    cat.record_failed_chunk("r1", "c1", [[0, 0], [1, 0]], 2, ["replica-0", "replica-1"], "Actor died")
    (failed,) = cat.failed_chunks("r1")
    assert failed["attempts"] == [[0, 0], [1, 0]] and failed["workers"] == ["replica-0", "replica-1"]
    assert failed["tries"] == 2 and cat.failed_chunks("r2") == [] and cat.count("failed_chunks") == 1


def test_names_are_checked_and_values_are_bound(cat):
    with pytest.raises(CatalogError, match="no table 'samples; DROP TABLE runs'"):
        cat.count("samples; DROP TABLE runs")
    with pytest.raises(CatalogError, match=r"has no column\(s\) \['status = status OR true'\]"):
        cat.samples(("sample_id",), **{"status = status OR true": 1})
    with pytest.raises(CatalogError, match="has no column"):
        cat.requests(("stage, (SELECT 1)",))
    with pytest.raises(CatalogError, match="has no column"):
        cat.runs(order_by="random()")
    assert cat.samples(status="accepted' OR '1'='1") == []  # a value is a value
    assert cat.count("runs") == 2


def test_a_table_an_older_file_lacks_holds_nothing(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    con.execute("CREATE TABLE samples (sample_id VARCHAR, run_id VARCHAR, slot INTEGER, attempt INTEGER, "
                "status VARCHAR, fields JSON, raw_text VARCHAR, leaf_path JSON, created_at TIMESTAMP)")
    con.close()
    with Catalog(path, read_only=True) as cat:  # schema 1: no failed_chunks, no probes
        assert cat.failed_chunks() == [] and cat.count("failed_chunks", run_id="r") == 0
        assert cat.count("samples") == 0 and cat.count("probes") == 0
