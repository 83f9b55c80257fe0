"""The embedded tiers with several sequences at once (`backend.parallel`, llama.cpp's own
server as a child process, synth/backends/llama_server.py), for real on SmolLM2-135M:
per-request seeds and a JSON-schema request in one batch; the child SIGKILLed mid-chunk
(restarted, the chunk redone, nothing written twice); the child never outliving the process
that started it, even killed; a missing or broken server binary as one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from synth.backends.base import BackendUnavailable, GenerationRequest, Sampling
from synth.backends.llama_server import LlamaServerBackend, server_binary
from synth.backends.llamacpp import LlamaCppBackend, LlamaCppSettings
from tests.conftest import ROOT, write_recipe


def _built() -> bool:
    try:
        server_binary()
        return True
    except BackendUnavailable:
        return False


needs_server = pytest.mark.skipif(not _built(), reason="llama-server is not built: run make install")


def _ask(key: str, question: str, seed: int, schema: dict | None = None) -> GenerationRequest:
    return GenerationRequest(key=key, messages=({"role": "user", "content": question},),
                             sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=24, seed=seed), json_schema=schema)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_parallel_chooses_the_path():
    assert isinstance(LlamaCppSettings(parallel=1).build(), LlamaCppBackend)
    backend = LlamaCppSettings(parallel=3, n_ctx=512).build()
    assert isinstance(backend, LlamaServerBackend) and backend.parallel == 3 and backend.name == "llamacpp"


@pytest.mark.slow
@needs_server
def test_several_sequences_together_with_seeds_and_a_schema():
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string", "minLength": 1}}}
    story = "Write one sentence about a cat."
    requests = [_ask("a", story, 1), _ask("b", story, 1), _ask("c", story, 2), _ask("d", story, 3),
                _ask("json", "Name a city. Reply in JSON.", 4, schema)]
    backend = LlamaServerBackend(n_ctx=512, parallel=4)
    try:
        backend.load()
        slots = httpx.get(backend.server.url.removesuffix("/v1") + "/slots", timeout=10).json()
        results = backend.generate(requests)
    finally:
        backend.close()
    assert len(slots) == 4
    assert [r.key for r in results] == ["a", "b", "c", "d", "json"] and all(r.ok for r in results), results
    assert all(r.completion_tokens > 0 for r in results)
    assert results[0].text == results[1].text  # one seed, one text
    assert len({results[0].text, results[2].text, results[3].text}) == 3  # other seeds, other texts
    assert json.loads(results[4].text)["city"]


@pytest.mark.slow
@needs_server
def test_child_killed_mid_chunk_is_restarted_and_the_chunk_redone(tmp_path, caplog):
    from storage.catalog.catalog import Catalog
    from tests.harness import run_to_end

    recipe = write_recipe(tmp_path, generation={"target": 4, "budget": 12, "chunk_size": 4, "max_rounds": 1,
                                                "strategy": "answer_augmentation", "examples_per_prompt": 0},
                          quality={"min_chars": 1},
                          backend={"kind": "llamacpp", "n_ctx": 512, "parallel": 2,
                                   "sampling": {"max_tokens": 48, "temperature": 0.7, "seed": 3}})
    backend = LlamaServerBackend(n_ctx=512, parallel=2)
    backend.load()
    killed: list[int] = []

    def kill_when_busy() -> None:  # SIGKILL the child while a slot is decoding a request of the chunk
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            server = backend.server
            try:
                slots = httpx.get(server.url.removesuffix("/v1") + "/slots", timeout=5).json()
            except (httpx.HTTPError, AttributeError):
                slots = []
            if any(slot.get("is_processing") for slot in slots):
                killed.append(server.pid)
                os.kill(server.pid, signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        with caplog.at_level("WARNING", logger="synth.backends.llama_server"), \
                Catalog(tmp_path / "catalog.duckdb") as cat:
            run, summary = run_to_end(recipe, backend, cat)
            requests = cat.requests(("request_id", "error", "raw_text"))
            samples = cat.samples(("sample_id", "slot", "attempt"))
        restarted_pid = backend.server.pid
    finally:
        killer.join()
        backend.close()
    assert killed and backend.restarts == 1 and restarted_pid != killed[0]
    assert _gone(killed[0], 5)
    assert "killed by SIGKILL during a chunk" in caplog.text and "starting it again" in caplog.text
    # the chunk was redone inside the call: every request answered, none recorded as an error, none twice
    assert len(requests) == 4 and all(r["error"] is None and r["raw_text"] for r in requests)
    assert len({r["request_id"] for r in requests}) == len(requests)
    assert len(samples) == 4 and len({s["sample_id"] for s in samples}) == len({(s["slot"], s["attempt"]) for s in samples}) == 4


CHILD = textwrap.dedent("""
    import sys, threading, time
    from synth.backends.llama_server import LlamaServerBackend
    backend = LlamaServerBackend(n_ctx=256, parallel=2)
    loader = threading.Thread(target=backend.load)  # started by a thread that ends at once
    loader.start(); loader.join()
    time.sleep(1.0)
    print(backend.server.pid, backend.server.alive(), flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)  # no close(): atexit stops it
    time.sleep(600)  # killed here
""")


@pytest.mark.slow
@needs_server
@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_child_never_outlives_its_parent(how):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, "-c", CHILD, how], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid, alive = parent.stdout.readline().split()
        assert alive == "True"  # the thread that called load() has ended: the child lives on
        if how == "sigkill":
            parent.kill()
        parent.wait(timeout=60)
        assert _gone(int(pid), 10), f"llama-server {pid} outlived its parent ({how})"
    finally:
        parent.kill()
        parent.wait()


def test_a_missing_binary_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("SYNTH_LLAMA_SERVER", str(tmp_path / "no-such-llama-server"))
    path = write_recipe(tmp_path, backend={"kind": "llamacpp", "parallel": 2})
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-llama-server" in err[0] and "make install" in err[0], err
    assert not (tmp_path / "catalog.duckdb").exists()  # said before anything was written


def test_a_broken_binary_is_one_clear_line(tmp_path, monkeypatch):
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\necho 'error: unknown argument: --no-webui' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("SYNTH_LLAMA_SERVER", str(broken))
    backend = LlamaServerBackend(parallel=2)
    with pytest.raises(BackendUnavailable) as caught:
        backend.load()
    message = str(caught.value)
    assert "\n" not in message and "exited with code 3" in message and "unknown argument: --no-webui" in message
    assert "make install" in message
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01not an executable")
    garbage.chmod(0o755)
    monkeypatch.setenv("SYNTH_LLAMA_SERVER", str(garbage))
    with pytest.raises(BackendUnavailable, match="cannot be started .*make install"):
        LlamaServerBackend(parallel=2).load()
