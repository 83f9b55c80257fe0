"""The `vllm` backend for real: vLLM's offline engine on the embedded SmolLM2.

Runs on the CPU build in .venv-vllm (`make test-vllm`) and unchanged on a GPU with the
official wheel (benchmarks/gpu_check.sh). One engine serves the whole module.
"""

from __future__ import annotations

import json
import sys

import pytest

from synth.backends import make_backend
from synth.backends.base import Backend, BackendUnavailable
from synth.backends.vllm import VLLMBackend
from synth.backends.embedded import EMBEDDED_MODEL_NAME
from synth.backends.vllm import VLLMSettings
from synth.backends.base import GenerationRequest, Sampling
from tests.vllm.support import MAX_MODEL_LEN, engine, require_vllm  # noqa: F401  (engine is a fixture)

pytestmark = [pytest.mark.vllm_cpu, pytest.mark.gpu, pytest.mark.slow]

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer"},
        "unit": {"type": "string", "enum": ["apples", "pears", "coins"]},
    },
    "required": ["answer", "unit"],
    "additionalProperties": False,
}


def chat(key: str, text: str, **sampling) -> GenerationRequest:
    return GenerationRequest(key=key, messages=({"role": "user", "content": text},), sampling=Sampling(**sampling))


# --- construction: no engine needed ----------------------------------------------------


def test_settings_build_a_cheap_backend_through_the_registry():
    require_vllm()
    settings = VLLMSettings(model="embedded", max_model_len=1024, gpu_memory_utilization=0.5,
                               tensor_parallel_size=2, dtype="bfloat16")
    backend = make_backend(settings)
    assert isinstance(backend, VLLMBackend) and isinstance(backend, Backend)
    assert (backend.max_model_len, backend.gpu_memory_utilization, backend.tensor_parallel_size, backend.dtype) == (
        1024, 0.5, 2, "bfloat16")
    assert backend.model == EMBEDDED_MODEL_NAME and backend._llm is None  # nothing loaded yet


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM sees
    with pytest.raises(BackendUnavailable, match=r"own environment.*pip install vllm.*make vllm-env.*kind: openai"):
        VLLMBackend().load()


# --- the engine ------------------------------------------------------------------------


def test_batch_comes_back_in_order_with_token_counts(engine):
    # each request has its own prompt length and its own max_tokens: a result in the wrong
    # slot would show the wrong counts
    requests = [
        chat(f"r{i}", "Tell me a long story about a lighthouse keeper. " * (i + 1), temperature=0.7,
             max_tokens=4 + 3 * i, seed=i)
        for i in range(6)
    ]
    results = engine.generate(requests)
    assert [r.key for r in results] == [r.key for r in requests]
    tokenizer = engine._llm.get_tokenizer()
    for request, result in zip(requests, results):
        assert result.ok, result.error
        expected_prompt = tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                        tokenize=True)
        expected_prompt = expected_prompt["input_ids"] if hasattr(expected_prompt, "keys") else expected_prompt
        assert result.prompt_tokens == len(expected_prompt) > 0
        assert 0 < result.completion_tokens <= request.sampling.max_tokens
        assert result.finish_reason in {"stop", "length"}
        if result.finish_reason == "length":
            assert result.completion_tokens == request.sampling.max_tokens
        assert result.text.strip() and result.latency_s > 0
    assert sorted(r.prompt_tokens for r in results) == [r.prompt_tokens for r in results]  # prompts grow


def test_each_request_carries_its_seed_and_seeds_take_their_own_paths(engine):
    """What the factory relies on: every request's seed reaches vLLM's SamplingParams, and
    different seeds sample differently. Not bitwise repeatability: vLLM's seeded sampling is
    not batch-invariant (the same request in another batch may decode differently), and a
    rerun never needs it (ids are deterministic; what the catalog holds is not asked again)."""
    prompt = "Invent a name for a new fruit and describe its taste."
    batch = [chat(f"s{seed}", prompt, temperature=1.0, top_p=1.0, max_tokens=24, seed=seed) for seed in (1, 2, 3, 4)]
    assert [engine._params(r).seed for r in batch] == [1, 2, 3, 4]
    first = engine.generate(batch)
    assert all(r.ok for r in first)
    assert len({r.text for r in first}) == len(batch)  # each seed takes its own path


