"""Decontamination against benchmark test sets: each rule on real GSM8K and HumanEval items
(exact copies, renamed identifiers, changed numbers, unrelated text), the gate turning a
copied candidate into a `contaminated` row through the ledger, the seeds' pre-flight
report, `synth eval --decontaminate`, and a broken test-set path."""

from __future__ import annotations

import gzip
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from synth.curation.decontam import DecontamIndex, TestItem, tokens
from tests.conftest import GSM8K_SLICE, ROOT, write_recipe
from tests.harness import start_run
from synth.backends.scripted import asked, reply

SHARED = ROOT.parent / "shared" / "data"
HUMANEVAL = SHARED / "humaneval" / "HumanEval.jsonl.gz"


def gsm8k(n: int = 40) -> list[dict]:
    source = SHARED / "gsm8k" / "train.jsonl"
    source = source if source.exists() else GSM8K_SLICE
    return [json.loads(line) for line in source.read_text().splitlines()[:n]]


def humaneval(n: int = 40) -> list[dict]:
    if HUMANEVAL.exists():
        with gzip.open(HUMANEVAL, "rt") as handle:
            return [json.loads(line) for line in handle][:n]
    return [json.loads(line) for line in (ROOT / "recipes/seeds/humaneval_40.jsonl").read_text().splitlines()][:n]


def renumber(text: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group(0)) * 7 + 3), text)


def rename(prompt: str, names: dict[str, str]) -> str:
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: names[m.group(0)], prompt)


GSM = gsm8k()
HE = humaneval()
GSM_INDEX = DecontamIndex.build([TestItem(f"gsm8k#{i}", {"question": r["question"]}) for i, r in enumerate(GSM[:20])])
HE_INDEX = DecontamIndex.build([TestItem(p["task_id"], {"prompt": p["prompt"]}) for p in HE])


def test_normalised_words_mask_numbers_and_defined_names():
    assert tokens("Natalia sold 48 clips, then 24!") == ["natalia", "sold", "0", "clips", "then", "0"]
    code = "def add(a, b):\n    total = a + b\n    return total"
    assert tokens(code) == tokens(rename(code, {"add": "plus", "a": "x", "b": "y", "total": "s"}))


def test_an_exact_gsm8k_copy_shares_a_13_gram():
    match = GSM_INDEX.check({"question": GSM[3]["question"], "answer": "whatever the model wrote #### 4"})
    assert match is not None and match.item_id == "gsm8k#3" and match.rule == "13-gram"
    assert match.reject().reason == "contaminated" and "gsm8k#3" in match.reject().detail


def test_a_gsm8k_problem_with_its_numbers_changed_still_matches():
    changed = renumber(GSM[5]["question"])
    assert changed != GSM[5]["question"]
    match = GSM_INDEX.check({"question": changed})
    assert match is not None and match.item_id == "gsm8k#5"


def test_a_humaneval_function_with_renamed_identifiers_still_matches():
    problem = HE[0]  # has_close_elements(numbers, threshold)
    renamed = rename(problem["prompt"], {"has_close_elements": "any_pair_near", "numbers": "values",
                                         "threshold": "limit"})
    assert renamed != problem["prompt"]
    match = HE_INDEX.check({"prompt": renamed})
    assert match is not None and match.item_id == problem["task_id"]


def test_unrelated_text_is_clean():
    assert [GSM_INDEX.check({"question": r["question"], "answer": r["answer"]}) for r in GSM[20:40]] == [None] * 20
    assert [HE_INDEX.check({"question": r["question"]}) for r in GSM] == [None] * len(GSM)
    assert [GSM_INDEX.check({"prompt": p["prompt"]}) for p in HE] == [None] * len(HE)


def test_a_short_test_item_inside_a_longer_candidate_is_an_8_gram_span():
    short = "Weng earns $12 an hour for babysitting and saves half of it."  # 12 words: no 13-gram
    index = DecontamIndex.build([TestItem("short#1", {"question": short})])
    match = index.check({"question": f"{GSM[0]['question']} Also, Weng earns $15 an hour for babysitting and saves"})
    assert match is not None and match.rule == "8-gram span" and match.score >= 0.5
    assert "cover" in match.evidence and index.check({"question": "Weng earns money for babysitting."}) is None


def test_a_copy_made_of_masked_words_is_caught_whole():
    # a one-line docstring: every 8-gram of it is mostly names and numbers, never looked up alone
    prompt = ('def strlen(string: str) -> int:\n    """ Return length of given string\n'
              '    >>> strlen("abc")\n    3\n    """\n')
    index = DecontamIndex.build([TestItem("he#23", {"prompt": prompt})])
    match = index.check({"prompt": rename(prompt, {"strlen": "size_of", "string": "text"})})
    assert match is not None and match.rule == "whole text"


