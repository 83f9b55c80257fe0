"""`vllm serve` end to end: vLLM's OpenAI-compatible server on loopback, started by the
test, driven through the `openai` backend and then by a whole factory run.

The factory run is the two-environment setup docs/vllm.md recommends: the server runs
in vLLM's environment (this interpreter), the factory (Prefect, DuckDB) in the main
one (.venv, or $SYNTH_MAIN_PYTHON), talking over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from synth.backends import make_backend
from synth.backends.openai import OpenAIBackend
from synth.backends.embedded import EMBEDDED_MODEL_NAME
from synth.backends.openai import OpenAISettings
from synth.backends.base import GenerationRequest, Sampling
from tests.conftest import base_recipe
from tests.vllm.support import ROOT, VLLMServer, embedded_model_dir

pytestmark = [pytest.mark.vllm_cpu, pytest.mark.gpu, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server():
    served = VLLMServer(embedded_model_dir(), served_name=EMBEDDED_MODEL_NAME).start()
    yield served
    served.stop()


def main_python() -> Path:
    """The factory's own environment (Prefect and vLLM cannot share one, see docs/vllm.md)."""
    path = Path(os.environ.get("SYNTH_MAIN_PYTHON", ROOT / ".venv" / "bin" / "python"))
    if not path.is_file():
        pytest.fail(f"the factory run needs the main environment's python at {path}: run `make install` "
                    "first, or set SYNTH_MAIN_PYTHON to an interpreter that has the factory installed",
                    pytrace=False)
    return path


def request_errors(python: Path, catalog: Path, env: dict) -> str:
    """The catalog's request errors, read with the main environment's duckdb (for a failure message)."""
    code = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print(con.execute('SELECT DISTINCT error FROM requests WHERE error IS NOT NULL LIMIT 5').fetchall())")
    out = subprocess.run([str(python), "-c", code, str(catalog)], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr[-1000:]


def test_openai_backend_talks_to_vllm_serve(server):
    backend = make_backend(OpenAISettings(base_url=server.url, model="embedded", concurrency=4,
                                           timeout_s=300, max_retries=1))
    assert isinstance(backend, OpenAIBackend) and backend.model == EMBEDDED_MODEL_NAME
    requests = [
        GenerationRequest(key=f"c{i}", messages=({"role": "user", "content": f"Name city number {i} and its population as JSON."},),
                          sampling=Sampling(temperature=0.8, max_tokens=48, seed=i), json_schema=SCHEMA)
        for i in range(4)
    ] + [GenerationRequest(key="free", messages=({"role": "user", "content": "Say hi."},),
                           sampling=Sampling(temperature=0.8, max_tokens=12, seed=5))]
    first = backend.generate(requests)
    assert [r.key for r in first] == [r.key for r in requests]
    for result in first[:-1]:
        assert result.ok and result.finish_reason == "stop", result
        data = json.loads(result.text)
        assert set(data) == {"city", "population"} and isinstance(data["population"], int)
        assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert first[-1].ok and first[-1].text and first[-1].completion_tokens > 0
    assert backend.format_mode == "json_schema"  # vLLM takes the most specific dialect
    # per-request seeds reach the server (what the factory relies on); not the same texts again:
    # vLLM's seeded sampling is not batch-invariant, a rerun in other batches may differ
    assert [backend._payload(r, backend.format_mode).get("seed") for r in requests] == [0, 1, 2, 3, 5]
    again = backend.generate(requests)
    assert all(r.ok and r.completion_tokens > 0 for r in again)


def test_factory_run_against_vllm_serve(server, tmp_path):
    python = main_python()
    recipe = base_recipe(
        tmp_path,
        generation={"target": 4, "budget": 8, "chunk_size": 4, "strategy": "answer_augmentation",
                    "examples_per_prompt": 1, "max_rounds": 1},
        backend={"kind": "openai", "base_url": server.url, "model": "embedded", "concurrency": 4,
                 "timeout_s": 300, "max_retries": 1, "sampling": {"temperature": 0.7, "max_tokens": 96, "seed": 3}},
        quality={"min_chars": 0, "near_dup_threshold": 1.0},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run([str(python), "-m", "flows.cli", "run", str(path), "--no-export"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, f"factory run failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    stats = subprocess.run([str(python), "-m", "flows.cli", "stats", "--json", "--catalog",
                            str(tmp_path / "catalog.duckdb")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert stats.returncode == 0, stats.stderr[-2000:]
    data = json.loads(stats.stdout)
    # every request the factory sent was answered by vLLM and recorded with its tokens
    assert data["requests"] >= 4
    assert data["request_errors"] == 0, request_errors(python, tmp_path / "catalog.duckdb", env)
    assert data["tokens"]["prompt"] > 0 and data["tokens"]["completion"] > 0
    samples = data["samples"]
    assert sum(samples.values()) >= 1  # each answer became a sample row (accepted or with a reason)
    # a rerun resumes: whatever it adds, no sample id is written twice (what a rerun relies on,
    # rather than the same texts: vLLM does not promise them across batches)
    again = subprocess.run([str(python), "-m", "flows.cli", "run", str(path), "--no-export"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, f"rerun failed:\n{again.stdout[-2000:]}\n{again.stderr[-3000:]}"
    code = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print(*con.execute('SELECT count(*), count(DISTINCT sample_id) FROM samples').fetchone())")
    counted = subprocess.run([str(python), "-c", code, str(tmp_path / "catalog.duckdb")], env=env,
                             capture_output=True, text=True, timeout=120)
    rows, distinct = map(int, counted.stdout.split())
    assert rows == distinct >= sum(samples.values())