def test_json_schema_outputs_parse_and_free_text_stays_free(engine):
    question = "Tom has 3 apples and buys 4 more. How many apples does he have? Reply in JSON."
    structured = [
        GenerationRequest(key=f"j{i}", messages=({"role": "user", "content": question},),
                          sampling=Sampling(temperature=0.8, max_tokens=48, seed=i), json_schema=ANSWER_SCHEMA)
        for i in range(4)
    ]
    free = chat("free", "Say hello to the apples.", temperature=0.8, max_tokens=16, seed=9)
    results = engine.generate([*structured, free])
    for result in results[:-1]:
        assert result.ok and result.finish_reason == "stop", result
        data = json.loads(result.text)
        assert set(data) == {"answer", "unit"}
        assert isinstance(data["answer"], int) and data["unit"] in {"apples", "pears", "coins"}
    assert results[-1].ok and results[-1].text


def test_over_long_prompt_is_an_error_value_and_the_batch_survives(engine):
    too_long = chat("long", "word " * (MAX_MODEL_LEN + 50), max_tokens=8, seed=1)
    batch = [chat("a", "Name a colour.", max_tokens=8, seed=1), too_long, chat("b", "Name an animal.", max_tokens=8, seed=2)]
    results = engine.generate(batch)
    assert [r.key for r in results] == ["a", "long", "b"]
    assert results[0].ok and results[0].completion_tokens > 0
    assert results[2].ok and results[2].completion_tokens > 0
    assert not results[1].ok and "prompt too long" in results[1].error and "max_model_len" in results[1].error
    assert results[1].text == "" and results[1].completion_tokens == 0

    # the check is needed: vLLM itself raises for the whole call (vllm#16732)
    from vllm import SamplingParams

    with pytest.raises(Exception, match=r"maximum (context|model) length"):
        engine._llm.chat([list(r.messages) for r in batch], SamplingParams(max_tokens=8), use_tqdm=False)


def test_a_request_vllm_refuses_costs_only_itself(engine):
    # a schema that no structured-output backend of vLLM can compile: vLLM raises when the
    # request is added, for the whole call; the batch is bisected down to the culprit
    bad_schema = {"type": "object", "properties": {"n": {"type": "no-such-type"}}, "required": ["n"]}
    batch = [
        chat("ok1", "Count to three.", max_tokens=8, seed=1),
        GenerationRequest(key="bad", messages=({"role": "user", "content": "Give n."},),
                          sampling=Sampling(max_tokens=16, seed=2), json_schema=bad_schema),
        chat("ok2", "Count to four.", max_tokens=8, seed=3),
    ]
    results = engine.generate(batch)
    assert [r.key for r in results] == ["ok1", "bad", "ok2"]
    assert results[0].ok and results[2].ok
    assert not results[1].ok and results[1].error and results[1].text == ""


def test_a_seeded_batch_bigger_than_one_scheduler_step_survives(engine):
    # more prompt tokens than one engine step takes, so vLLM must spread the prefills over
    # steps; on the CPU build, prefilling a seeded prompt in chunks killed the engine
    # ("CPU Generator does not use offset") until the backend turned chunked prefill off
    filler = "The quick brown fox jumps over the lazy dog near the river bank. " * 20
    requests = [chat(f"big{i}", f"Note {i}. {filler} Summarise the note.", temperature=0.8, max_tokens=4, seed=i)
                for i in range(24)]
    results = engine.generate(requests)
    assert [r.key for r in results] == [r.key for r in requests]
    assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
    step_budget = engine._llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(r.prompt_tokens for r in results) > step_budget  # the premise: more than one step's worth