def test_the_index_pickles_for_a_replica_and_matches_the_same():
    again = pickle.loads(pickle.dumps(GSM_INDEX))
    rows = [{"question": renumber(r["question"])} for r in GSM[:30]]
    assert [m and m.item_id for m in again.check_many(rows)] == [m and m.item_id for m in GSM_INDEX.check_many(rows)]


def test_the_embedding_rule_flags_a_paraphrase_above_the_cosine():
    vectors = {"A train leaves at noon.": [1.0, 0.0], "At 12 pm a train departs.": [0.96, 0.28],
               "Bake a cake for six.": [0.0, 1.0]}

    def embed(texts):
        return np.asarray([vectors[t] for t in texts], dtype=np.float32)

    index = DecontamIndex.build([TestItem("t#1", {"question": "A train leaves at noon."})], cosine=0.9,
                                question="question", embed=embed)
    found = index.check_many([{"question": "At 12 pm a train departs."}, {"question": "Bake a cake for six."}],
                             "question")
    assert found[0] is not None and found[0].rule == "embedding" and "cosine 0.960" in found[0].evidence
    assert found[1] is None


def _test_set(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "gsm8k_test.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", **r}) + "\n" for i, r in enumerate(rows)))
    return path


def test_the_gate_turns_a_copied_candidate_into_a_contaminated_row(tmp_path):
    from synth.backends.scripted import ScriptedBackend

    test_rows = GSM[30:34]
    _test_set(tmp_path, test_rows)
    path = write_recipe(tmp_path, quality={"decontaminate": ["gsm8k_test.jsonl"]},
                        generation={"target": 4, "budget": 8, "chunk_size": 4, "max_rounds": 1})
    copied = renumber(test_rows[1]["question"])
    questions = []

    def script(request):
        if "answer" in asked(request):
            return reply(request, {"answer": "She has 5 apples left. #### 5"})
        questions.append(request.key)
        if len(questions) % 2:  # every other candidate copies test item t1, its numbers changed
            return reply(request, {"question": copied})
        return reply(request, {"question": f"How many apples does shop {request.key[:6]} sell in a week?"})

    job = start_run(path, ScriptedBackend(script))
    job.generate()
    rows = job.catalog.samples(("status", "reason", "fields"))
    bad = [r for r in rows if "apples does shop" not in json.dumps(r["fields"])]
    assert bad and all(r["status"] == "filtered" for r in bad)
    assert all(r["reason"].startswith("contaminated: test item gsm8k_test.jsonl#t1 (question): 13-gram, '")
               for r in bad)
    assert any(r["status"] == "accepted" for r in rows if r not in bad)


def test_preflight_reports_seeds_that_copy_a_test_item(tmp_path):
    from flows.preflight import preflight, seed_contamination

    seeds = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:12]]
    _test_set(tmp_path, [{"question": renumber(seeds[2]["question"]), "answer": "#### 1"}, GSM[39]])
    path = write_recipe(tmp_path, quality={"decontaminate": ["gsm8k_test.jsonl"]})
    recipe = preflight(path)
    assert seed_contamination(recipe) == ("decontamination: 1 of 12 seed rows match a test item (2 indexed): "
                                          "seed row 2 ~ gsm8k_test.jsonl#t0 (13-gram)")
    assert seed_contamination(preflight(write_recipe(tmp_path))) is None


def test_a_code_test_set_needs_only_its_question_column(tmp_path):
    from synth.config.decontam_sets import load_test_items
    from synth.config.recipe import load_recipe

    (tmp_path / "he_test.jsonl").write_text("".join(json.dumps({"task_id": p["task_id"], "prompt": p["prompt"]}) + "\n"
                                                    for p in HE[:3]))
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "humaneval_40.jsonl").write_text((ROOT / "recipes/seeds/humaneval_40.jsonl").read_text())
    recipe_file = tmp_path / "humaneval.yaml"
    text = (ROOT / "recipes/humaneval.yaml").read_text()
    recipe_file.write_text(text + "\nquality: {decontaminate: [he_test.jsonl]}\n")
    items = load_test_items(load_recipe(recipe_file))
    assert [i.item_id for i in items] == [f"he_test.jsonl#{p['task_id']}" for p in HE[:3]]
    assert items[0].fields == {"prompt": HE[0]["prompt"]}


