"""The openai backend against a scripted local server (fast) and against a real
llama-cpp-python server on the embedded model (slow)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time

import pytest

from synth.backends import make_backend
from synth.backends.base import Backend, BackendUnavailable
from synth.backends.openai import OpenAIBackend, OpenAIConfigError
from synth.backends.embedded import EMBEDDED_MODEL_NAME
from synth.backends.openai import OpenAISettings
from synth.backends.base import GenerationRequest, Sampling
from tests.http_stub import StubRequest, StubResponse, StubServer, chat_reply

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
SECRET = "sk-test-3f9c1e7a-never-print-me"


def req(key: str, schema: dict | None = None, seed: int | None = 11, max_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest(
        key=key,
        messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": f"say {key}"}),
        sampling=Sampling(temperature=0.3, top_p=0.9, max_tokens=max_tokens, seed=seed),
        json_schema=schema,
    )


def make(stub: StubServer, **kwargs) -> OpenAIBackend:
    defaults = dict(model="stub-model", concurrency=4, timeout_s=5, max_retries=3,
                    backoff_base_s=0.01, backoff_cap_s=0.05, retry_after_cap_s=0.5)
    return OpenAIBackend(stub.url + "/v1", **{**defaults, **kwargs})


def user_text(request: StubRequest) -> str:
    return request.json["messages"][-1]["content"]


def echo(request: StubRequest) -> StubResponse:
    return StubResponse(json=chat_reply(f"echo {user_text(request)}"))


# --- construction and settings ---------------------------------------------------------


def test_from_settings_and_registry_build_a_cheap_backend():
    settings = OpenAISettings(base_url="http://127.0.0.1:9/v1/", model="my-model",
                               api_key_env="SYNTH_TEST_KEY", concurrency=3, timeout_s=7, max_retries=2)
    backend = make_backend(settings)
    assert isinstance(backend, OpenAIBackend) and isinstance(backend, Backend)
    assert (backend.name, backend.model, backend.base_url) == ("openai", "my-model", "http://127.0.0.1:9/v1")
    assert (backend.concurrency, backend.timeout_s, backend.max_retries) == (3, 7.0, 2)
    # "embedded" names the SmolLM2 model a local llama.cpp server serves
    assert OpenAIBackend("http://127.0.0.1:9/v1").model == EMBEDDED_MODEL_NAME


@pytest.mark.parametrize("url, words", [
    (None, "base_url is required"),
    ("ftp://example.org/v1", r"not an http\(s\) URL"),
    ("http://user:pw@example.org/v1", "carries credentials"),
])
def test_bad_base_url_is_refused_with_what_to_write(url, words):
    with pytest.raises(OpenAIConfigError, match=words):
        OpenAIBackend(url)


def test_missing_key_variable_says_what_to_export(monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_KEY", raising=False)
    backend = OpenAIBackend("http://127.0.0.1:9/v1", api_key_env="SYNTH_TEST_KEY")
    with pytest.raises(BackendUnavailable, match="export SYNTH_TEST_KEY="):
        backend.load()


# --- requests on the wire --------------------------------------------------------------


def test_sends_sampling_plain_string_messages_and_bearer_key(monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    with StubServer(echo) as stub:
        backend = make(stub, api_key_env="SYNTH_TEST_KEY")
        backend.load()
        results = backend.generate([req("a", seed=(1 << 40) + 5)])
    assert results[0].ok, results[0].error
    assert results[0].text == "echo say a"
    assert (results[0].finish_reason, results[0].prompt_tokens, results[0].completion_tokens) == ("stop", 7, 5)
    assert results[0].latency_s > 0
    sent = stub.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    body = sent.json
    assert body["model"] == "stub-model"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "say a"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 16, 5)
    assert "response_format" not in body


def test_key_never_shows_in_repr_vars_or_errors_even_when_the_server_echoes_it(monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)

    def hostile(request: StubRequest) -> StubResponse:
        # a server that echoes the Authorization header in its error body
        return StubResponse(status=401, body=f"bad key {request.headers['authorization']}")

    with StubServer(hostile) as stub:
        backend = make(stub, api_key_env="SYNTH_TEST_KEY")
        backend.load()
        results = backend.generate([req("a")])
    assert "HTTP 401" in results[0].error and "<redacted>" in results[0].error
    for text in (results[0].error, repr(backend), str(backend), repr(vars(backend))):
        assert SECRET not in text
    assert "SYNTH_TEST_KEY" in repr(backend)  # the variable's name is fine to show
    assert len(stub.requests) == 1  # 401 is not retried


def test_structured_request_sends_json_schema_first():
    with StubServer(lambda r: StubResponse(json=chat_reply('{"answer": "x"}'))) as stub:
        results = make(stub).generate([req("a", schema=SCHEMA)])
    assert json.loads(results[0].text) == {"answer": "x"}
    assert stub.requests[0].json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}


# --- retries -----------------------------------------------------------------------------


def test_429_then_200_is_retried_and_retry_after_is_capped():
    attempts: dict[str, int] = {}

    def limited(request: StubRequest) -> StubResponse:
        key = user_text(request)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            # one hour: the backend must cap it (0.5 s in these tests)
            return StubResponse(status=429, json={"error": "slow down"}, headers={"Retry-After": "3600"})
        return echo(request)

    with StubServer(limited) as stub:
        backend = make(stub)
        started = time.monotonic()
        results = backend.generate([req("a"), req("b")])
        elapsed = time.monotonic() - started
    assert [r.text for r in results] == ["echo say a", "echo say b"]
    assert all(r.ok for r in results)
    assert attempts == {"say a": 2, "say b": 2} and backend.attempts == 4
    assert 0.5 <= elapsed < 5  # waited the capped Retry-After, not an hour


def test_retry_after_in_seconds_is_honoured():
    calls = []

    def once_busy(request: StubRequest) -> StubResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return StubResponse(status=503, headers={"Retry-After": "0.3"})
        return echo(request)

    with StubServer(once_busy) as stub:
        results = make(stub, concurrency=1).generate([req("a")])
    assert results[0].ok
    assert calls[1] - calls[0] >= 0.3


def test_5xx_beyond_max_retries_is_an_error_value_and_the_batch_survives():
    def broken_for_b(request: StubRequest) -> StubResponse:
        if user_text(request) == "say b":
            return StubResponse(status=500, body="CUDA out of memory")
        return echo(request)

    with StubServer(broken_for_b) as stub:
        backend = make(stub, max_retries=2)
        results = backend.generate([req("a"), req("b"), req("c")])
    assert [r.key for r in results] == ["a", "b", "c"]
    assert results[0].ok and results[2].ok
    assert not results[1].ok
    assert "HTTP 500" in results[1].error and "CUDA out of memory" in results[1].error
    assert "3 attempts" in results[1].error
    assert sum(user_text(r) == "say b" for r in stub.requests) == 3  # 1 + max_retries


def test_other_4xx_is_not_retried():
    with StubServer(lambda r: StubResponse(status=404, json={"error": "no such model"})) as stub:
        results = make(stub).generate([req("a")])
    assert "HTTP 404" in results[0].error and "no such model" in results[0].error
    assert len(stub.requests) == 1


def test_timeout_is_retried_then_an_error_value():
    def slow_for_a(request: StubRequest) -> StubResponse:
        return StubResponse(json=chat_reply("late"), delay_s=3 if user_text(request) == "say a" else 0)

    with StubServer(slow_for_a) as stub:
        started = time.monotonic()
        results = make(stub, timeout_s=0.3, max_retries=1).generate([req("a"), req("b")])
        elapsed = time.monotonic() - started
    assert "timed out" in results[0].error and "2 attempts" in results[0].error
    assert results[1].ok
    assert sum(user_text(r) == "say a" for r in stub.requests) == 2
    assert elapsed < 2.5


def test_a_server_that_drips_its_body_is_cut_off_by_the_attempt_deadline():
    # each byte arrives well inside httpx's read timeout; only the whole-attempt deadline stops it
    with StubServer(lambda r: StubResponse(json=chat_reply("x" * 200), drip_s=0.05)) as stub:
        started = time.monotonic()
        results = make(stub, timeout_s=0.5, max_retries=0).generate([req("a")])
    assert "timed out" in results[0].error
    assert time.monotonic() - started < 3


def test_a_server_that_is_gone_is_retried_then_named():
    """Connection refused for every request of a batch: the server is gone (not a batch of
    rejects that would spend the budget); the error names it and what to do."""
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(url, max_retries=2, backoff_base_s=0.01, backoff_cap_s=0.02)
    with pytest.raises(BackendUnavailable, match=rf"server at {url} does not answer \(connection failed.*3 attempts"):
        backend.generate([req("a"), req("b")])
    assert backend.attempts == 6


# --- structured-output fallback --------------------------------------------------------


def refuses(*kinds: str, status: int = 422):
    def handler(request: StubRequest) -> StubResponse:
        fmt = request.json.get("response_format")
        if fmt and fmt["type"] in kinds:
            return StubResponse(status=status, json={"detail": f"response_format.type: '{fmt['type']}' not allowed"})
        return StubResponse(json=chat_reply('{"answer": "ok"}'))
    return handler


def test_json_schema_refused_falls_back_to_json_object_and_remembers():
    with StubServer(refuses("json_schema")) as stub:
        backend = make(stub, concurrency=1)
        first = backend.generate([req("a", SCHEMA), req("b", SCHEMA)])
        sent_first = len(stub.requests)
        second = backend.generate([req("c", SCHEMA)])
    assert all(r.ok for r in first + second)
    assert backend.format_mode == "json_object"
    kinds = [r.json["response_format"]["type"] for r in stub.requests]
    assert kinds == ["json_schema", "json_object", "json_object", "json_object"]
    assert sent_first == 3
    assert stub.requests[-1].json["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_an_ending_llama_cpp_s_grammar_wrote_at_its_bound_is_marked():
    """In json_object mode (llama.cpp's server dialect) the schema's patterns go into its
    grammar bounded by max_tokens: an answer that ran to the bound is marked LENGTH_BOUND."""
    from synth.backends.base import LENGTH_BOUND

    schema = {"type": "object", "required": ["answer"],
              "properties": {"answer": {"type": "string", "pattern": r"^[\s\S]*(####[ ]*[0-9]+)$"}}}

    def handler(request: StubRequest) -> StubResponse:
        if request.json.get("response_format", {}).get("type") == "json_schema":
            return StubResponse(status=422, json={"detail": "response_format.type: 'json_schema' not allowed"})
        free = "x" * (40 if user_text(request).endswith("bound") else 39)  # max_tokens 16: a 40-character bound
        return StubResponse(json=chat_reply(json.dumps({"answer": free + "####7"})))

    with StubServer(handler) as stub:
        results = make(stub, concurrency=1).generate([req("bound", schema), req("short", schema)])
    assert [r.finish_reason for r in results] == [LENGTH_BOUND, "stop"]


def test_llama_cpp_style_500_refusal_falls_back_without_retrying():
    # llama-cpp-python's server answers an unknown response_format type with 500, not 4xx
    with StubServer(refuses("json_schema", status=500)) as stub:
        backend = make(stub, concurrency=1, max_retries=3)
        results = backend.generate([req("a", SCHEMA), req("b", SCHEMA)])
    assert all(r.ok for r in results)
    assert backend.format_mode == "json_object"
    assert [r.json["response_format"]["type"] for r in stub.requests] == ["json_schema", "json_object", "json_object"]


def test_both_formats_refused_falls_back_to_no_response_format():
    with StubServer(refuses("json_schema", "json_object")) as stub:
        backend = make(stub, concurrency=1)
        results = backend.generate([req("a", SCHEMA), req("b", SCHEMA)])
    assert all(r.ok for r in results)
    assert backend.format_mode == "none"
    assert [r.json.get("response_format", {}).get("type") for r in stub.requests] == [
        "json_schema", "json_object", None, None]


def test_a_400_without_format_words_after_the_mode_works_is_not_a_fallback():
    def picky(request: StubRequest) -> StubResponse:
        if user_text(request) == "say bad":
            return StubResponse(status=400, json={"error": "prompt too long"})
        return StubResponse(json=chat_reply('{"answer": "ok"}'))

    with StubServer(picky) as stub:
        backend = make(stub, concurrency=1)
        results = backend.generate([req("a", SCHEMA), req("bad", SCHEMA)])
    assert results[0].ok and "prompt too long" in results[1].error
    assert backend.format_mode == "json_schema"
    assert len(stub.requests) == 2


# --- hostile or broken bodies ------------------------------------------------------------


@pytest.mark.parametrize("response, words", [
    (StubResponse(body="<html>gateway</html>"), "not JSON"),
    (StubResponse(body=""), "not JSON"),
    (StubResponse(json={"object": "chat.completion"}), "no choices"),
    (StubResponse(json={"choices": []}), "no choices"),
    (StubResponse(json={"choices": [{"message": {"content": ["a", "b"]}}]}), "not a string"),
    (StubResponse(json={"choices": [{"message": {"content": None, "refusal": "no"}}]}), "refused"),
    (StubResponse(json={**chat_reply("x"), "usage": {"prompt_tokens": "many"}}), "no choices"),
])
def test_garbled_bodies_are_error_values_with_a_reason(response, words):
    with StubServer(lambda r: response) as stub:
        results = make(stub).generate([req("a")])
    assert not results[0].ok and words in results[0].error
    assert len(stub.requests) == 1


@pytest.mark.parametrize("declared", [True, False])
def test_oversized_bodies_are_refused(declared):
    big = json.dumps(chat_reply("x" * 50_000))
    with StubServer(lambda r: StubResponse(body=big, content_length=declared)) as stub:
        results = make(stub, max_response_bytes=10_000).generate([req("a"), req("b")])
    assert all("byte limit" in r.error for r in results)


# --- batches and event loops ------------------------------------------------------------


def test_order_is_kept_under_concurrency_with_random_delays():
    rng = random.Random(7)
    delays = {f"say k{i}": rng.uniform(0, 0.15) for i in range(24)}

    def jittery(request: StubRequest) -> StubResponse:
        return StubResponse(json=chat_reply(f"echo {user_text(request)}"), delay_s=delays[user_text(request)])

    with StubServer(jittery) as stub:
        backend = make(stub, concurrency=6)
        results = backend.generate([req(f"k{i}") for i in range(24)])
    assert [r.key for r in results] == [f"k{i}" for i in range(24)]
    assert [r.text for r in results] == [f"echo say k{i}" for i in range(24)]
    arrival = [user_text(r) for r in stub.requests]
    assert arrival != sorted(arrival, key=lambda t: int(t.split("k")[1])) or stub.max_in_flight > 1
    assert 1 < stub.max_in_flight <= 6  # concurrent, and bounded by the setting


def test_generate_works_inside_a_running_event_loop_and_in_threads():
    with StubServer(echo) as stub:
        backend = make(stub)

        async def from_async_code():
            return backend.generate([req("loop")])

        in_loop = asyncio.run(from_async_code())
        in_threads: list = []
        threads = [threading.Thread(target=lambda i=i: in_threads.extend(backend.generate([req(f"t{i}")])))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert in_loop[0].text == "echo say loop"
    assert sorted(r.text for r in in_threads) == ["echo say t0", "echo say t1", "echo say t2"]


def test_empty_batch_makes_no_request():
    with StubServer(echo) as stub:
        assert make(stub).generate([]) == []
    assert stub.requests == []


# --- the real thing ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server():
    from tests.servers import start_llama_server, stop_server

    url, process = start_llama_server()
    try:
        yield url
    finally:
        stop_server(process)


@pytest.mark.slow
def test_real_llama_cpp_server_gives_schema_valid_json_in_order(llama_server):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    cities = ["France", "Japan", "Italy", "Spain"]
    requests = [
        GenerationRequest(
            key=f"q{i}",
            messages=({"role": "user", "content": f"Name the capital of {country} and its population as JSON."},),
            sampling=Sampling(temperature=0.2, top_p=0.95, max_tokens=48, seed=i),
            json_schema=schema,
        )
        for i, country in enumerate(cities)
    ]
    backend = OpenAIBackend(llama_server, model="embedded", concurrency=4, timeout_s=120, max_retries=1)
    backend.load()
    # warm up (page the model in) so the figure printed below is the steady rate
    warm = backend.generate([GenerationRequest(key="warm", messages=({"role": "user", "content": "Hi"},),
                                               sampling=Sampling(max_tokens=2, seed=0))])
    assert warm[0].ok, warm[0].error
    started = time.perf_counter()
    results = backend.generate(requests)
    elapsed = time.perf_counter() - started
    backend.close()
    assert [r.key for r in results] == [r.key for r in requests]
    for r in results:
        assert r.ok, r.error
        assert r.prompt_tokens > 0 and r.completion_tokens > 0
        assert r.finish_reason in {"stop", "length"}
        if r.finish_reason == "stop":  # a cut-off answer cannot be whole JSON
            value = json.loads(r.text)
            assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert any(r.finish_reason == "stop" for r in results)
    # llama-cpp-python's server refuses json_schema: the backend must have fallen back
    assert backend.format_mode == "json_object"
    tokens = sum(r.completion_tokens for r in results)
    print(f"\nllama_cpp.server: {tokens} completion tokens in {elapsed:.2f} s = {tokens / elapsed:.1f} tokens/s")
