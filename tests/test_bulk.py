"""storage.catalog.bulk: set-based ingest, exact dedup, leaf counts, downsampling and rebalance plans.

The ingest tests read with SQL: where a row's text lives (table or segment), the segments
table and DuckDB's settings are storage's own layout, which no read method shows. What
dedup, downsampling and rebalancing decide is read through the catalog's read methods."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from storage.catalog import bulk
from storage.catalog.catalog import Catalog, CatalogError

T0 = datetime(2026, 1, 1)


def table(rows: list[dict]) -> pa.Table:
    """Sample rows with defaults for the required columns; `at` is seconds after T0."""
    full = [{"run_id": "r1", "slot": i, "attempt": 0, "strategy": "question_rephrase", "status": "accepted",
             "leaf_id": "L1", **{k: v for k, v in row.items() if k != "at"},
             "created_at": T0 + timedelta(seconds=row.get("at", i))} for i, row in enumerate(rows)]
    return pa.Table.from_pylist(full)


@pytest.fixture
def catalog(tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        yield cat


def statuses(catalog: Catalog) -> dict[str, tuple[str, str | None, str | None]]:
    rows = catalog.samples(("sample_id", "status", "reason", "duplicate_of"))
    return {r["sample_id"]: (r["status"], r["reason"], r["duplicate_of"]) for r in rows}


def test_ingest_skips_ids_that_exist(catalog):
    first = table([{"sample_id": f"s{i}", "quality": 1.0, "fields": '{"q": "x"}'} for i in range(5)])
    assert bulk.ingest_samples(catalog, first) == 5
    again = table([{"sample_id": s, "quality": q} for s, q in [("s3", 0), ("s4", 0), ("s5", 0), ("s6", 0.25),
                                                                 ("s6", 0.5), ("s7", 0)]])
    assert bulk.ingest_samples(catalog, again) == 3  # s5, s6 (once), s7
    assert catalog.scalar("SELECT count(*) FROM samples") == 8
    assert catalog.scalar("SELECT quality FROM samples WHERE sample_id = 's4'") == 1.0  # not overwritten
    assert catalog.scalar("SELECT quality FROM samples WHERE sample_id = 's6'") == 0.25  # the first of the repeats
    assert catalog.scalar("SELECT current_setting('preserve_insertion_order')") is True  # put back
    assert catalog.scalar("SELECT fields->>'q' FROM samples_text WHERE sample_id = 's0'") == "x"
    assert bulk.ingest_samples(catalog, first) == 0
    assert catalog.scalar("SELECT count(*) FROM samples_text") == 8  # each row once, with or without text


def test_ingest_puts_text_in_registered_segments(catalog):
    rows = table([{"sample_id": f"s{i}", "fields": f'{{"q": "question {i}"}}', "raw_text": f"raw {i}",
                   "leaf_path": '[["topic", "a"]]'} for i in range(250)])
    assert bulk.ingest_samples(catalog, rows) == 250
    inline = catalog.query("SELECT count(fields) AS f, count(raw_text) AS r, count(segment) AS g FROM samples")[0]
    assert inline == {"f": 0, "r": 0, "g": 250}  # the text is in the segment, not in the table
    segments = catalog.query("SELECT segment, n_rows, bytes FROM segments")
    assert sum(s["n_rows"] for s in segments) == 250
    assert all((catalog.segment_dir / s["segment"]).stat().st_size == s["bytes"] for s in segments)
    text = catalog.query("SELECT sample_id, fields->>'q' AS q, raw_text, leaf_path FROM samples_text ORDER BY slot")
    assert [r["q"] for r in text] == [f"question {i}" for i in range(250)]
    assert text[7]["raw_text"] == "raw 7" and text[7]["leaf_path"] == '[["topic", "a"]]'
    # a file that no commit registered (a crash between writing and committing) is never read
    stray = catalog.segment_dir / "seg-stray.parquet"
    stray.write_bytes((catalog.segment_dir / segments[0]["segment"]).read_bytes())
    catalog.refresh_text_view()
    assert catalog.scalar("SELECT count(*) FROM samples_text") == 250


def test_ingest_inline_when_asked_and_segments_survive_reopening(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog(path) as cat:
        bulk.ingest_samples(cat, table([{"sample_id": "a", "fields": '{"q": "inline"}'}]), segments=False)
        bulk.ingest_samples(cat, table([{"sample_id": "b", "fields": '{"q": "in a segment"}'}]))
        assert cat.scalar("SELECT fields->>'q' FROM samples WHERE sample_id = 'a'") == "inline"
    with Catalog(path, read_only=True) as cat:
        got = {r["sample_id"]: r["q"] for r in cat.query("SELECT sample_id, fields->>'q' AS q FROM samples_text")}
    assert got == {"a": "inline", "b": "in a segment"}


def test_an_empty_table_writes_no_file(catalog):
    assert bulk.ingest_samples(catalog, table([{"sample_id": "a", "fields": "{}"}]).slice(0, 0)) == 0
    assert not catalog.segment_dir.exists() or list(catalog.segment_dir.iterdir()) == []


def test_a_failed_segment_write_writes_nothing(catalog, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bulk.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        bulk.ingest_samples(catalog, table([{"sample_id": "a", "fields": '{"q": 1}'}]))
    assert catalog.scalar("SELECT count(*) FROM samples") == 0
    assert catalog.scalar("SELECT count(*) FROM segments") == 0
    assert list(catalog.segment_dir.iterdir()) == []


def test_ingest_writes_all_or_nothing(catalog):
    bad = table([{"sample_id": "ok"}, {"sample_id": "no-status", "status": None}])
    with pytest.raises(duckdb.ConstraintException):
        bulk.ingest_samples(catalog, bad)
    assert catalog.scalar("SELECT count(*) FROM samples") == 0
    assert catalog.scalar("SELECT current_setting('preserve_insertion_order')") is True
    assert bulk.ingest_samples(catalog, bad.slice(0, 1)) == 1


def test_ingest_fills_created_at_and_refuses_unknown_columns(catalog):
    rows = table([{"sample_id": "a"}]).drop_columns(["created_at"])
    assert bulk.ingest_samples(catalog, rows) == 1
    assert catalog.scalar("SELECT created_at FROM samples WHERE sample_id = 'a'") is not None
    with pytest.raises(CatalogError, match="not_a_column"):
        bulk.ingest_samples(catalog, table([{"sample_id": "b", "not_a_column": 1}]))
    assert catalog.scalar("SELECT count(*) FROM samples") == 1


def test_mark_exact_duplicates_keeps_the_first_row(catalog):
    bulk.ingest_samples(catalog, table([
        {"sample_id": "a2", "content_hash": "h1", "at": 5},
        {"sample_id": "a1", "content_hash": "h1", "at": 5},   # same time as a2: a1 sorts first
        {"sample_id": "a0", "content_hash": "h1", "at": 9},
        {"sample_id": "b0", "content_hash": "h2", "at": 1},
        {"sample_id": "b1", "content_hash": "h2", "at": 0, "run_id": "r2"},  # earlier, but in another run
        {"sample_id": "c0", "content_hash": "h3", "at": 0, "run_id": "r2"},
        {"sample_id": "c1", "content_hash": "h3", "at": 1, "status": "rejected"},  # not accepted: ignored
        {"sample_id": "c2", "content_hash": "h3", "at": 2, "run_id": "r3"},  # run not asked for
        {"sample_id": "d0", "content_hash": None},
        {"sample_id": "d1", "content_hash": None},
    ]))
    assert bulk.mark_exact_duplicates(catalog, ["r1", "r2"]) == 3
    found = statuses(catalog)
    assert {k for k, v in found.items() if v[0] == "duplicate"} == {"a2", "a0", "b0"}
    assert found["a2"] == ("duplicate", "exact_duplicate", "a1")
    assert found["a0"][2] == "a1" and found["b0"][2] == "b1"
    assert found["a1"][0] == found["b1"][0] == found["c0"][0] == found["c2"][0] == found["d0"][0] == "accepted"
    assert found["c1"][0] == "rejected"
    assert bulk.mark_exact_duplicates(catalog, ["r1", "r2"]) == 0
    assert bulk.mark_exact_duplicates(catalog, ["r3"]) == 0


def test_accepted_per_leaf_is_accepted_rows_of_the_runs(catalog):
    bulk.ingest_samples(catalog, table(
        [{"sample_id": f"x{i}", "leaf_id": "L1"} for i in range(3)]
        + [{"sample_id": f"y{i}", "leaf_id": None} for i in range(2)]
        + [{"sample_id": "z0", "leaf_id": "L2", "status": "filtered"},
           {"sample_id": "z1", "leaf_id": "L3", "run_id": "r9"}]))
    assert bulk.accepted_per_leaf(catalog, ["r1"]) == {"L1": 3, None: 2}
    assert bulk.accepted_per_leaf(catalog, ["r1", "r9"]) == {"L1": 3, None: 2, "L3": 1}
    assert bulk.accepted_per_leaf(catalog, []) == {}


def leafy(catalog: Catalog) -> None:
    rows = [{"sample_id": f"{leaf or 'none'}-{i:02d}", "leaf_id": leaf}
            for leaf, n in [("A", 10), ("B", 3), (None, 6), ("C", 5)] for i in range(n)]
    rows.append({"sample_id": "A-other-run", "leaf_id": "A", "run_id": "r2"})
    bulk.ingest_samples(catalog, table(rows))


def first_by_hash(ids: list[str], seed: int, n: int) -> set[str]:
    """The rows downsample must keep, worked out apart from the catalog."""
    con = duckdb.connect()  # SQL: DuckDB's own hash is what decides, worked out here without the catalog
    rows = con.execute("SELECT id FROM (SELECT unnest(?::VARCHAR[]) AS id) ORDER BY hash(id, ?), id LIMIT ?",
                       [ids, seed, n]).fetchall()
    return {r[0] for r in rows}


def accepted_ids(catalog: Catalog, leaf: str | None) -> set[str]:
    return {r["sample_id"] for r in catalog.samples(("sample_id",), status="accepted", run_id="r1", leaf_id=leaf)}


def test_downsample_keeps_the_first_rows_by_seeded_hash(tmp_path):
    caps = {"A": 4, "B": 5, None: 2}
    kept = []
    for name in ("one", "two"):
        with Catalog(tmp_path / f"{name}.duckdb") as catalog:
            leafy(catalog)
            assert bulk.downsample(catalog, ["r1"], caps, seed=7) == 6 + 0 + 4
            assert bulk.downsample(catalog, ["r1"], caps, seed=7) == 0
            kept.append({leaf: accepted_ids(catalog, leaf) for leaf in ("A", "B", None, "C")})
            assert catalog.samples(("status",), sample_id="A-other-run") == [{"status": "accepted"}]
            assert catalog.count("samples", reason=bulk.DROP_REASON) == 10
    assert kept[0] == kept[1]
    assert kept[0]["A"] == first_by_hash([f"A-{i:02d}" for i in range(10)], 7, 4)
    assert kept[0][None] == first_by_hash([f"none-{i:02d}" for i in range(6)], 7, 2)
    assert len(kept[0]["B"]) == 3 and len(kept[0]["C"]) == 5  # under its cap; no cap
    with Catalog(tmp_path / "three.duckdb") as catalog:
        leafy(catalog)
        bulk.downsample(catalog, ["r1"], caps, seed=8)
        assert accepted_ids(catalog, "A") == first_by_hash([f"A-{i:02d}" for i in range(10)], 8, 4) != kept[0]["A"]


def test_rebalance_plan_counts_and_changes_nothing(catalog):
    leafy(catalog)
    before = statuses(catalog)
    plan = bulk.rebalance_plan(catalog, ["r1"], targets={"A": 8, "B": 8, "D": 2}, caps={"A": 4, None: 2}, seed=3)
    assert plan["leaves"] == {
        None: {"have": 6, "target": 0, "deficit": 0, "surplus": 4},
        "A": {"have": 10, "target": 8, "deficit": 0, "surplus": 6},
        "B": {"have": 3, "target": 8, "deficit": 5, "surplus": 0},
        "C": {"have": 5, "target": 0, "deficit": 0, "surplus": 0},
        "D": {"have": 0, "target": 2, "deficit": 2, "surplus": 0},
    }
    assert (plan["have"], plan["target"], plan["deficit"], plan["surplus"], plan["seed"]) == (24, 18, 7, 10, 3)
    assert statuses(catalog) == before
    assert bulk.downsample(catalog, ["r1"], {"A": 4, None: 2}, seed=3) == plan["surplus"]


def test_downsample_and_counts_can_keep_to_one_strategy(catalog):
    """The job trims only a rebalanced dataset's rows ('existing'), never what it generated."""
    rows = [{"sample_id": f"e{i}", "leaf_id": "A", "strategy": "existing"} for i in range(5)]
    rows += [{"sample_id": f"g{i}", "leaf_id": "A", "strategy": "new_question"} for i in range(3)]
    bulk.ingest_samples(catalog, table(rows))
    assert bulk.accepted_per_leaf(catalog, ["r1"], "existing") == {"A": 5}
    assert bulk.accepted_per_leaf(catalog, ["r1"]) == {"A": 8}
    assert bulk.downsample(catalog, ["r1"], {"A": 2}, seed=1, strategy="existing") == 3
    dropped = {r["sample_id"] for r in catalog.samples(("sample_id",), status="dropped")}
    assert len(dropped) == 3 and all(i.startswith("e") for i in dropped)
    assert bulk.rebalance_plan(catalog, ["r1"], {"A": 6}, strategy="existing")["leaves"]["A"]["deficit"] == 4


def test_integrity_problems_name_what_is_wrong(catalog):
    bulk.ingest_samples(catalog, table([{"sample_id": "a", "fields": '{"q": 1}'}, {"sample_id": "b"}]))
    assert catalog.integrity_problems() == []
    # what no path of the factory writes (so SQL): a repeated id, and a segment file gone
    catalog.con.execute("INSERT INTO samples BY NAME SELECT * FROM samples WHERE sample_id = 'b'")
    (catalog.segment_dir / catalog.scalar("SELECT segment FROM segments LIMIT 1")).unlink()
    problems = catalog.integrity_problems()
    assert problems[0] == "1 sample ids written twice"
    assert "text segments missing" in problems[-1]