def test_a_missing_test_set_is_a_recipe_error_naming_the_field(tmp_path):
    from flows.preflight import preflight
    from synth.config.seeds import SeedError

    _test_set(tmp_path, GSM[30:32])
    missing = write_recipe(tmp_path, quality={"decontaminate": [{"path": "nowhere.jsonl"}]})
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SeedError, match=r"quality\.decontaminate\[0\]\.path: no file or folder at .*nowhere"):
        preflight(missing)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    typo = {"path": "gsm8k_test.jsonl", "fields": {"questoin": "q"}}
    with pytest.raises(SeedError, match=r"quality\.decontaminate\[0\]\.fields maps 'questoin'"):
        preflight(write_recipe(tmp_path, quality={"decontaminate": [typo]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_synth_run_with_a_broken_test_set_exits_2_and_writes_nothing(tmp_path):
    from tests.test_cli import snapshot, synth

    (tmp_path / "broken.jsonl").write_text("{not json\n")
    path = write_recipe(tmp_path, quality={"decontaminate": ["broken.jsonl"]})
    before = snapshot(tmp_path)
    out = synth("run", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "quality.decontaminate[0]" in out.stderr and "line 1 is not JSON" in out.stderr
    assert snapshot(tmp_path) == before


def test_synth_eval_decontaminate_reports_the_rate_and_worst_matches(tmp_path, capsys, monkeypatch):
    from flows.cli import main

    test = _test_set(tmp_path, GSM[30:36])
    export = tmp_path / "export.jsonl"
    rows = [{"question": GSM[30]["question"], "answer": GSM[30]["answer"]},  # exact
            {"question": renumber(GSM[32]["question"]), "answer": "#### 9"},  # numbers changed
            {"question": GSM[10]["question"], "answer": GSM[10]["answer"]},  # unrelated
            {"question": GSM[11]["question"], "answer": GSM[11]["answer"]}]
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(export), "--decontaminate", str(test), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["rows"] == 4 and report["contaminated"] == 2 and report["contaminated_rate"] == 0.5
    assert [w["test_item"] for w in report["worst"]] == ["gsm8k_test.jsonl#t0", "gsm8k_test.jsonl#t2"]
    assert report["worst"][0]["rule"] == "13-gram" and report["worst"][0]["score"] == 1.0
    assert main(["eval", str(export), "--decontaminate", str(test)]) == 0
    assert "2 of 4 rows contaminated (50.00%)" in capsys.readouterr().out
    assert main(["eval", str(export), "--decontaminate", "missing.jsonl"]) == 2
    assert "--decontaminate: no file or folder at missing.jsonl" in capsys.readouterr().err


@pytest.mark.slow
def test_synth_run_prints_the_seeds_that_copy_a_test_item(tmp_path):
    from tests.test_cli import synth

    seeds = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:12]]
    _test_set(tmp_path, [{"question": seeds[4]["question"]}])
    path = write_recipe(tmp_path, quality={"decontaminate": ["gsm8k_test.jsonl"]})
    out = synth("run", str(path), "--no-export", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "decontamination: 1 of 12 seed rows match a test item (1 indexed): seed row 4 ~ gsm8k_test.jsonl#t0" \
        in out.stdout


def test_the_embedding_rule_needs_the_model_at_preflight(tmp_path, monkeypatch):
    import synth.similarity.embedder
    from flows.preflight import preflight
    from synth.config.recipe import RecipeError

    _test_set(tmp_path, GSM[30:32])
    monkeypatch.setattr(synth.similarity.embedder, "embedding_status",
                        lambda: "no embedding model installed: pip install x")
    path = write_recipe(tmp_path, quality={"decontaminate": ["gsm8k_test.jsonl"], "decontaminate_cosine": 0.94})
    with pytest.raises(RecipeError, match=r"quality\.decontaminate_cosine: this needs the embedding model"):
        preflight(path)
    with pytest.raises(RecipeError, match=r"list them in `decontaminate:` too"):
        preflight(write_recipe(tmp_path, quality={"decontaminate_cosine": 0.94}))


@pytest.mark.slow
def test_with_the_real_model_a_heavily_edited_copy_is_caught_by_embedding():
    from synth.similarity.embedder import embedding_status, get_embedder

    if embedding_status():
        pytest.skip(embedding_status())  # the `embed` extra: make install has it
    question = GSM[7]["question"]
    words = question.split(" ")
    edited = renumber(" ".join(w for i, w in enumerate(words) if i % 3 != 1))  # a third of the words gone
    index = DecontamIndex.build([TestItem(f"gsm8k#{i}", {"question": r["question"]}) for i, r in enumerate(GSM[:10])],
                                cosine=0.94, question="question", embed=get_embedder().encode)
    assert index.check({"question": edited}) is None  # the lexical rules miss it
    found = index.check_many([{"question": edited}, {"question": GSM[20]["question"]}], "question")
    assert found[0] is not None and found[0].rule == "embedding" and found[0].item_id == "gsm8k#7", found
    assert found[1] is None
